"""Analyses on a trained model's outputs (scanpy's ``key_added`` style) and genetic-interaction calls."""

from ._interactions import INTERACTION_TYPES, InteractionFit, call_interaction, fit_interaction, interaction_calls
from ._neighbors import nearest_cells
from ._similarity import perturbation_similarity

__all__ = [
    "INTERACTION_TYPES",
    "InteractionFit",
    "call_interaction",
    "fit_interaction",
    "interaction_calls",
    "nearest_cells",
    "perturbation_similarity",
]
