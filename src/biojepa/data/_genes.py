"""Per-gene statistics and gene-module construction, computed once when a model is built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.cluster.hierarchy import leaves_list, linkage
from sklearn.cluster import KMeans
from sklearn.utils.extmath import randomized_svd

from .._constants import INPUT_SCALES


def normalize_expression(X, input_scale: str, size_factor: np.ndarray | None = None, target_sum: float = 1e4):
    """Numpy twin of the module's normalization: counts → ``log1p(x / library * target_sum)``; log unchanged."""
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float32)
    if input_scale == INPUT_SCALES.COUNTS:
        lib = X.sum(1, keepdims=True) if size_factor is None else np.asarray(size_factor, dtype=float).reshape(-1, 1)
        X = np.log1p(X / np.maximum(lib, 1e-8) * target_sum)
    return X


def sample_rows(n_obs: int, max_cells: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_cells`` rows drawn without replacement."""
    if n_obs <= max_cells:
        return np.arange(n_obs)
    return np.sort(np.random.default_rng(seed).choice(n_obs, max_cells, replace=False))


def gene_statistics(X_log: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored at 1e-2) per gene of normalized expression."""
    mean = X_log.mean(0, dtype=np.float64)
    std = np.maximum(X_log.std(0, dtype=np.float64), 1e-2)
    return mean.astype(np.float32), std.astype(np.float32)


def gene_loadings(X_std: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """Co-expression embedding of every gene: its loadings on the top principal components.

    Columns are the right singular vectors of standardized expression weighted by their singular values
    (relative to the root mean square), scaled so that a module's token starts as a denoised PCA score of
    its genes. When the data have fewer components than ``n_components`` the remaining columns are small
    random values.

    Returns
    -------
    Loadings of shape ``(G, n_components)``.
    """
    n_genes = X_std.shape[1]
    k = max(1, min(n_components, min(X_std.shape) - 1))
    _, s, vt = randomized_svd(X_std, n_components=k, random_state=seed)
    loadings = vt.T * (s / np.sqrt(np.mean(s**2))) * np.sqrt(n_genes / n_components)  # (G, k)
    if k < n_components:
        rng = np.random.default_rng(seed)
        loadings = np.hstack([loadings, 0.01 * rng.standard_normal((n_genes, n_components - k))])
    return loadings.astype(np.float32)


def coexpression_modules(loadings: np.ndarray, n_modules: int, seed: int) -> np.ndarray:
    """Group genes into ``n_modules`` equal-size modules of co-expressed genes.

    Genes are clustered by k-means on their (unit-normalized) co-expression loadings, see
    :func:`gene_loadings`; clusters are ordered by hierarchical clustering of their centroids and genes
    within a cluster by distance to its centroid; the resulting co-expression order is cut into
    ``n_modules`` contiguous pieces whose sizes differ by at most one (so tokens stay balanced).

    Returns
    -------
    Module label per gene, shape ``(G,)``.
    """
    n_genes = loadings.shape[0]
    unit = loadings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-12
    n_clusters = min(n_modules, n_genes)
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(unit)
    centroids = km.cluster_centers_
    cluster_order = leaves_list(linkage(centroids, "average")) if n_clusters > 1 else np.zeros(1, int)
    dist = np.linalg.norm(unit - centroids[km.labels_], axis=1)
    rank = np.empty(n_clusters, dtype=int)
    rank[cluster_order] = np.arange(n_clusters)
    gene_order = np.lexsort((dist, rank[km.labels_]))
    labels = np.empty(n_genes, dtype=np.int64)
    for module, chunk in enumerate(np.array_split(gene_order, n_modules)):
        labels[chunk] = module
    return labels


def module_index_from_labels(labels: Sequence, n_genes: int) -> np.ndarray:
    """Turn one module label per gene into a ``(T, S)`` index matrix padded with ``n_genes``."""
    labels = pd.Series(np.asarray(labels))
    if len(labels) != n_genes:
        raise ValueError(f"`gene_modules` has {len(labels)} entries but the data have {n_genes} genes.")
    if labels.isna().any():
        raise ValueError("`gene_modules` contains missing labels; give every gene a module.")
    groups = [np.asarray(idx) for _, idx in labels.groupby(labels, sort=True).indices.items()]
    size = max(len(g) for g in groups)
    index = np.full((len(groups), size), n_genes, dtype=np.int64)
    for t, genes in enumerate(groups):
        index[t, : len(genes)] = genes
    return index


class GenePriors(NamedTuple):
    """What the model learns from the data before training (see :func:`gene_priors`)."""

    gene_mean: np.ndarray
    gene_std: np.ndarray
    loadings: np.ndarray
    module_index: np.ndarray


def gene_priors(
    X,
    input_scale: str,
    n_embed: int,
    n_modules: int,
    gene_modules: Sequence | None = None,
    size_factor: np.ndarray | None = None,
    seed: int = 0,
) -> GenePriors:
    """Per-gene statistics, co-expression loadings and gene modules from a sample of cells ``X``.

    Parameters
    ----------
    X
        Cells × genes expression (dense or sparse), on ``input_scale``.
    input_scale
        ``"counts"`` or ``"log"``.
    n_embed
        Width of the loadings (the token width).
    n_modules
        Number of co-expression modules, used when ``gene_modules`` is ``None``.
    gene_modules
        Optional module label per gene.
    size_factor
        Library sizes of the cells of ``X`` (counts only).
    seed
        Seed of the SVD and k-means.
    """
    X_log = normalize_expression(X, input_scale, size_factor)
    gene_mean, gene_std = gene_statistics(X_log)
    X_std = np.clip((X_log - gene_mean) / gene_std, -10, 10)
    loadings = gene_loadings(X_std, n_embed, seed=seed)
    if gene_modules is None:
        gene_modules = coexpression_modules(loadings, n_modules, seed=seed)
    module_index = module_index_from_labels(gene_modules, X_log.shape[1])
    return GenePriors(gene_mean, gene_std, loadings, module_index)
