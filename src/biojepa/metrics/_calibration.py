"""Calibration of predictive intervals: coverage of observed means by the intervals of a prediction."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

_LOWER = re.compile(r"^lower_(\d+(?:_\d+)?)$")


def interval_coverage(
    pred: AnnData,
    adata: AnnData,
    perturbation_key: str,
    covariate_keys: Sequence[str] | None = None,
    layer: str | None = None,
) -> pd.DataFrame:
    """Fraction of genes whose observed mean falls inside each predicted interval, per prediction and level.

    ``pred`` holds predicted means with interval layers ``lower_<pct>`` / ``upper_<pct>`` (e.g. from
    :meth:`~biojepa.BioJEPA.predict_uncertainty`); each row is compared with the mean of the cells of ``adata`` with
    the same perturbation (and covariates), on the scale of ``adata.X`` or ``layer``, which must be that of
    ``pred.X``.

    Parameters
    ----------
    pred
        Predictions with interval layers; ``obs`` has ``perturbation_key`` and the ``covariate_keys``.
    adata
        Observed cells (not modified).
    perturbation_key, covariate_keys
        Columns matching predictions to observed cells.
    layer
        Layer of ``adata`` with the expression; ``None``: ``adata.X``.

    Returns
    -------
    One row per prediction with observed cells and level: the prediction's labels, ``n_cells``, ``nominal`` and
    ``coverage``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from anndata import AnnData
    >>> from biojepa.metrics import interval_coverage
    >>> obs = AnnData(np.array([[1.0, 2.0], [3.0, 2.0]]), obs=pd.DataFrame({"p": ["A", "A"]}, index=["c0", "c1"]))
    >>> pred = AnnData(np.array([[2.0, 5.0]]), obs=pd.DataFrame({"p": ["A"]}, index=["0"]))
    >>> pred.layers["lower_80"], pred.layers["upper_80"] = pred.X - 1.0, pred.X + 1.0
    >>> interval_coverage(pred, obs, "p")[["nominal", "coverage"]].values.tolist()  # gene 0 inside, gene 1 not
    [[0.8, 0.5]]
    """
    keys = [perturbation_key, *list(covariate_keys or [])]
    missing = [k for k in keys if k not in pred.obs or k not in adata.obs]
    if missing:
        raise KeyError(f"Columns {missing} are missing from pred.obs or adata.obs; pass keys both have.")
    levels = {m.group(1) for k in pred.layers if (m := _LOWER.match(k))}
    levels = sorted(levels, key=lambda s: float(s.replace("_", ".")))
    if not levels:
        raise ValueError("`pred` has no interval layers (`lower_80`, `upper_80`, ...); use `predict_uncertainty`.")
    X = adata.X if layer is None else adata.layers[layer]
    labels = adata.obs[keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
    wanted = pred.obs[keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
    rows = []
    for i, key in enumerate(wanted):
        cells = np.flatnonzero(labels == key)
        if cells.size == 0:
            continue
        observed = np.asarray(X[cells].mean(0)).ravel() if sparse.issparse(X) else np.asarray(X[cells]).mean(0)
        for pct in levels:
            lower = np.asarray(pred.layers[f"lower_{pct}"][i]).ravel()
            upper = np.asarray(pred.layers[f"upper_{pct}"][i]).ravel()
            inside = (observed >= lower) & (observed <= upper)
            nominal = float(pct.replace("_", ".")) / 100
            rows.append({**pred.obs.iloc[i][keys].to_dict(), "n_cells": cells.size, "nominal": nominal,
                         "coverage": float(inside.mean())})  # fmt: skip
    return pd.DataFrame(rows)
