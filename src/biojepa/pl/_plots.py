"""Plots for scanpy users: training history, latent UMAP, predicted vs observed changes, metric bars, maps."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._constants import LOSS_KEYS
from ..data import get_matrix

_HISTORY_KEYS = (LOSS_KEYS.JEPA, LOSS_KEYS.VARIANCE, LOSS_KEYS.COVARIANCE, LOSS_KEYS.EFFECTIVE_RANK)


def history(model, keys: Sequence[str] = _HISTORY_KEYS, figsize: tuple[float, float] | None = None) -> Figure:
    """Plot per-epoch training curves from ``model.history``, one panel per key (train and validation).

    Parameters
    ----------
    model
        A trained :class:`~biojepa.BioJEPA`.
    keys
        Loss names without the ``_train`` / ``_validation`` suffix.
    figsize
        Figure size; default scales with the number of panels.

    Returns
    -------
    The figure.

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata)
    >>> model = bj.BioJEPA(adata, n_latent=8)
    >>> model.train(max_epochs=2, enable_progress_bar=False)
    >>> fig = bj.pl.history(model)
    >>> len(fig.axes)
    4
    """
    found = [k for k in keys if f"{k}_train" in model.history]
    if not found:
        raise KeyError(
            f"None of {list(keys)} is in model.history (keys: {list(model.history)}); train the model first."
        )
    fig, axes = plt.subplots(1, len(found), figsize=figsize or (3.2 * len(found), 2.8), squeeze=False)
    for ax, key in zip(axes[0], found, strict=True):
        for mode in ("train", "validation"):
            name = f"{key}_{mode}"
            if name in model.history:
                series = model.history[name].iloc[:, 0].astype(float)
                ax.plot(series.index, series.to_numpy(), label=mode, marker="." if len(series) < 30 else None)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    return fig


def umap(adata: AnnData, color: str | Sequence[str], use_rep: str = "X_biojepa", **kwargs) -> Figure:
    """UMAP of a latent (default ``obsm["X_biojepa"]``), coloured by ``color``, via scanpy.

    Neighbors and UMAP are computed on a copy, so ``adata`` gets no new keys.

    Parameters
    ----------
    adata
        AnnData with the latent in ``obsm[use_rep]``.
    color
        ``obs`` column(s) or gene(s) to colour by.
    use_rep
        Key of the latent in ``obsm``.
    **kwargs
        Passed to :func:`scanpy.pl.umap`.

    Returns
    -------
    The figure.

    Examples
    --------
    >>> import numpy as np, anndata as ad, biojepa as bj
    >>> adata = ad.AnnData(np.zeros((60, 3)), obs={"group": np.repeat(["a", "b"], 30)})
    >>> adata.obsm["X_biojepa"] = np.random.default_rng(0).normal(size=(60, 4))
    >>> fig = bj.pl.umap(adata, color="group")
    >>> "X_umap" in adata.obsm
    False
    """
    import scanpy as sc

    if use_rep not in adata.obsm:
        raise KeyError(
            f"{use_rep!r} not in adata.obsm (keys: {list(adata.obsm)}); run "
            f"`model.get_latent_representation(key_added={use_rep!r})` first."
        )
    view = AnnData(obs=adata.obs.copy(), obsm={use_rep: np.asarray(adata.obsm[use_rep])})
    sc.pp.neighbors(view, use_rep=use_rep)
    sc.tl.umap(view)
    return sc.pl.umap(view, color=color, show=False, return_fig=True, **kwargs)


def delta_scatter(
    pred: AnnData,
    adata: AnnData,
    perturbation: str,
    perturbation_key: str,
    control_value: str,
    layer: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Scatter predicted vs observed change against control, one point per gene, for one perturbation.

    Parameters
    ----------
    pred
        Output of ``predict_perturbation`` (model or baseline): ``X`` predicted means, ``layers["delta"]``.
    adata
        Observed cells, controls included.
    perturbation
        Label of the perturbation (a row of ``pred.obs[perturbation_key]``).
    perturbation_key, control_value
        As in ``setup_anndata``.
    layer
        Layer of ``adata`` with the expression; ``None`` uses ``X``.
    ax
        Axes to draw on; a new figure if ``None``.

    Returns
    -------
    The axes.

    Examples
    --------
    >>> import numpy as np, anndata as ad, biojepa as bj
    >>> obs = {"condition": ["control"] * 10 + ["A"] * 10}
    >>> X = np.r_[np.ones((10, 5)), np.ones((10, 5)) + np.arange(5)]
    >>> adata = ad.AnnData(X, obs=obs)
    >>> pred = bj.baselines.TrainMean().fit(adata, "condition", "control").predict_perturbation(["A"])
    >>> ax = bj.pl.delta_scatter(pred, adata, "A", "condition", "control")
    >>> ax.get_xlabel()
    'observed Δ vs control'
    """
    rows = np.flatnonzero(pred.obs[perturbation_key].astype(str).to_numpy() == perturbation)
    if len(rows) == 0:
        raise KeyError(f"{perturbation!r} is not a row of pred.obs[{perturbation_key!r}].")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    for value in (perturbation, control_value):
        if not (labels == value).any():
            raise KeyError(f"{value!r} not found in adata.obs[{perturbation_key!r}].")
    X = get_matrix(adata, layer)
    genes = adata.var_names.get_indexer(pred.var_names)
    observed = (
        np.asarray(X[labels == perturbation].mean(0)).ravel() - np.asarray(X[labels == control_value].mean(0)).ravel()
    )
    observed = observed[genes]
    predicted = np.asarray(pred.layers["delta"][rows[0]]).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.4))
    lim = float(np.nanmax(np.abs(np.r_[observed, predicted]))) or 1.0
    ax.axline((0, 0), slope=1, color="0.7", lw=0.8, zorder=0)
    ax.scatter(observed, predicted, s=6, alpha=0.7)
    ax.set_xlim(-1.05 * lim, 1.05 * lim)
    ax.set_ylim(-1.05 * lim, 1.05 * lim)
    ax.set_xlabel("observed Δ vs control")
    ax.set_ylabel("predicted Δ vs control")
    r = np.corrcoef(observed, predicted)[0, 1] if np.std(predicted) > 0 and np.std(observed) > 0 else np.nan
    ax.set_title(f"{perturbation} (Pearson Δ = {r:.2f})")
    return ax


def metric_bars(results: pd.DataFrame, metric: str, method_key: str = "method", ax: Axes | None = None) -> Axes:
    """Bar chart of one metric per method (mean ± sd over the rows of each method, e.g. perturbations × seeds).

    Parameters
    ----------
    results
        Long table with a ``method_key`` column and a ``metric`` column, e.g. concatenated outputs of
        :func:`biojepa.metrics.evaluate` with the method name added.
    metric
        Column to plot.
    method_key
        Column naming the method.
    ax
        Axes to draw on; a new figure if ``None``.

    Returns
    -------
    The axes.

    Examples
    --------
    >>> import pandas as pd, biojepa as bj
    >>> df = pd.DataFrame({"method": ["BioJEPA", "BioJEPA", "Additive"], "pearson_delta": [0.8, 0.9, 0.7]})
    >>> ax = bj.pl.metric_bars(df, "pearson_delta")
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['BioJEPA', 'Additive']
    """
    for col in (method_key, metric):
        if col not in results:
            raise KeyError(f"Column {col!r} not in results (columns: {list(results.columns)}).")
    stats = results.groupby(method_key, sort=False)[metric].agg(["mean", "std"])
    if ax is None:
        _, ax = plt.subplots(figsize=(0.9 * len(stats) + 1.5, 3.0))
    ax.bar(stats.index.astype(str), stats["mean"], yerr=stats["std"].fillna(0), capsize=3, color="C0")
    ax.set_ylabel(metric.replace("_", " "))
    ax.tick_params(axis="x", rotation=30)
    return ax


def perturbation_embedding(
    emb: AnnData,
    color: str | None = None,
    label: str | None = None,
    n_labels: int = 30,
    ax: Axes | None = None,
) -> Axes:
    """Map of perturbation embeddings (latent shifts): the first two principal components, one point each.

    Parameters
    ----------
    emb
        Output of :meth:`biojepa.BioJEPA.get_perturbation_embedding` (``X``: shifts; ``obs``: perturbation and
        covariates).
    color
        Column of ``emb.obs`` to color points by (e.g. the cell line); ``None``: one color.
    label
        Column of ``emb.obs`` with point labels (default: the first column, the perturbation).
    n_labels
        Label at most this many points, those farthest from the origin (no change).
    ax
        Axes to draw on; a new figure if ``None``.

    Returns
    -------
    The axes.

    Examples
    --------
    >>> import numpy as np, pandas as pd, anndata as ad, biojepa as bj
    >>> emb = ad.AnnData(np.random.default_rng(0).normal(size=(6, 4)),
    ...                  obs=pd.DataFrame({"condition": list("ABCDEF"), "line": ["x", "y"] * 3}, index=list("012345")))
    >>> ax = bj.pl.perturbation_embedding(emb, color="line")
    >>> ax.get_xlabel()[:3]
    'PC1'
    """
    if emb.n_obs < 2:
        raise ValueError("Need at least two perturbations to draw a map.")
    for col in (color, label):
        if col is not None and col not in emb.obs:
            raise KeyError(f"Column {col!r} not in emb.obs (columns: {list(emb.obs.columns)}).")
    label = label or emb.obs.columns[0]
    X = np.asarray(emb.X, dtype=np.float64)
    centered = X - X.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    k = min(2, vt.shape[0])
    pcs = centered @ vt[:k].T
    if k == 1:
        pcs = np.c_[pcs, np.zeros(len(pcs))]
    explained = s[:k] ** 2 / max((s**2).sum(), 1e-12)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.8))
    groups = emb.obs[color].astype(str) if color is not None else pd.Series("all", index=emb.obs_names)
    for i, value in enumerate(pd.unique(groups)):
        rows = (groups == value).to_numpy()
        ax.scatter(pcs[rows, 0], pcs[rows, 1], s=14, color=f"C{i}", label=value if color is not None else None)
    far = np.argsort(-np.linalg.norm(X, axis=1))[:n_labels]
    for i in far:
        ax.annotate(str(emb.obs[label].iloc[i]), pcs[i], fontsize=6, alpha=0.8)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f} %)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f} %)" if k > 1 else "PC2")
    if color is not None:
        ax.legend(fontsize=7, frameon=False)
    ax.set_title("perturbation embeddings")
    return ax
