"""Plotting functions (matplotlib / scanpy); each returns its figure or axes."""

from ._plots import delta_scatter, history, metric_bars, perturbation_embedding, umap

__all__ = ["delta_scatter", "history", "metric_bars", "perturbation_embedding", "umap"]
