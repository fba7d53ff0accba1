"""Plotting functions (matplotlib / scanpy); each returns its figure or axes."""

from ._dose import dose_response
from ._plots import delta_scatter, history, metric_bars, perturbation_embedding, umap
from ._reliability import reliability
from ._trajectory import trajectory

__all__ = [
    "delta_scatter",
    "dose_response",
    "history",
    "metric_bars",
    "perturbation_embedding",
    "reliability",
    "trajectory",
    "umap",
]
