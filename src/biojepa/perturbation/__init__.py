"""Perturbations: one value with its parser, the model's frozen setup, covariate groups and calibration."""

from ._calibrate import interaction_scale
from ._features import PerturbationFeatures
from ._groups import CovariateGroup, covariate_groups, select_groups
from ._labels import PERTURBATION_COLUMN, canonical_label, condition_frame, group_codes, pseudobulk
from ._setup import PerturbationSetup, check_perturbation_setup, validation_labels, validation_pairs, validation_singles
from ._value import CONTROL_ALIASES, Perturbation, parse_dose, parse_perturbation

__all__ = [
    "CONTROL_ALIASES",
    "CovariateGroup",
    "PERTURBATION_COLUMN",
    "Perturbation",
    "PerturbationFeatures",
    "PerturbationSetup",
    "canonical_label",
    "check_perturbation_setup",
    "condition_frame",
    "covariate_groups",
    "group_codes",
    "interaction_scale",
    "parse_dose",
    "parse_perturbation",
    "pseudobulk",
    "select_groups",
    "validation_labels",
    "validation_pairs",
    "validation_singles",
]
