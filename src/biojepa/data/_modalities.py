"""Modalities of a MuData (RNA, protein, ATAC): validation, missing cells, normalization and feature priors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import sparse

from .._constants import INPUT_SCALES
from ._genes import GenePriors, gene_priors, normalize_expression
from ._validate import check_expression, get_matrix

#: ``setup_mudata`` layer argument → (modality kind, registry key of its data).
MODALITY_LAYERS = {"rna_layer": ("rna", "X"), "protein_layer": ("protein", "protein"), "atac_layer": ("atac", "atac")}
_COVARIATE_ARGS = ("batch_key", "categorical_covariate_keys", "continuous_covariate_keys", "size_factor_key")


class Modality(NamedTuple):
    """One registered modality: its kind (``"rna"``, ``"protein"``, ``"atac"``), input scale and feature count.

    Examples
    --------
    >>> from biojepa.data import Modality
    >>> Modality("protein", "counts", 49).n_features
    49
    """

    kind: str
    input_scale: str
    n_features: int


def check_modalities(mdata, modalities: Mapping | None) -> dict[str, str]:
    """Validate ``modalities`` against ``mdata``; return ``{layer argument: modality name}`` of the data modalities.

    Raises a ``ValueError`` for a missing or malformed mapping, an unknown key, a modality with no features or
    observations not aligned with ``mdata.obs``, and a ``KeyError`` for a modality not in ``mdata.mod``.

    Examples
    --------
    >>> import numpy as np, anndata as ad, mudata as md
    >>> from biojepa.data import check_modalities
    >>> mdata = md.MuData({"rna": ad.AnnData(np.ones((3, 4))), "adt": ad.AnnData(np.ones((3, 2)))})
    >>> check_modalities(mdata, {"rna_layer": "rna", "protein_layer": "adt"})
    {'rna_layer': 'rna', 'protein_layer': 'adt'}
    """
    if not isinstance(modalities, Mapping) or "rna_layer" not in modalities:
        raise ValueError(
            "`modalities` must map layer arguments to modality names of `mdata.mod` and name the RNA modality, "
            f"e.g. {{'rna_layer': 'rna', 'protein_layer': 'adt'}}; got {modalities!r}."
        )
    unknown = set(modalities) - set(MODALITY_LAYERS) - set(_COVARIATE_ARGS)
    if unknown:
        raise ValueError(
            f"Unknown `modalities` keys {sorted(unknown)}; use {sorted(MODALITY_LAYERS) + list(_COVARIATE_ARGS)}."
        )
    out = {}
    for arg in MODALITY_LAYERS:
        mod = modalities.get(arg)
        if mod is None:
            continue
        if mod not in mdata.mod:
            raise KeyError(f"`modalities[{arg!r}]`: modality {mod!r} not in mdata.mod (available: {list(mdata.mod)}).")
        a = mdata.mod[mod]
        if a.n_vars == 0:
            raise ValueError(f"Modality {mod!r} has no features; drop it from `modalities`.")
        if a.n_obs != mdata.n_obs or not np.array_equal(np.asarray(a.obs_names), np.asarray(mdata.obs_names)):
            raise ValueError(
                f"Modality {mod!r} has {a.n_obs} observations not aligned with mdata.obs ({mdata.n_obs}): BioJEPA "
                "needs every modality row-aligned with mdata.obs. Give cells without this modality a row of NaN "
                "(they are masked, not filled), or subset every modality to the same cells in the same order."
            )
    for arg, mod in modalities.items():
        if arg in MODALITY_LAYERS:
            out[arg] = mod
    return out


def present_rows(X) -> np.ndarray:
    """Boolean per row: ``False`` where the row is all NaN (the modality was not measured in that cell).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import present_rows
    >>> present_rows(np.array([[1.0, 0.0], [np.nan, np.nan]])).tolist()
    [True, False]
    """
    if sparse.issparse(X):
        X = X.tocsr()
        nan_rows = np.zeros(X.shape[0], dtype=np.int64)
        np.add.at(nan_rows, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), np.isnan(X.data))
        return nan_rows < X.shape[1]
    return ~np.isnan(np.asarray(X, dtype=np.float64)).all(1)


def check_modality(adata, layer: str | None, name: str, input_scale: str = INPUT_SCALES.AUTO, kind: str = "rna") -> str:
    """Check one modality's matrix, return its scale; all-NaN rows (cells without it) are allowed, partial NaN not.

    Cells with no counts are allowed except in RNA (``kind``); so are negative values, which mark normalized input
    (e.g. CLR protein), except in RNA where ``input_scale="log"`` must say so.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> from biojepa.data import check_modality
    >>> adt = ad.AnnData(np.array([[3.0, 1.0], [np.nan, np.nan]]))  # the second cell has no protein
    >>> check_modality(adt, None, "adt", kind="protein")
    'counts'
    """
    X = get_matrix(adata, layer)
    present = present_rows(X)
    if not present.any():
        raise ValueError(f"Modality {name!r} is NaN in every cell; nothing to learn from it.")
    view = adata[present]
    values = get_matrix(view, layer)
    if np.isnan(values.data if sparse.issparse(values) else np.asarray(values)).any():
        raise ValueError(
            f"Modality {name!r} has NaN in cells where it was measured; only whole rows of NaN (a cell without this "
            "modality) are allowed. Impute or drop them."
        )
    detected = check_expression(
        view, layer, allow_negative=input_scale == INPUT_SCALES.LOG or kind != "rna", allow_empty_cells=kind != "rna"
    )
    if input_scale == INPUT_SCALES.COUNTS and detected != INPUT_SCALES.COUNTS:
        raise ValueError(f"`input_scale='counts'` but modality {name!r} has non-integer values.")
    return detected if input_scale == INPUT_SCALES.AUTO else input_scale


def normalize_modality(X, kind: str, input_scale: str) -> np.ndarray:
    r"""Counts → log1p(CP10k) for RNA/ATAC and centred log-ratio for protein; log-scale input is kept as is.

    CLR per cell: :math:`\log(1 + x_j) - \frac{1}{P}\sum_k \log(1 + x_k)` over the ``P`` proteins.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import normalize_modality
    >>> normalize_modality(np.array([[0.0, 3.0]]), "protein", "counts").astype(float).round(3).tolist()
    [[-0.693, 0.693]]
    """
    if kind == "protein" and input_scale == INPUT_SCALES.COUNTS:
        X = np.log1p(np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64))
        return (X - X.mean(1, keepdims=True)).astype(np.float32)
    return normalize_expression(X, input_scale)


def modality_priors(
    matrices: list, modalities: list[Modality], n_embed: int, n_modules: int | None, seed: int
) -> GenePriors:
    """Feature priors of every modality, concatenated: modules never mix modalities.

    Each modality gets its own co-expression modules (``n_modules`` for RNA, default ``min(16, max(2, G // 8))``;
    ``min(8, max(2, P // 6))`` for the others) and standardization statistics, computed on its measured cells.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import Modality, modality_priors
    >>> rng = np.random.default_rng(0)
    >>> rna, adt = rng.poisson(2.0, (50, 16)).astype(float), rng.poisson(9.0, (50, 6)).astype(float)
    >>> mods = [Modality("rna", "counts", 16), Modality("protein", "counts", 6)]
    >>> priors = modality_priors([rna, adt], mods, n_embed=4, n_modules=2, seed=0)
    >>> priors.gene_mean.shape, priors.module_index.shape[0]  # 2 RNA modules + 2 protein modules
    ((22,), 4)
    """
    means, stds, loadings, indices, offset = [], [], [], [], 0
    for X, mod in zip(matrices, modalities, strict=True):
        X = X[present_rows(X)]
        if mod.kind == "rna":
            n_mod = n_modules if n_modules is not None else min(16, max(2, mod.n_features // 8))
        else:
            n_mod = min(8, max(2, mod.n_features // 6))
        if mod.kind == "protein" and mod.input_scale == INPUT_SCALES.COUNTS:
            X, scale = normalize_modality(X, mod.kind, mod.input_scale), INPUT_SCALES.LOG
        else:
            scale = mod.input_scale
        p = gene_priors(X, scale, n_embed=n_embed, n_modules=min(n_mod, mod.n_features), seed=seed)
        index = np.where(p.module_index >= mod.n_features, -1, p.module_index + offset)
        means.append(p.gene_mean), stds.append(p.gene_std), loadings.append(p.loadings), indices.append(index)
        offset += mod.n_features
    width = max(i.shape[1] for i in indices)
    index = np.vstack([np.pad(i, ((0, 0), (0, width - i.shape[1])), constant_values=-1) for i in indices])
    index[index < 0] = offset  # the tokenizer's padding slot
    return GenePriors(np.concatenate(means), np.concatenate(stds), np.vstack(loadings), index)
