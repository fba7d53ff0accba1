"""Input checks that name the offending key or value and say what to do."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._constants import INPUT_SCALES

logger = logging.getLogger(__name__)

_CHUNK = 10_000


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``; raise a ``KeyError`` listing the layers if absent.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from biojepa.data import get_matrix
    >>> adata = ad.AnnData(np.array([[1.0, 0.0], [2.0, 3.0]]), layers={"counts": np.array([[1, 0], [2, 3]])})
    >>> get_matrix(adata, None) is adata.X, get_matrix(adata, "counts").tolist()
    (True, [[1, 0], [2, 3]])
    >>> get_matrix(adata, "raw")
    Traceback (most recent call last):
    ...
    KeyError: "Layer 'raw' not found in adata.layers; available layers: ['counts']."
    """
    if layer is None:
        if adata.X is None:
            raise ValueError("`adata.X` is empty; pass `layer=` naming the layer that holds the expression.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in adata.layers; available layers: {list(adata.layers.keys())}.")
    return adata.layers[layer]


def _row_chunks(X):
    for start in range(0, X.shape[0], _CHUNK):
        chunk = X[start : start + _CHUNK]
        if sparse.issparse(chunk):
            yield start, chunk.tocsr()
        else:
            yield start, np.asarray(chunk)


def _values(chunk) -> np.ndarray:
    return chunk.data if sparse.issparse(chunk) else chunk.ravel()


def check_expression(
    adata: AnnData,
    layer: str | None,
    allow_negative: bool = False,
    allow_empty_cells: bool = False,
    allow_missing_genes: bool = False,
) -> str:
    """Validate the expression matrix and detect its scale.

    Raises for an empty AnnData, NaN/inf, negative values (unless ``allow_negative``: log-scale data such as
    qPCR ΔCt, declared with ``input_scale="log"``) and all-zero cells. Returns ``"counts"`` when every value
    is a non-negative integer, else ``"log"`` (taken to be log-normalized expression). ``allow_empty_cells``
    accepts all-zero cells (e.g. no peak of a small ATAC panel). ``allow_missing_genes`` accepts genes that are NaN
    in every cell (genes a query lacks, added by :meth:`~biojepa.BioJEPA.prepare_query_anndata`).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from biojepa.data import check_expression
    >>> check_expression(ad.AnnData(np.array([[1.0, 0.0], [2.0, 3.0]])), None)
    'counts'
    >>> check_expression(ad.AnnData(np.array([[0.5, 0.0], [1.2, 0.3]])), None)
    'log'
    >>> check_expression(ad.AnnData(np.array([[1.0, 0.0], [0.0, 0.0]])), None)
    Traceback (most recent call last):
    ...
    ValueError: 1 cells have no expression at all in adata.X (e.g. ['1']); remove them first, ...
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); nothing to train on.")
    X = get_matrix(adata, layer)
    is_integer = True
    zero_cells: list[int] = []
    for start, chunk in _row_chunks(X):
        if allow_missing_genes and not sparse.issparse(chunk) and np.issubdtype(chunk.dtype, np.floating):
            nan = np.isnan(chunk)
            genes = nan.any(0)
            if genes.any() and not nan[:, genes].all():
                raise ValueError(
                    f"{where} has NaN in some cells of genes {list(adata.var_names[genes][:5])}; only genes missing "
                    "in every cell (as added by `BioJEPA.prepare_query_anndata`) may be NaN."
                )
            chunk = chunk[:, ~genes]
        vals = _values(chunk)
        if not np.issubdtype(vals.dtype, np.number):
            raise ValueError(f"{where} has non-numeric dtype {vals.dtype}; convert it to float.")
        if not np.isfinite(vals).all():
            raise ValueError(f"{where} contains NaN or infinite values; remove or impute them before setup.")
        if (vals < 0).any():
            if not allow_negative:
                raise ValueError(
                    f"{where} contains negative values (minimum {vals.min():.3g}): BioJEPA expects raw counts or "
                    "log-normalized expression, not scaled/centered data. Pass `layer=` naming a counts or log1p "
                    "layer, or `input_scale='log'` if the values are on a log scale that goes below zero (e.g. qPCR)."
                )
            is_integer = False
        else:
            totals = np.asarray(chunk.sum(axis=1)).ravel()
            zero_cells.extend((np.flatnonzero(totals == 0) + start).tolist())
        if is_integer and vals.size and not np.all(np.mod(vals, 1) == 0):
            is_integer = False
    if zero_cells and not allow_empty_cells:
        names = list(adata.obs_names[zero_cells[:5]])
        raise ValueError(
            f"{len(zero_cells)} cells have no expression at all in {where} (e.g. {names}); remove them first, "
            "e.g. `sc.pp.filter_cells(adata, min_genes=1)`."
        )
    return INPUT_SCALES.COUNTS if is_integer else INPUT_SCALES.LOG


def resolve_input_scale(adata: AnnData, layer: str | None, input_scale: str, allow_missing_genes: bool = False) -> str:
    """Check the expression matrix and return the input scale, detected when ``input_scale="auto"``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from biojepa.data import resolve_input_scale
    >>> adata = ad.AnnData(np.array([[1.0, 0.0], [2.0, 3.0]]))
    >>> resolve_input_scale(adata, None, "auto"), resolve_input_scale(adata, None, "log")
    ('counts', 'log')
    >>> resolve_input_scale(adata, None, "raw")
    Traceback (most recent call last):
    ...
    ValueError: `input_scale` must be one of ['auto', 'counts', 'log'], got 'raw'.
    """
    if input_scale not in INPUT_SCALES:
        raise ValueError(f"`input_scale` must be one of {list(INPUT_SCALES)}, got {input_scale!r}.")
    detected = check_expression(
        adata, layer, allow_negative=input_scale == INPUT_SCALES.LOG, allow_missing_genes=allow_missing_genes
    )
    if input_scale == INPUT_SCALES.AUTO:
        return detected
    if input_scale == INPUT_SCALES.COUNTS and detected != INPUT_SCALES.COUNTS:
        raise ValueError(
            "`input_scale='counts'` but the expression contains non-integer values; pass `input_scale='log'` "
            "for log-normalized data, or `layer=` naming the raw counts layer."
        )
    return input_scale


def check_obs_keys(adata: AnnData, keys: dict[str, str | list[str] | None]) -> None:
    """Raise a ``KeyError`` for any obs column named in ``keys`` (argument name → column(s)) that is absent.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_obs_keys
    >>> adata = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"batch": ["x", "y"]}, index=["a", "b"]))
    >>> check_obs_keys(adata, {"batch_key": "batch", "categorical_covariate_keys": ["batch"], "labels_key": None})
    >>> check_obs_keys(adata, {"batch_key": "nope"})
    Traceback (most recent call last):
    ...
    KeyError: "`batch_key`: column 'nope' not found in adata.obs; available: ['batch']."
    """
    for arg, value in keys.items():
        for key in [value] if isinstance(value, str) else value or []:
            if key not in adata.obs:
                raise KeyError(f"`{arg}`: column {key!r} not found in adata.obs; available: {list(adata.obs.columns)}.")


def check_continuous(adata: AnnData, keys: list[str] | None) -> None:
    """Raise a ``ValueError`` for a continuous covariate that is not numeric or not finite.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_continuous
    >>> obs = pd.DataFrame({"age": [30.0, 41.0], "dose": [0.1, np.nan]}, index=["a", "b"])
    >>> adata = ad.AnnData(np.ones((2, 1)), obs=obs)
    >>> check_continuous(adata, ["age"])
    >>> check_continuous(adata, ["age", "dose"])
    Traceback (most recent call last):
    ...
    ValueError: Continuous covariate 'dose' contains NaN or infinite values; fill or drop them.
    """
    for key in keys or []:
        col = adata.obs[key]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ValueError(
                f"Continuous covariate {key!r} has dtype {col.dtype}, not numeric; convert it with "
                f"`adata.obs[{key!r}] = pd.to_numeric(...)` or pass it in `categorical_covariate_keys`."
            )
        if not np.isfinite(col.to_numpy(dtype=float)).all():
            raise ValueError(f"Continuous covariate {key!r} contains NaN or infinite values; fill or drop them.")


def check_time(adata: AnnData, time_key: str) -> None:
    """Raise unless ``adata.obs[time_key]`` is numeric and finite for every observation.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_time
    >>> adata = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"day": ["d0", "d1"]}, index=["a", "b"]))
    >>> check_time(adata, "day")
    Traceback (most recent call last):
    ...
    ValueError: `time_key`: adata.obs['day'] has dtype object, not numbers; convert it, e.g. ...
    """
    col = adata.obs[time_key]
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        raise ValueError(
            f"`time_key`: adata.obs[{time_key!r}] has dtype {col.dtype}, not numbers; convert it, e.g. "
            f"`adata.obs[{time_key!r}] = pd.to_numeric(adata.obs[{time_key!r}])` or map stages to hours/days."
        )
    values = col.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"`time_key`: adata.obs[{time_key!r}] has {int(bad.sum())} missing or infinite values (e.g. "
            f"{list(adata.obs_names[bad][:5])}); give every observation a time (a static snapshot can take any "
            "time with its own `sample_key` value) or drop them."
        )


def check_categorical(adata: AnnData, keys: dict[str, str | list[str] | None]) -> None:
    """Raise a ``ValueError`` for a categorical obs column (argument name → column(s)) with missing values.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_categorical
    >>> adata = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"batch": ["x", None]}, index=["a", "b"]))
    >>> check_categorical(adata, {"batch_key": "batch"})
    Traceback (most recent call last):
    ...
    ValueError: `batch_key`: adata.obs['batch'] has 1 missing values (e.g. ['b']); fill them, e.g. ...
    """
    for arg, value in keys.items():
        for key in [value] if isinstance(value, str) else value or []:
            missing = adata.obs[key].isna().to_numpy()
            if missing.any():
                raise ValueError(
                    f"`{arg}`: adata.obs[{key!r}] has {int(missing.sum())} missing values (e.g. "
                    f"{list(adata.obs_names[missing][:5])}); fill them, e.g. `adata.obs[{key!r}] = "
                    f"adata.obs[{key!r}].astype(str).fillna('unknown')`, or drop those cells."
                )


def check_unique_names(adata: AnnData) -> None:
    """Raise a ``ValueError`` if ``adata.obs_names`` or ``adata.var_names`` has duplicates.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_unique_names
    >>> adata = ad.AnnData(np.ones((2, 2)), var=pd.DataFrame(index=["CD3E", "CD3E"]))
    >>> check_unique_names(adata)
    Traceback (most recent call last):
    ...
    ValueError: adata.var_names has 1 duplicated names (e.g. ['CD3E']); make them unique first, ...
    """
    for axis, names in (("obs", adata.obs_names), ("var", adata.var_names)):
        duplicated = names[names.duplicated()]
        if len(duplicated):
            raise ValueError(
                f"adata.{axis}_names has {len(duplicated)} duplicated names (e.g. {list(duplicated.unique()[:5])}); "
                f"make them unique first, e.g. `adata.{axis}_names_make_unique()`."
            )
