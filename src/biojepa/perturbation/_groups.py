"""Covariate groups: the control population and the observed perturbations of each group of reference cells."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._value import parse_perturbation

Genes = tuple[str, ...]


class CovariateGroup:
    """Cells of one covariate group in the reference AnnData, with everything predictions need.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.perturbation import CovariateGroup
    >>> group = CovariateGroup(("k562",), control=np.array([0, 3]))
    >>> group.singles["A"] = np.array([1, 2])
    >>> group.values, group.control.tolist(), sorted(group.singles), group.combinations
    (('k562',), [0, 3], ['A'], [])
    """

    def __init__(self, values: tuple, control: np.ndarray):
        self.values, self.control = values, control
        self.singles: dict[str, np.ndarray] = {}  # gene -> row indices of cells perturbed in that gene alone
        self.combinations: list[Genes] = []  # observed combinations of two or more genes
        self.observed: dict[Genes, np.ndarray] = {}  # any observed gene set -> its row indices
        self.single_doses: dict[str, np.ndarray] = {}  # gene -> dose of each row of ``singles[gene]`` (with doses)
        self.types: list[str] = []


def covariate_groups(
    labels: np.ndarray,
    covariates: pd.DataFrame,
    control: str,
    delimiter: str,
    types: np.ndarray | None = None,
    doses: np.ndarray | None = None,
) -> dict[tuple, CovariateGroup]:
    """Group cells by covariate values; keep groups with control cells, with their singles and combinations.

    Parameters
    ----------
    labels
        Canonical perturbation label of every cell.
    covariates
        One string column per covariate key, one row per cell (no columns: a single group ``()``).
    control, delimiter
        Control label and combination delimiter.
    types
        Perturbation type of every cell, or ``None``. A group's types are those of its perturbed cells, or of its
        control cells when it has none (a new context given by its control cells).
    doses
        Dose of every cell of a single perturbation (NaN elsewhere), or ``None``; kept per single in
        ``single_doses``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from biojepa.perturbation import covariate_groups
    >>> labels = np.array(["ctrl", "A", "A+B", "ctrl", "B"])
    >>> groups = covariate_groups(labels, pd.DataFrame({"line": list("xxxyy")}), "ctrl", "+")
    >>> x = groups[("x",)]
    >>> sorted(groups), x.control.tolist(), sorted(x.singles), x.combinations
    ([('x',), ('y',)], [0], ['A'], [('A', 'B')])
    """
    if len(covariates.columns):
        codes, uniques = pd.factorize(pd.MultiIndex.from_frame(covariates))
        uniques = [tuple(u) for u in uniques]
    else:
        codes, uniques = np.zeros(len(labels), dtype=np.int64), [()]
    groups: dict[tuple, CovariateGroup] = {}
    for code, values in enumerate(uniques):
        rows = np.flatnonzero(codes == code)
        is_ctrl = labels[rows] == control
        if not is_ctrl.any():
            continue
        group = CovariateGroup(values, rows[is_ctrl])
        for label in np.unique(labels[rows[~is_ctrl]]):
            genes = parse_perturbation(label, control, delimiter).genes
            group.observed[genes] = rows[labels[rows] == label]
            if len(genes) == 1:
                group.singles[genes[0]] = rows[labels[rows] == label]
                if doses is not None:
                    group.single_doses[genes[0]] = np.asarray(doses, dtype=float)[group.singles[genes[0]]]
            elif len(genes) > 1:
                group.combinations.append(genes)
        if types is not None:
            typed = rows[~is_ctrl] if (~is_ctrl).any() else rows  # a group of control cells only: their type
            group.types = list(pd.Series(types[typed]).value_counts().index)
        groups[values] = group
    return groups


def select_groups(groups: list[tuple], cov_keys: list[str], covariates: Mapping | None) -> list[tuple]:
    """Covariate-value tuples of ``groups`` matching ``covariates`` (all for ``None``); errors name the value.

    Examples
    --------
    >>> from biojepa.perturbation import select_groups
    >>> groups = [("k562", "d1"), ("hepg2", "d1"), ("k562", "d2")]
    >>> select_groups(groups, ["line", "day"], None)
    [('hepg2', 'd1'), ('k562', 'd1'), ('k562', 'd2')]
    >>> select_groups(groups, ["line", "day"], {"line": "k562"})
    [('k562', 'd1'), ('k562', 'd2')]
    >>> select_groups(groups, ["line", "day"], {"line": "jurkat"})
    Traceback (most recent call last):
    ...
    KeyError: "No control cells with line='jurkat' in the AnnData; values with controls: ['hepg2', 'k562']."
    """
    if not groups:
        raise ValueError(
            "The reference AnnData has no control cells; predictions start from the control population, so pass "
            "`adata=` with control cells of each context to predict in."
        )
    if covariates is None:
        return sorted(groups)
    if not isinstance(covariates, Mapping):
        raise TypeError(f"`covariates` must be a mapping like {{'cell_type': 'k562'}}, got {type(covariates)}.")
    wanted = {}
    for key, values in covariates.items():
        if key not in cov_keys:
            raise KeyError(f"Covariate {key!r} is not one the model was set up with ({cov_keys}).")
        values = [values] if isinstance(values, str) or np.isscalar(values) else list(values)
        known = sorted({g[cov_keys.index(key)] for g in groups})
        for value in map(str, values):
            if value not in known:
                raise KeyError(f"No control cells with {key}={value!r} in the AnnData; values with controls: {known}.")
        wanted[cov_keys.index(key)] = set(map(str, values))
    return sorted(g for g in groups if all(g[i] in v for i, v in wanted.items()))
