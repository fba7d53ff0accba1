"""Trajectory plot: observed and predicted expression (or latent) over time, per sample or population."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from scipy import sparse


def _values(adata: AnnData, feature: str | None, layer: str | None, basis: str, pcs: np.ndarray | None) -> np.ndarray:
    if feature is None:
        Z = np.asarray(adata.obsm[basis], dtype=np.float64)
        return (Z - pcs[0]) @ pcs[1]
    if feature not in adata.var_names:
        raise KeyError(f"Gene {feature!r} not in var_names.")
    X = adata[:, feature].X if layer is None else adata[:, feature].layers[layer]
    return np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64).ravel()


def trajectory(
    adata: AnnData,
    pred: AnnData | None = None,
    *,
    time_key: str,
    sample_key: str | None = None,
    gene: str | None = None,
    layer: str | None = None,
    basis: str = "X_biojepa",
    samples: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Observed and predicted trajectories of one gene (or the latent's first principal component) over time.

    With ``sample_key``, one line per sample (observed: solid with dots; predicted: dashed with open circles, same
    color). Without it, the population: mean ± sd per time point (observed cells, and predicted chains).

    Parameters
    ----------
    adata
        Observed data with ``obs[time_key]`` (and ``obs[sample_key]``).
    pred
        Output of :meth:`biojepa.BioJEPA.predict_trajectory` (``None``: observed only).
    time_key, sample_key
        Columns of ``adata.obs`` (and of ``pred.obs``) with the time and the sample.
    gene
        Gene to plot; ``None`` plots PC1 of ``adata.obsm[basis]`` (predictions projected on the same axis).
    layer
        Layer of ``adata`` with the expression (``None``: ``X``); predictions are read from ``pred.X``.
    basis
        Latent in ``adata.obsm`` used when ``gene`` is ``None``.
    samples
        Samples to draw (default: every sample in ``pred``, else the first 8 of ``adata``).
    ax
        Axes to draw on; a new figure if ``None``.

    Returns
    -------
    The axes.

    Examples
    --------
    >>> import numpy as np, pandas as pd, anndata as ad, biojepa as bj
    >>> obs = pd.DataFrame({"subject": ["a"] * 3 + ["b"] * 3, "hours": [0.0, 12.0, 24.0] * 2})
    >>> adata = ad.AnnData(np.arange(12.0).reshape(6, 2), obs=obs)
    >>> adata.var_names = ["g0", "g1"]
    >>> ax = bj.pl.trajectory(adata, time_key="hours", sample_key="subject", gene="g1")
    >>> len(ax.lines)
    2
    """
    for frame, name in ((adata.obs, "adata.obs"), (pred.obs if pred is not None else None, "pred.obs")):
        for key in (time_key, sample_key):
            if frame is not None and key is not None and key not in frame:
                raise KeyError(f"Column {key!r} not in {name} (columns: {list(frame.columns)}).")
    pcs = None
    if gene is None:
        if basis not in adata.obsm:
            raise KeyError(f"{basis!r} not in adata.obsm; run `model.get_latent_representation(key_added=...)`.")
        Z = np.asarray(adata.obsm[basis], dtype=np.float64)
        mean = Z.mean(0)
        pcs = (mean, np.linalg.svd(Z - mean, full_matrices=False)[2][0])
    observed = _values(adata, gene, layer, basis, pcs)
    predicted = _values(pred, gene, None, "X_biojepa", pcs) if pred is not None else None
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 3.4))
    t_obs = adata.obs[time_key].to_numpy(dtype=np.float64)
    if sample_key is not None:
        names = adata.obs[sample_key].astype(str).to_numpy()
        if samples is None:
            samples = pd.unique(pred.obs[sample_key].astype(str)) if pred is not None else pd.unique(names)[:8]
        for i, s in enumerate(samples):
            rows = np.flatnonzero(names == str(s))
            order = rows[np.argsort(t_obs[rows])]
            ax.plot(t_obs[order], observed[order], "-o", ms=3, color=f"C{i % 10}", label=str(s))
            if pred is not None:
                prow = np.flatnonzero(pred.obs[sample_key].astype(str).to_numpy() == str(s))
                t_pred = pred.obs[time_key].to_numpy(dtype=np.float64)[prow]
                o = np.argsort(t_pred)
                ax.plot(t_pred[o], predicted[prow][o], "--o", ms=4, mfc="none", color=f"C{i % 10}")
        if len(samples) <= 10:
            ax.legend(fontsize=7, frameon=False, title=sample_key, title_fontsize=7)
    else:
        for values, times, style, label in (
            (observed, t_obs, "-o", "observed"),
            (predicted, None if pred is None else pred.obs[time_key].to_numpy(dtype=np.float64), "--o", "predicted"),
        ):
            if values is None:
                continue
            stats = pd.DataFrame({"t": times, "v": values}).groupby("t")["v"].agg(["mean", "std"]).fillna(0.0)
            mfc = "none" if label == "predicted" else None
            t, mean, sd = stats.index.to_numpy(float), stats["mean"].to_numpy(), stats["std"].to_numpy()
            ax.errorbar(t, mean, yerr=sd, fmt=style, ms=4, capsize=2, label=label, mfc=mfc)
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel(time_key)
    ax.set_ylabel(gene if gene is not None else f"{basis} PC1")
    ax.set_title("trajectory" + ("" if pred is None else ": observed (solid) and predicted (dashed)"), fontsize=9)
    return ax
