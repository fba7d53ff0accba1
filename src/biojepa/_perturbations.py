"""Perturbation labels: parsing, canonical form, and per-condition pseudobulks.

A perturbation label names the perturbed genes of a cell joined by a delimiter (``"KLF1+MAP2K6"``); the
control label (e.g. ``"control"``) names unperturbed cells. GEARS-style labels are understood too:
``"MEIS1+ctrl"`` is the single ``MEIS1`` and ``"ctrl"`` is control. Internally a perturbation is the sorted,
deduplicated tuple of its genes, the empty tuple being control, so ``"SET+KLF1"`` and ``"KLF1+SET"`` are the
same condition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

__all__ = [
    "CONTROL_ALIASES",
    "canonical_label",
    "condition_frame",
    "group_codes",
    "parse_perturbation",
    "pseudobulk",
]

#: Tokens that always mean "no gene perturbed", whatever the control value (GEARS writes ``"A+ctrl"``).
CONTROL_ALIASES = ("ctrl",)

#: Column of :func:`condition_frame` holding the canonical perturbation label.
PERTURBATION_COLUMN = "_perturbation"


def _check_delimiter(delimiter: str) -> None:
    if not isinstance(delimiter, str) or not delimiter or delimiter.isspace():
        raise ValueError(f"The combination delimiter must be a non-empty, non-blank string, got {delimiter!r}.")


def parse_perturbation(label: str, control_value: str, delimiter: str = "+") -> tuple[str, ...]:
    """Genes perturbed in a condition label.

    Parameters
    ----------
    label
        Perturbation label: the control value, one gene (``"KLF1"``) or genes joined by ``delimiter``
        (``"KLF1+MAP2K6"``). Tokens equal to ``control_value`` or ``"ctrl"`` are dropped, so GEARS-style
        ``"MEIS1+ctrl"`` is the single ``MEIS1`` and ``"ctrl"`` is control. Whitespace around genes is ignored.
    control_value
        Label of control cells.
    delimiter
        String joining the genes of a combination.

    Returns
    -------
    Sorted, deduplicated tuple of gene names; the empty tuple for control.

    Raises
    ------
    ValueError
        For a label that is not a string or is malformed: empty, an empty or blank gene between delimiters
        (``"A++B"``), or a leading/trailing delimiter (``"+A"``, ``"A+"``). The message names the label.

    Examples
    --------
    >>> from biojepa._perturbations import parse_perturbation
    >>> parse_perturbation("MAP2K6+KLF1", control_value="control")
    ('KLF1', 'MAP2K6')
    >>> parse_perturbation("MEIS1+ctrl", control_value="control")
    ('MEIS1',)
    >>> parse_perturbation("control", control_value="control")
    ()
    """
    _check_delimiter(delimiter)
    if not isinstance(label, str):
        raise ValueError(f"Perturbation label {label!r} is not a string; fill missing labels before use.")
    if label == control_value:
        return ()
    genes = []
    for token in label.split(delimiter):
        gene = token.strip()
        if not gene:
            raise ValueError(
                f"Malformed perturbation label {label!r}: empty gene name (check for doubled, leading or trailing "
                f"{delimiter!r}); expected e.g. 'A{delimiter}B', a single gene, or the control value {control_value!r}."
            )
        if gene != control_value and gene not in CONTROL_ALIASES:
            genes.append(gene)
    return tuple(sorted(set(genes)))


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
    >>> from biojepa._perturbations import canonical_label
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
    >>> from biojepa._perturbations import condition_frame
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
        [canonical_label(parse_perturbation(u, control_value, delimiter), delimiter, control_value) for u in uniques],
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
    >>> from biojepa._perturbations import group_codes
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
    >>> from biojepa._perturbations import pseudobulk
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
