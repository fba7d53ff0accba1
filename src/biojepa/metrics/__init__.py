"""Evaluation metrics."""

from ._representation import effective_rank, knn_accuracy, silhouette

__all__ = ["effective_rank", "knn_accuracy", "silhouette"]
