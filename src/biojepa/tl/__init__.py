"""Analyses of perturbation predictions: genetic-interaction calls in Norman et al. (2019)'s terms."""

from ._interactions import INTERACTION_TYPES, InteractionFit, call_interaction, fit_interaction, interaction_calls

__all__ = ["INTERACTION_TYPES", "InteractionFit", "call_interaction", "fit_interaction", "interaction_calls"]
