"""Nearest real cells of each cell in the latent, and labels carried over from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors


def _latent(adata: AnnData, use_rep: str, name: str) -> np.ndarray:
    if use_rep not in adata.obsm:
        raise KeyError(
            f"{name}.obsm lacks {use_rep!r}; store the latent first with "
            f"`model.get_latent_representation({name}, key_added={use_rep!r})`."
        )
    return np.asarray(adata.obsm[use_rep], dtype=np.float64)


def nearest_cells(
    adata: AnnData,
    reference: AnnData,
    *,
    use_rep: str = "X_biojepa",
    n_neighbors: int = 15,
    labels_key: str | None = None,
    key_added: str = "nearest_cells",
    copy: bool = False,
) -> AnnData | None:
    """Find each cell's nearest real cells of ``reference`` in the latent, and optionally carry their labels over.

    Euclidean neighbors in ``obsm[use_rep]`` (e.g. query cells mapped with
    :meth:`~biojepa.BioJEPA.load_query_data`, or predicted latents of :meth:`~biojepa.BioJEPA.predict_perturbation`,
    against the training cells).

    Parameters
    ----------
    adata
        Cells to look up, with the latent in ``obsm[use_rep]``.
    reference
        Real cells, with the latent in ``obsm[use_rep]`` (may be ``adata`` itself; a cell is then its own first
        neighbor).
    use_rep
        Key of the latent in both ``obsm``.
    n_neighbors
        Number of neighbors.
    labels_key
        Column of ``reference.obs`` to transfer by majority vote of the neighbors.
    key_added
        Results go to ``adata.obsm[f"{key_added}_indices"]`` (row positions in ``reference``),
        ``adata.obsm[f"{key_added}_distances"]``, ``adata.obs[key_added]`` (name of the nearest reference cell) and,
        with ``labels_key``, ``adata.obs[f"{key_added}_{labels_key}"]`` (the vote) and
        ``adata.obs[f"{key_added}_{labels_key}_fraction"]`` (the fraction of neighbors that agree).
    copy
        Return a copy of ``adata`` with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy with the results when ``copy=True``.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd, biojepa as bj
    >>> ref = ad.AnnData(np.zeros((4, 1)), obs=pd.DataFrame({"type": ["T", "T", "B", "B"]}, index=list("abcd")))
    >>> ref.obsm["X_biojepa"] = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> query = ad.AnnData(np.zeros((2, 1)), obs=pd.DataFrame(index=["q1", "q2"]))
    >>> query.obsm["X_biojepa"] = np.array([[0.05, 0.0], [5.0, 5.1]])
    >>> bj.tl.nearest_cells(query, ref, n_neighbors=2, labels_key="type")
    >>> query.obs["nearest_cells_type"].tolist(), query.obsm["nearest_cells_indices"].tolist()
    (['T', 'B'], [[0, 1], [2, 3]])
    """
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be a positive integer, got {n_neighbors!r}.")
    if n_neighbors > reference.n_obs:
        raise ValueError(f"`n_neighbors`={n_neighbors} exceeds the {reference.n_obs} cells of `reference`.")
    if labels_key is not None and labels_key not in reference.obs:
        raise KeyError(f"`labels_key`: column {labels_key!r} not found in reference.obs.")
    z, z_ref = _latent(adata, use_rep, "adata"), _latent(reference, use_rep, "reference")
    if z.shape[1] != z_ref.shape[1]:
        raise ValueError(f"obsm[{use_rep!r}] has {z.shape[1]} columns in adata but {z_ref.shape[1]} in reference.")
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(z_ref).kneighbors(z)
    out = adata.copy() if copy else adata
    out.obsm[f"{key_added}_indices"] = indices
    out.obsm[f"{key_added}_distances"] = distances
    out.obs[key_added] = np.asarray(reference.obs_names)[indices[:, 0]]
    if labels_key is not None:
        labels = reference.obs[labels_key].astype(str).to_numpy()[indices]  # (N, k)
        votes = pd.DataFrame(labels).apply(lambda row: row.value_counts().index[0], axis=1).to_numpy()
        out.obs[f"{key_added}_{labels_key}"] = pd.Categorical(votes)
        out.obs[f"{key_added}_{labels_key}_fraction"] = (labels == votes[:, None]).mean(1)
    return out if copy else None
