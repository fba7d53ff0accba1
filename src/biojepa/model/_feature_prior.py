r"""A prior for perturbations known only from their features: what their most similar trained peers did.

A compound never trained (or an unmeasured gene given external features) is predicted as the mean observed change
of the trained singles of its group plus what its own, shrunk, learned deviation changes in the decoding
(:meth:`~biojepa.model._anchoring.AnchoringMixin._novel_anchor`). Its feature row also says which trained singles it
resembles, and each of those departs from the mean change in its own way. The prior adds

.. math:: w \sum_c k_c\,(\text{change}_c - \overline{\text{change}}),

with :math:`k` the softmax of the cosine similarities between its feature row and the trained singles' rows at
temperature :math:`\tau` (:math:`\tau = 0`: the most similar single alone). :math:`\tau` and :math:`w \in [0, 1]`
are chosen by leaving every trained single out in turn and predicting its change from the others (least squares
over genes, summed over the singles, on their observed changes only): nothing is set by hand, and where
resemblance carries nothing :math:`w` falls to 0.

It serves ranking: :meth:`~biojepa.BioJEPA.screen` in expression space adds it, and on the simulated dose screen
it lifts the AUROC of the compounds that truly reverse a disease state from 0.86 to 0.92 (matching observed
signatures: 0.94). It does not make the predicted changes of unseen compounds better (Pearson Δ top-20 0.600 →
0.573, L2 9.82 → 9.92, 3 seeds), so :meth:`~biojepa.BioJEPA.predict_perturbation` leaves it out.

The kernel regression is written here rather than taken from scikit-learn (``KernelRidge``,
``KNeighborsRegressor``) because the weight of its deviation and the choice of :math:`\tau` are fitted jointly
by leave-one-out in a few lines on arrays already in memory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Kernel temperatures tried (0: the most similar trained single alone).
TEMPERATURES = (0.0, 0.05, 0.1)


def kernel(similarities: np.ndarray, temperature: float) -> np.ndarray:
    """Weights over peers from cosine similarities: softmax at ``temperature``, or the most similar one at 0.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._feature_prior import kernel
    >>> kernel(np.array([0.2, 0.9, 0.5]), 0.0).tolist()
    [0.0, 1.0, 0.0]
    >>> bool(np.isclose(kernel(np.array([0.2, 0.9, 0.5]), 0.1).sum(), 1.0))
    True
    """
    s = np.asarray(similarities, dtype=np.float64)
    if temperature <= 0:
        out = np.zeros_like(s)
        out[int(np.argmax(s))] = 1.0
        return out
    w = np.exp((s - s.max()) / temperature)
    return w / w.sum()


class FeaturePrior(NamedTuple):
    """Trained singles' unit feature rows, their deviations from the mean change, and the chosen kernel and weight."""

    rows: np.ndarray  # (n, p) unit-norm feature rows
    deviations: np.ndarray  # (n, G) change minus the mean change of the n singles
    temperature: float
    weight: float

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """The prior's change ``(G,)`` for a perturbation with feature ``row`` (zero for a row of zeros)."""
        row = np.asarray(row, dtype=np.float64)
        norm = np.linalg.norm(row)
        if norm == 0 or self.weight == 0:
            return np.zeros(self.deviations.shape[1])
        return self.weight * (kernel(self.rows @ (row / norm), self.temperature) @ self.deviations)


def feature_prior(rows: np.ndarray, changes: np.ndarray) -> FeaturePrior | None:
    """The prior of trained singles with feature ``rows`` ``(n, p)`` and observed ``changes`` ``(n, G)``.

    ``None`` with fewer than three singles with a non-zero feature row.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._feature_prior import feature_prior
    >>> rng = np.random.default_rng(0)
    >>> targets = np.repeat(np.eye(4), 3, axis=0)  # 12 compounds, 3 per target
    >>> rows = targets + 0.1 * rng.random((12, 4))
    >>> effects = rng.normal(size=(4, 50))
    >>> changes = targets @ effects + 0.1 * rng.normal(size=(12, 50))  # the target sets the change
    >>> prior = feature_prior(rows, changes)
    >>> prior.weight > 0.5  # resemblance predicts a left-out compound's change
    True
    >>> new = prior(np.array([0.0, 1.0, 0.05, 0.0]))  # a compound on the second target
    >>> bool(np.corrcoef(new, effects[1] - effects.mean(0))[0, 1] > 0.9)
    True
    """
    rows = np.asarray(rows, dtype=np.float64)
    changes = np.asarray(changes, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1)
    keep = norms > 0
    if keep.sum() < 3:
        return None
    unit, changes = rows[keep] / norms[keep, None], changes[keep]
    similarity = unit @ unit.T
    n = len(unit)
    best = (np.inf, 0.0, 0.0)
    for temperature in TEMPERATURES:
        num = den = 0.0
        fits = []
        for i in range(n):
            others = np.arange(n) != i
            mean = changes[others].mean(0)
            p = kernel(similarity[i, others], temperature) @ (changes[others] - mean)
            y = changes[i] - mean
            num, den = num + float(p @ y), den + float(p @ p)
            fits.append((p, y))
        weight = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0
        error = sum(float(((y - weight * p) ** 2).sum()) for p, y in fits)
        if error < best[0]:
            best = (error, temperature, weight)
    _, temperature, weight = best
    return FeaturePrior(unit, changes - changes.mean(0), temperature, weight)
