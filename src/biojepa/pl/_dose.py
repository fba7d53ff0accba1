"""Predicted dose-response curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from ..data import get_matrix


def dose_response(
    model,
    perturbations: str | Sequence[str],
    doses: Sequence[float] | None = None,
    covariates: Mapping[str, str] | None = None,
    gene: str | None = None,
    observed: AnnData | None = None,
    adata: AnnData | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Plot each perturbation's predicted response against dose (log axis), one line per perturbation.

    The response is the size of the predicted change of mean expression (L2 norm over genes, on the scale of
    the input, as in ``layers["delta"]`` of :meth:`~biojepa.BioJEPA.predict_perturbation`), or the predicted change
    of one ``gene``. With ``observed``, the same quantity
    of the observed cells at each measured dose is drawn as points.

    Parameters
    ----------
    model
        A trained :class:`~biojepa.BioJEPA` set up with ``dose_key``.
    perturbations
        Labels of single perturbations (compounds or genes).
    doses
        Doses to predict at; default: 25 log-spaced doses spanning the training doses (a decade beyond each end).
    covariates
        One covariate group, e.g. ``{"cell_line": "A549"}`` (as in :meth:`~biojepa.BioJEPA.predict_perturbation`).
    gene
        Plot this gene's predicted change instead of the size of the whole change.
    observed
        Cells with the model's perturbation and dose columns; their mean changes at each measured dose are drawn.
    adata
        Reference cells for the prediction (as in :meth:`~biojepa.BioJEPA.predict_perturbation`).
    ax
        Axes to draw into.

    Returns
    -------
    The axes; ``ax.lines`` holds one line per perturbation, labelled with it.

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> adata = scvi.data.synthetic_iid()
    >>> adata.obs["drug"] = ["control", "dA", "dA", "dB"] * 100
    >>> adata.obs["dose"] = ["0", "0.1", "10", "1"] * 100
    >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="drug", control_value="control", dose_key="dose")
    >>> model = bj.BioJEPA(adata, n_latent=8)
    >>> model.train(max_epochs=1, enable_progress_bar=False)
    >>> ax = bj.pl.dose_response(model, ["dA", "dB"], observed=adata)
    >>> [line.get_label() for line in ax.lines]
    ['dA', 'dB']
    """
    setup = model._setup()
    if setup.dose_key is None:
        raise ValueError("The model was set up without `dose_key`; dose-response curves need doses.")
    perturbations = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if doses is None:
        known = np.array([float(v) for d in setup.doses for v in str(d).split(setup.delimiter)], dtype=float)
        known = known[known > 0]
        low, high = (known.min(), known.max()) if known.size else (0.1, 10.0)
        doses = np.geomspace(low / 10, high * 10, 25)
    doses = np.asarray(doses, dtype=float)
    genes = list(model.adata.var_names)
    if gene is not None and gene not in genes:
        raise KeyError(f"Gene {gene!r} is not among the model's genes.")

    def response(delta: np.ndarray) -> np.ndarray:
        return delta[:, genes.index(gene)] if gene is not None else np.linalg.norm(delta, axis=1)

    curves = np.vstack(
        [
            response(
                model.predict_perturbation(perturbations, covariates=covariates, dose=d, adata=adata).layers["delta"]
            )
            for d in doses
        ]
    )  # (n_doses, n_perturbations)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.0, 3.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(perturbations):
        ax.plot(doses, curves[:, i], label=label, color=colors[i % len(colors)])
    if observed is not None:
        _observed_points(model, observed, perturbations, covariates, response, ax, colors)
    ax.set_xscale("log")
    ax.set_xlabel("dose")
    ax.set_ylabel(f"predicted change of {gene}" if gene else "size of predicted change (L2)")
    ax.legend(frameon=False, fontsize="small")
    return ax


def _observed_points(model, observed, perturbations, covariates, response, ax, colors) -> None:
    """Observed mean change at each measured dose, relative to the control cells of the same cells' group."""
    setup = model._setup()
    obs = observed.obs
    keep = np.ones(observed.n_obs, dtype=bool)
    for key, value in (covariates or {}).items():
        keep &= (obs[key].astype(str) == str(value)).to_numpy()
    labels = obs[setup.perturbation_key].astype(str).to_numpy()
    control = keep & (labels == setup.control_value)
    if not control.any():
        return
    matrix = get_matrix(observed, model.adata_manager.registry["setup_args"]["layer"])  # the input scale, as "delta"

    def mean(rows: np.ndarray) -> np.ndarray:
        return np.asarray(matrix[rows].mean(0), dtype=np.float64).ravel()

    base = mean(np.flatnonzero(control))
    for i, label in enumerate(perturbations):
        rows = keep & (labels == label)
        if not rows.any():
            continue
        dose = pd.to_numeric(obs.loc[rows, setup.dose_key], errors="coerce").to_numpy()
        for d in np.unique(dose[np.isfinite(dose) & (dose > 0)]):
            sel = np.flatnonzero(rows)[dose == d]
            ax.scatter([d], response((mean(sel) - base)[None]), color=colors[i % len(colors)], s=14)
