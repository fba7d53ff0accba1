r"""A prior from expression for a measured gene never perturbed: what moves with it across the group's singles.

Where a gene :math:`j` is measured but never perturbed, the observed changes of the group's trained singles still
say what tends to move with it. Two parts, each scaled by a weight chosen by leaving each trained single out:

* **its own level**: a perturbation moves its own gene (a knockout lowers it, an activation raises it); the gene's
  own change is predicted as the mean own change :math:`t` of the trained singles (each single's change of its own
  gene), i.e. :math:`t - \bar c_j` above the mean change :math:`\bar c_j` of gene :math:`j` over the singles;
* **what moves with it**: the least-squares slope of every other gene on gene :math:`j` over the singles' changes,
  :math:`b_g = \sum_s (c_{sg} - \bar c_g)(c_{sj} - \bar c_j) / \sum_s (c_{sj} - \bar c_j)^2`, times the same
  :math:`t - \bar c_j`: genes that rise and fall with :math:`j` across perturbations are read as its downstream
  genes. This is the co-variation that the linear baseline of Ahlmann-Eltze et al. reads from its PCA gene
  embedding, here taken from the singles' changes themselves. Where gene :math:`j`'s changes are mostly sampling
  noise, the slopes are chance, so they are multiplied by the share of its variance over the singles that stands
  above the noise, :math:`\max(0, 1 - \bar v_j / \operatorname{var}_s c_{sj})` with :math:`\bar v_j` the mean
  sampling variance of its change (the empirical Wiener factor, as for denoised members of a combination).

Each weight in :math:`[0, 1]` is the least-squares factor that best predicts every trained single from the others
(its change minus the others' mean change, against its prior computed without it), on its own gene for the first
part and on the other genes for the second; a weight of 0 leaves the prediction as it was.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CoexpressionPrior", "coexpression_prior", "prior_weights"]


class CoexpressionPrior(NamedTuple):
    """Observed changes of a group's trained singles and the weights of the two parts of the prior."""

    changes: np.ndarray  # (n_singles, n_genes) observed changes
    columns: np.ndarray  # (n_singles,) column of each single's own gene
    variances: np.ndarray | None  # (n_singles, n_genes) sampling variances of the changes
    own_weight: float
    slope_weight: float

    def __call__(self, column: int) -> np.ndarray:
        """Weighted prior (deviation from the singles' mean change) for the gene in ``column``."""
        own, slope = coexpression_prior(self.changes, self.columns, column, self.variances)
        return self.own_weight * own + self.slope_weight * slope


def coexpression_prior(
    changes: np.ndarray, columns: np.ndarray, column: int, variances: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""The two parts of the prior for the gene in ``column``: its own level and what moves with it.

    Parameters
    ----------
    changes
        ``(n_singles, n_genes)`` observed changes of the trained singles.
    columns
        ``(n_singles,)`` column of each single's own gene.
    column
        Column of the gene to predict.
    variances
        ``(n_singles, n_genes)`` sampling variances of the changes; ``None``: the slopes are not shrunk.

    Returns
    -------
    Two ``(n_genes,)`` arrays, deviations from the singles' mean change: ``own`` is :math:`t - \bar c_j` at
    ``column`` and 0 elsewhere, ``slope`` is :math:`b_g (t - \bar c_j)` elsewhere and 0 at ``column``.

    Examples
    --------
    >>> import numpy as np
    >>> changes = np.array([[-1.0, 0.5, 0.0], [0.0, -1.0, 0.0], [0.2, 0.1, -1.0]])
    >>> own, slope = coexpression_prior(changes, np.array([0, 1, 2]), column=1)
    >>> own.round(2).tolist(), float(slope[1])
    ([0.0, -0.87, 0.0], 0.0)
    """
    changes = np.asarray(changes, dtype=np.float64)
    mean = changes.mean(0)
    t = float(changes[np.arange(len(columns)), columns].mean())
    x = changes[:, column] - mean[column]
    size = t - mean[column]
    own = np.zeros(changes.shape[1])
    own[column] = size
    denom = float(x @ x)
    slope = np.zeros(changes.shape[1]) if denom <= 1e-12 else (changes - mean).T @ x / denom * size
    if variances is not None and denom > 1e-12:
        slope *= max(0.0, 1.0 - float(np.mean(np.asarray(variances)[:, column])) / (denom / len(x)))
    slope[column] = 0.0
    return own, slope


def prior_weights(changes: np.ndarray, columns: np.ndarray, variances: np.ndarray | None = None) -> tuple[float, float]:
    """Weights of the own-level and co-variation parts, each chosen by leaving every trained single out.

    For each single :math:`s`, its change minus the mean change of the others is regressed (through the origin,
    over all singles together) on its prior computed from the others; each weight is clipped to ``[0, 1]``.
    ``(0, 0)`` with fewer than three singles.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(0, 0.01, (20, 20))
    >>> changes = noise - np.eye(20)  # every single lowers its own gene, nothing else moves
    >>> own_w, slope_w = prior_weights(changes, np.arange(20))
    >>> round(own_w, 2), slope_w < 0.1
    (1.0, True)
    """
    changes = np.asarray(changes, dtype=np.float64)
    columns = np.asarray(columns)
    n = len(changes)
    if n < 3:
        return 0.0, 0.0
    num, den = np.zeros(2), np.zeros(2)
    for s in range(n):
        keep = np.arange(n) != s
        others = changes[keep]
        noise = None if variances is None else np.asarray(variances)[keep]
        own, slope = coexpression_prior(others, columns[keep], int(columns[s]), noise)
        target = changes[s] - others.mean(0)
        for k, part in enumerate((own, slope)):
            num[k] += float(target @ part)
            den[k] += float(part @ part)
    weights = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    own_weight, slope_weight = np.clip(weights, 0.0, 1.0)
    return float(own_weight), float(slope_weight)
