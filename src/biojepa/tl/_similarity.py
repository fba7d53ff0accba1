"""Similarity of perturbations by their latent shifts."""

from __future__ import annotations

import numpy as np
from anndata import AnnData


def perturbation_similarity(
    emb: AnnData, *, centered: bool = True, key_added: str = "perturbation_similarity", copy: bool = False
) -> AnnData | None:
    """Cosine similarity of perturbations' latent shifts (from :meth:`~biojepa.BioJEPA.get_perturbation_embedding`).

    Parameters
    ----------
    emb
        One row per perturbation (and covariate group), ``X`` the latent shift.
    centered
        Subtract the mean shift first, so that a response shared by every perturbation does not make them all alike.
    key_added
        The ``(n, n)`` similarity goes to ``emb.obsp[key_added]``; each row's most similar other row to
        ``emb.obs[f"{key_added}_nearest"]`` (its ``obs_names``).
    copy
        Return a copy of ``emb`` with the results instead of writing into ``emb``.

    Returns
    -------
    ``None``, or the copy with the results when ``copy=True``.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd, biojepa as bj
    >>> emb = ad.AnnData(np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.2]]), obs=pd.DataFrame(index=["A", "B", "C"]))
    >>> bj.tl.perturbation_similarity(emb, centered=False)
    >>> emb.obs["perturbation_similarity_nearest"].tolist()
    ['B', 'A', 'B']
    """
    X = np.asarray(emb.X.toarray() if hasattr(emb.X, "toarray") else emb.X, dtype=np.float64)
    if X.shape[0] < 2:
        raise ValueError(f"`emb` has {X.shape[0]} rows; similarity needs at least two perturbations.")
    if not np.isfinite(X).all():
        raise ValueError("`emb.X` has NaN or infinite shifts; recompute the embedding.")
    if centered:
        X = X - X.mean(0)
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T  # (n, n)
    others = sim.copy()
    np.fill_diagonal(others, -np.inf)
    out = emb.copy() if copy else emb
    out.obsp[key_added] = sim
    out.obs[f"{key_added}_nearest"] = np.asarray(emb.obs_names)[others.argmax(1)]
    return out if copy else None
