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
    """Numpy twin of the module's normalization: counts → ``log1p(x / library * target_sum)``; log unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import normalize_expression
    >>> X = np.array([[1, 3], [0, 2]])
    >>> out = normalize_expression(X, "counts", target_sum=4)  # log1p(x / library * 4)
    >>> [[round(float(v), 3) for v in row] for row in out]
    [[0.693, 1.386], [0.0, 1.609]]
    >>> normalize_expression(X, "log").tolist()  # log scale: only cast to float32
    [[1.0, 3.0], [0.0, 2.0]]
    """
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float32)
    if input_scale == INPUT_SCALES.COUNTS:
        lib = X.sum(1, keepdims=True) if size_factor is None else np.asarray(size_factor, dtype=float).reshape(-1, 1)
        X = np.log1p(X / np.maximum(lib, 1e-8) * target_sum)
    return X


def sample_rows(n_obs: int, max_cells: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_cells`` rows drawn without replacement.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import sample_rows
    >>> sample_rows(4, max_cells=10, seed=0).tolist()  # few enough rows: all of them
    [0, 1, 2, 3]
    >>> rows = sample_rows(100, max_cells=5, seed=0)
    >>> len(rows), bool(np.all(np.diff(rows) > 0))
    (5, True)
    """
    if n_obs <= max_cells:
        return np.arange(n_obs)
    return np.sort(np.random.default_rng(seed).choice(n_obs, max_cells, replace=False))


def gene_statistics(X_log: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored at 1e-2) per gene of normalized expression.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import gene_statistics
    >>> mean, std = gene_statistics(np.array([[0.0, 1.0], [2.0, 1.0]], dtype=np.float32))
    >>> mean.tolist(), [round(float(s), 3) for s in std]  # the constant gene's std is floored
    ([1.0, 1.0], [1.0, 0.01])
    """
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

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import gene_loadings
    >>> X_std = np.random.default_rng(0).standard_normal((20, 6))  # 20 cells × 6 genes
    >>> gene_loadings(X_std, n_components=4, seed=0).shape
    (6, 4)
    >>> gene_loadings(X_std, n_components=10, seed=0).shape  # 5 components at most: the rest are small noise
    (6, 10)
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

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import coexpression_modules
    >>> loadings = np.random.default_rng(0).standard_normal((7, 4))  # 7 genes
    >>> labels = coexpression_modules(loadings, n_modules=3, seed=0)
    >>> labels.shape, np.bincount(labels).tolist()  # balanced: sizes differ by at most one
    ((7,), [3, 2, 2])
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
    """Turn one module label per gene into a ``(T, S)`` index matrix padded with ``n_genes``.

    Examples
    --------
    >>> from biojepa.data import module_index_from_labels
    >>> module_index_from_labels(["b", "a", "b", "a", "a"], n_genes=5).tolist()  # module "b" padded with 5
    [[1, 3, 4], [0, 2, 5]]
    """
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

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import gene_priors
    >>> X = np.random.default_rng(0).poisson(2.0, (30, 8)) + 1  # 30 cells × 8 genes of counts
    >>> priors = gene_priors(X, "counts", n_embed=4, n_modules=2)
    >>> priors.gene_mean.shape, priors.loadings.shape, priors.module_index.shape
    ((8,), (8, 4), (2, 4))
    >>> gene_priors(X, "counts", 4, 2, gene_modules=[0, 0, 0, 0, 1, 1, 1, 1]).module_index.tolist()
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    X_log = normalize_expression(X, input_scale, size_factor)
    gene_mean, gene_std = gene_statistics(X_log)
    X_std = np.clip((X_log - gene_mean) / gene_std, -10, 10)
    loadings = gene_loadings(X_std, n_embed, seed=seed)
    if gene_modules is None:
        gene_modules = coexpression_modules(loadings, n_modules, seed=seed)
    module_index = module_index_from_labels(gene_modules, X_log.shape[1])
    return GenePriors(gene_mean, gene_std, loadings, module_index)
