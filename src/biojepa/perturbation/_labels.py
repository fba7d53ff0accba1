"""Canonical perturbation labels of cells and per-condition pseudobulks (labels parsed by :mod:`._value`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ._value import _check_delimiter, parse_perturbation

__all__ = ["PERTURBATION_COLUMN", "canonical_label", "condition_frame", "group_codes", "pseudobulk"]

#: Column of :func:`condition_frame` holding the canonical perturbation label.
PERTURBATION_COLUMN = "_perturbation"


def canonical_label(genes: str | Iterable[str], delimiter: str = "+", control_value: str = "control") -> str:
    """Canonical label of a set of perturbed genes: sorted and joined by ``delimiter``.

    Parameters
    ----------
    genes
        Perturbed genes (a single string is one gene). Duplicates are dropped.
    delimiter
        String joining the genes of a combination.
    control_value
        Label returned when ``genes`` is empty, so the canonical label is never ``""``.

    Returns
    -------
    ``"A+B"``-style label, or ``control_value`` for no genes.

    Raises
    ------
    ValueError
        If a gene is empty, blank or contains the delimiter.

    Examples
    --------
    >>> from biojepa.perturbation import canonical_label
    >>> canonical_label(["MAP2K6", "KLF1"])
    'KLF1+MAP2K6'
    >>> canonical_label([], control_value="ctrl")
    'ctrl'
    """
    _check_delimiter(delimiter)
    genes = (genes,) if isinstance(genes, str) else tuple(genes)
    for gene in genes:
        if not isinstance(gene, str) or not gene.strip() or delimiter in gene:
            raise ValueError(
                f"Invalid gene name {gene!r} in {genes!r}: gene names must be non-empty strings without {delimiter!r}."
            )
    unique = sorted({gene.strip() for gene in genes})
    return delimiter.join(unique) if unique else control_value


def condition_frame(
    obs: pd.DataFrame,
    perturbation_key: str,
    control_value: str,
    covariate_keys: Sequence[str] = (),
    delimiter: str = "+",
) -> pd.DataFrame:
    """Per-cell canonical perturbation label and covariate values (as strings).

    Each distinct label is parsed once. Returns a frame indexed like ``obs`` with the column
    ``"_perturbation"`` (canonical label, ``control_value`` for control) and one string column per covariate key.
    Raises a :class:`KeyError` naming any key missing from ``obs`` and a :class:`ValueError` naming a malformed
    or missing label.

    Examples
    --------
    >>> import pandas as pd
    >>> from biojepa.perturbation import condition_frame
    >>> obs = pd.DataFrame({"condition": ["B+A", "ctrl", "A"]})
    >>> condition_frame(obs, "condition", "ctrl")["_perturbation"].tolist()
    ['A+B', 'ctrl', 'A']
    """
    for key in [perturbation_key, *covariate_keys]:
        if key not in obs.columns:
            raise KeyError(f"Key {key!r} not found in adata.obs; available columns: {list(obs.columns)}.")
    codes, uniques = pd.factorize(obs[perturbation_key], use_na_sentinel=True)
    if (codes < 0).any():
        first = obs.index[np.flatnonzero(codes < 0)[0]]
        raise ValueError(f"adata.obs[{perturbation_key!r}] has missing labels (e.g. cell {first!r}); fill them first.")
    canon = np.array(
        [parse_perturbation(u, control_value, delimiter).label(delimiter, control_value) for u in uniques],
        dtype=object,
    )
    frame = pd.DataFrame({PERTURBATION_COLUMN: canon[codes]}, index=obs.index)
    for key in covariate_keys:
        frame[key] = obs[key].astype(str).to_numpy()
    return frame


def group_codes(keys: pd.DataFrame) -> np.ndarray:
    """Integer code of every row's group: the rank of its distinct row of ``keys`` in sorted order.

    Examples
    --------
    >>> import pandas as pd
    >>> from biojepa.perturbation import group_codes
    >>> group_codes(pd.DataFrame({"g": ["b", "a", "b"]})).tolist()
    [1, 0, 1]
    """
    return keys.groupby(list(keys.columns), sort=True, observed=True).ngroup().to_numpy()


def pseudobulk(X, keys: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Mean expression per distinct row of ``keys``.

    Parameters
    ----------
    X
        Cells × genes matrix, dense or sparse.
    keys
        One row per cell; every distinct row is one group (e.g. the output of :func:`condition_frame`).

    Returns
    -------
    ``(groups, means, n_cells)``: the distinct key rows (sorted, index reset; row ``i`` is the group of the cells
    with :func:`group_codes` ``i``), their ``(n_groups, n_genes)``
    float64 mean expression, and the number of cells in each group.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from biojepa.perturbation import pseudobulk
    >>> groups, means, n = pseudobulk(np.array([[1.0], [3.0], [5.0]]), pd.DataFrame({"g": ["a", "a", "b"]}))
    >>> means.ravel().tolist(), n.tolist()
    ([2.0, 5.0], [2, 1])
    """
    columns = list(keys.columns)
    codes = group_codes(keys)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    indicator = sparse.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n_groups, codes.size)
    )  # (n_groups, n_cells)
    n_cells = np.asarray(indicator.sum(1)).ravel().astype(int)
    sums = indicator @ X  # (n_groups, n_genes)
    sums = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    means = sums.astype(np.float64) / n_cells[:, None]
    groups = keys.assign(_code=codes).drop_duplicates("_code").sort_values("_code")[columns].reset_index(drop=True)
    return groups, means, n_cells
