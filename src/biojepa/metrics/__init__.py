"""Evaluation metrics: representation quality and perturbation-prediction quality."""

from ._calibration import interval_coverage
from ._distribution import energy_score, mmd, sinkhorn_divergence
from ._perturbation import (
    direction_error,
    discrimination_score,
    energy_distance,
    evaluate,
    l2_top_expressed,
    mse_top_de,
    pearson_delta,
    top_de_genes,
    top_expressed_genes,
)
from ._representation import effective_rank, knn_accuracy, silhouette

__all__ = [
    "direction_error",
    "discrimination_score",
    "effective_rank",
    "energy_distance",
    "energy_score",
    "evaluate",
    "interval_coverage",
    "knn_accuracy",
    "l2_top_expressed",
    "mmd",
    "mse_top_de",
    "pearson_delta",
    "silhouette",
    "sinkhorn_divergence",
    "top_de_genes",
    "top_expressed_genes",
]
