"""Context matching: control populations and observed singles per covariate group, and retrieval helpers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._perturbations import parse_perturbation

Genes = tuple[str, ...]

#: Kernel temperatures tried by :func:`loo_temperature` (``inf``: uniform weights, the train mean).
TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0, np.inf)

#: Prior strength of the interaction's shrinkage: with n combinations whose every member was also observed alone
#: in the group, the learned interaction is scaled by n / (n + INTERACTION_PRIOR).
INTERACTION_PRIOR = 10.0


def interaction_shrinkage(group) -> float:
    """Shrinkage factor ``n / (n + INTERACTION_PRIOR)`` of a group's learned interaction.

    ``n`` counts the group's observed combinations whose every gene was also observed alone.

    Only such combinations separate an interaction from the members' own effects; without them the learned
    interaction is not identified by the data and the prediction stays additive.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import CovariateGroup, interaction_shrinkage
    >>> group = CovariateGroup(("k562",), control=np.array([0]))
    >>> group.singles["A"], group.combinations = np.array([1]), [("A", "B")]
    >>> interaction_shrinkage(group)  # B never observed alone: the interaction is not identified
    0.0
    >>> group.singles["B"] = np.array([2])
    >>> round(interaction_shrinkage(group), 3)  # 1 / (1 + 10)
    0.091
    """
    n = sum(all(g in group.singles for g in genes) for genes in group.combinations)
    return n / (n + INTERACTION_PRIOR)


def kernel_weights(query: np.ndarray, shifts: np.ndarray, temperature: float) -> np.ndarray:
    r"""Weights :math:`w_j \propto \exp(\cos(q, s_j) / \tau)` over shifts (uniform if :math:`\tau = \infty`).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import kernel_weights
    >>> query, shifts = np.array([1.0, 0.0]), np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> [round(float(w), 3) for w in kernel_weights(query, shifts, 1.0)]  # cosines 1 and 0
    [0.731, 0.269]
    >>> kernel_weights(query, shifts, np.inf).tolist()
    [0.5, 0.5]
    """
    if not np.isfinite(temperature):
        return np.full(len(shifts), 1.0 / len(shifts))
    norms = np.linalg.norm(shifts, axis=1) * max(np.linalg.norm(query), 1e-12)
    logits = shifts @ query / np.maximum(norms, 1e-12) / temperature
    w = np.exp(logits - logits.max())
    return w / w.sum()


def loo_temperature(shifts: np.ndarray, deltas: np.ndarray) -> float:
    """Temperature minimizing the leave-one-out error of predicting each single's change from the others'.

    With fewer than 3 singles, or when similarity in latent space does not help, this is ``inf``: every gene not
    observed alone gets the mean change of the observed singles (the train-mean baseline).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import loo_temperature
    >>> shifts = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> loo_temperature(shifts, np.array([[1.0], [1.0], [-1.0], [-1.0]]))  # similar shifts, similar changes
    0.05
    >>> loo_temperature(shifts, np.array([[1.0], [-1.0], [1.0], [-1.0]]))  # similarity does not help
    inf
    """
    n = len(shifts)
    if n < 3:
        return np.inf
    errors = []
    for tau in TEMPERATURES:
        err = 0.0
        for j in range(n):
            others = np.delete(np.arange(n), j)
            w = kernel_weights(shifts[j], shifts[others], tau)
            err += float(np.sum((w @ deltas[others] - deltas[j]) ** 2))
        errors.append(err)
    return TEMPERATURES[int(np.argmin(errors))]


class CovariateGroup:
    """Cells of one covariate group in the reference AnnData, with everything predictions need.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import CovariateGroup
    >>> group = CovariateGroup(("k562",), control=np.array([0, 3]))
    >>> group.singles["A"] = np.array([1, 2])
    >>> group.values, group.control.tolist(), sorted(group.singles), group.combinations
    (('k562',), [0, 3], ['A'], [])
    """

    def __init__(self, values: tuple, control: np.ndarray):
        self.values, self.control = values, control
        self.singles: dict[str, np.ndarray] = {}  # gene -> row indices of cells perturbed in that gene alone
        self.combinations: list[Genes] = []  # observed combinations of two or more genes
        self.types: list[str] = []


def covariate_groups(
    labels: np.ndarray,
    covariates: pd.DataFrame,
    control: str,
    delimiter: str,
    types: np.ndarray | None = None,
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
        Perturbation type of every cell, or ``None``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from biojepa.data import covariate_groups
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
            genes = parse_perturbation(label, control, delimiter)
            if len(genes) == 1:
                group.singles[genes[0]] = rows[labels[rows] == label]
            elif len(genes) > 1:
                group.combinations.append(genes)
        if types is not None:
            group.types = list(pd.Series(types[rows[~is_ctrl]]).value_counts().index)
        groups[values] = group
    return groups


def select_groups(groups: list[tuple], cov_keys: list[str], covariates: Mapping | None) -> list[tuple]:
    """Covariate-value tuples of ``groups`` matching ``covariates`` (all for ``None``); errors name the value.

    Examples
    --------
    >>> from biojepa.data import select_groups
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
        raise ValueError("The AnnData has no control cells; predictions start from the control population.")
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
