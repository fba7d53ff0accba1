"""Analyses on a trained model's outputs, in scanpy's style (results stored under ``key_added``)."""

from ._neighbors import nearest_cells
from ._similarity import perturbation_similarity

__all__ = ["nearest_cells", "perturbation_similarity"]
