"""Representation quality of an embedding: kNN label accuracy, silhouette and effective rank."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier


def knn_accuracy(embedding: np.ndarray, labels, n_neighbors: int = 15, n_folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a ``n_neighbors``-NN classifier of ``labels`` under stratified ``n_folds``-fold CV.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import knn_accuracy
    >>> x = np.r_[np.zeros((20, 2)), np.ones((20, 2))] + np.random.default_rng(0).normal(0, 0.1, (40, 2))
    >>> knn_accuracy(x, [0] * 20 + [1] * 20, n_neighbors=5)
    1.0
    """
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors), embedding, np.asarray(labels), cv=folds).mean())


def silhouette(embedding: np.ndarray, labels) -> float:
    """Mean silhouette width of ``labels`` in the Euclidean geometry of ``embedding`` (−1 to 1).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import silhouette
    >>> round(silhouette(np.array([[0.0], [0.1], [5.0], [5.1]]), ["a", "a", "b", "b"]), 2)
    0.98
    """
    return float(silhouette_score(embedding, np.asarray(labels)))


def effective_rank(embedding: np.ndarray) -> float:
    """Effective rank ``exp(H(p))``, ``p`` the normalized singular values of the centered embedding.

    1 for an embedding on a line, ``d`` for an isotropic ``d``-dimensional one :cite:p:`roy2007effective`.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import effective_rank
    >>> round(effective_rank(np.diag([1.0, 1.0, 1.0, 1.0])), 2)
    3.0
    """
    x = np.asarray(embedding, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
