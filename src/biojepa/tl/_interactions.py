"""Genetic-interaction calls of combinations in the terms of :cite:t:`norman2019exploring`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from ..perturbation import parse_perturbation

#: Interaction types, in the order :func:`call_interaction` tests them.
INTERACTION_TYPES = ("neomorphic", "dominant", "synergy", "suppression", "additive")


class InteractionFit(NamedTuple):
    """Fit of a combination's change on its members' changes: ``change(AB) ≈ c_a change(A) + c_b change(B)``.

    Examples
    --------
    >>> from biojepa.tl import InteractionFit
    >>> InteractionFit(1.0, 1.0, 1.0, 1.0, 0.99).magnitude
    1.0
    """

    c_a: float
    c_b: float
    magnitude: float  # sqrt((c_a² + c_b²) / 2): 1 for additive
    dominance: float  # max(|c|) / min(|c|): 1 for equal contributions
    fit_r: float  # Pearson r between change(AB) and the fit


def fit_interaction(delta_ab: np.ndarray, delta_a: np.ndarray, delta_b: np.ndarray) -> InteractionFit:
    """Least-squares fit of ``delta_ab`` on ``delta_a`` and ``delta_b`` over genes (Norman et al. 2019).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.tl import fit_interaction
    >>> a, b = np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0])
    >>> fit = fit_interaction(2 * a + 2 * b, a, b)
    >>> round(fit.c_a, 3), round(fit.magnitude, 3), round(fit.fit_r, 3)
    (2.0, 2.0, 1.0)
    """
    design = np.stack([np.asarray(delta_a, np.float64), np.asarray(delta_b, np.float64)], 1)  # (G, 2)
    target = np.asarray(delta_ab, np.float64)
    (c_a, c_b), *_ = np.linalg.lstsq(design, target, rcond=None)
    fitted = design @ np.array([c_a, c_b])
    fit_r = float(np.corrcoef(fitted, target)[0, 1]) if fitted.std() > 0 and target.std() > 0 else 0.0
    small = max(min(abs(c_a), abs(c_b)), 1e-9)
    return InteractionFit(
        float(c_a), float(c_b), float(np.sqrt((c_a**2 + c_b**2) / 2)), float(max(abs(c_a), abs(c_b)) / small), fit_r
    )


def call_interaction(
    fit: InteractionFit,
    min_fit_r: float = 0.75,
    max_dominance: float = 3.0,
    synergy: float = 1.2,
    suppression: float = 0.8,
) -> str:
    """Interaction type of a fitted combination, following Norman et al. (2019)'s categories.

    ``"neomorphic"`` when the members' changes explain the combination poorly (``fit_r < min_fit_r``: new
    changes); ``"dominant"`` when one member's coefficient exceeds the other's by more than ``max_dominance``
    (epistasis: one member dominates); ``"synergy"`` when the magnitude exceeds ``synergy``; ``"suppression"``
    (buffering) when it is below ``suppression``; ``"additive"`` otherwise.

    Examples
    --------
    >>> from biojepa.tl import InteractionFit, call_interaction
    >>> call_interaction(InteractionFit(1.0, 1.1, 1.05, 1.1, 0.95)), call_interaction(InteractionFit(2, 2, 2, 1, 0.9))
    ('additive', 'synergy')
    >>> call_interaction(InteractionFit(0.1, 1.0, 0.71, 10.0, 0.9)), call_interaction(InteractionFit(1, 1, 1, 1, 0.3))
    ('dominant', 'neomorphic')
    """
    if fit.fit_r < min_fit_r:
        return "neomorphic"
    if fit.dominance > max_dominance:
        return "dominant"
    if fit.magnitude > synergy:
        return "synergy"
    if fit.magnitude < suppression:
        return "suppression"
    return "additive"


def interaction_calls(
    doubles: AnnData,
    singles: AnnData,
    perturbation_key: str,
    control_value: str = "control",
    delimiter: str = "+",
    covariate_keys: Sequence[str] = (),
    **thresholds,
) -> pd.DataFrame:
    """Fit and call the genetic interaction of every two-gene row of ``doubles`` against the members in ``singles``.

    Parameters
    ----------
    doubles
        Predicted or observed combinations: ``obs[perturbation_key]`` labels and ``layers["delta"]`` changes vs
        control (the layout of :meth:`biojepa.BioJEPA.predict_perturbation` and the baselines).
    singles
        Changes of single perturbations in the same layout (e.g. observed means, or predictions); rows are matched
        by gene and by ``covariate_keys``.
    perturbation_key, control_value, delimiter
        Label column, control label and delimiter.
    covariate_keys
        ``obs`` columns a double and its singles must share (e.g. ``["cell_type"]``).
    **thresholds
        Keyword arguments of :func:`call_interaction`.

    Returns
    -------
    One row per double with a ``c_a``, ``c_b``, ``magnitude``, ``dominance``, ``fit_r`` and the ``call``; doubles
    whose members are missing from ``singles`` are left out.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.tl import interaction_calls
    >>> a, b = np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0])
    >>> singles = ad.AnnData(np.zeros((2, 3)), obs=pd.DataFrame({"p": ["A", "B"]}, index=["0", "1"]))
    >>> singles.layers["delta"] = np.stack([a, b])
    >>> doubles = ad.AnnData(np.zeros((1, 3)), obs=pd.DataFrame({"p": ["A+B"]}, index=["0"]))
    >>> doubles.layers["delta"] = (2 * a + 2 * b)[None]
    >>> interaction_calls(doubles, singles, "p")["call"].tolist()
    ['synergy']
    """
    covariate_keys = list(covariate_keys)
    for data, name in ((doubles, "doubles"), (singles, "singles")):
        missing = [k for k in [perturbation_key, *covariate_keys] if k not in data.obs]
        if missing or "delta" not in data.layers:
            raise KeyError(f"`{name}` needs obs columns {missing or [perturbation_key]} and layers['delta'].")
    lookup = {}
    single_delta = np.asarray(singles.layers["delta"], np.float64)
    for i, row in enumerate(singles.obs[[perturbation_key, *covariate_keys]].astype(str).itertuples(index=False)):
        genes = parse_perturbation(row[0], control_value, delimiter).genes
        if len(genes) == 1:
            lookup[(genes[0], *row[1:])] = single_delta[i]
    double_delta = np.asarray(doubles.layers["delta"], np.float64)
    rows = []
    for i, row in enumerate(doubles.obs[[perturbation_key, *covariate_keys]].astype(str).itertuples(index=False)):
        genes = parse_perturbation(row[0], control_value, delimiter).genes
        keys = [(g, *row[1:]) for g in genes]
        if len(genes) != 2 or any(k not in lookup for k in keys):
            continue
        fit = fit_interaction(double_delta[i], lookup[keys[0]], lookup[keys[1]])
        rows.append(
            {
                perturbation_key: row[0],
                **dict(zip(covariate_keys, row[1:], strict=True)),
                **fit._asdict(),
                "call": call_interaction(fit, **thresholds),
            }
        )
    columns = [perturbation_key, *covariate_keys, *InteractionFit._fields, "call"]
    return pd.DataFrame(rows, columns=columns)
