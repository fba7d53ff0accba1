r"""Unseen doses between measured ones: the learned dose-response and log-dose interpolation, weighed by validation.

A single measured at doses :math:`d_1 < \dots < d_k` of a group has at each a residual :math:`\rho_i` (observed
change minus the decoding of its learned effect, :mod:`biojepa.model._anchoring`). At an unseen dose :math:`d` inside
that range there are two estimates of the residual:

* the fitted one, :math:`h(d)\, r`, with :math:`r` fitted over every measured dose along the learned dose-response
  :math:`h`: it averages the doses' sampling noise, and is as right as the learned curve's shape;
* the interpolation in log dose between the two measured doses around :math:`d`: it follows the measured changes
  whatever their shape (the ``LogDoseLinear`` baseline, applied to the residuals), with the noise of two doses.

Which is better depends on the data, so it is measured: every interior measured dose of every single of the group is
left out in turn and predicted both ways from the other doses, and the weight :math:`w \in [0, 1]` of the
interpolation that minimizes the squared error of :math:`(1 - w)\,\text{fitted} + w\,\text{interpolated}` is the
least-squares solution, clipped (:func:`interpolation_weight`). Nothing is set by hand; :math:`w = 0` (the fitted
residual alone) where no single of the group has an interior measured dose (three doses or more). Measured doses and
doses outside the measured range keep the fitted residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def log_dose_interpolation(
    doses: np.ndarray, values: Sequence[np.ndarray], variances: Sequence[np.ndarray], dose: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Linear interpolation in log dose between the measured doses around ``dose``, and its sampling variance.

    ``None`` at a measured dose or outside the range of ``doses`` (increasing, positive).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._dose_interpolation import log_dose_interpolation
    >>> doses = np.array([0.1, 10.0])
    >>> value, var = log_dose_interpolation(doses, [np.zeros(1), np.ones(1)], [np.ones(1), np.ones(1)], 1.0)
    >>> value.round(6).tolist(), var.round(6).tolist()
    ([0.5], [0.5])
    >>> log_dose_interpolation(doses, [np.zeros(1)] * 2, [np.ones(1)] * 2, 10.0) is None  # a measured dose
    True
    """
    doses = np.asarray(doses, dtype=np.float64)
    if len(doses) < 2 or not doses[0] < dose < doses[-1] or np.isclose(doses, dose).any():
        return None
    hi = int(np.searchsorted(doses, dose))
    lo = hi - 1
    t = (np.log(dose) - np.log(doses[lo])) / (np.log(doses[hi]) - np.log(doses[lo]))
    return (1 - t) * values[lo] + t * values[hi], (1 - t) ** 2 * variances[lo] + t**2 * variances[hi]


def interpolation_weight(cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    r"""Weight of the interpolated estimate, from left-out ``(observed, fitted, interpolated)`` residuals.

    :math:`w = \sum \langle o - f, i - f \rangle / \sum \lVert i - f \rVert^2`, clipped to [0, 1]: the least-squares
    weight of :math:`(1 - w) f + w i` as a predictor of :math:`o`. 0 without cases.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._dose_interpolation import interpolation_weight
    >>> o, f, i = np.array([1.0, 2.0]), np.array([0.0, 0.0]), np.array([2.0, 4.0])
    >>> interpolation_weight([(o, f, i)]), interpolation_weight([(f, f, i)]), interpolation_weight([])
    (0.5, 0.0, 0.0)
    """
    num = sum(float(np.dot(o - f, i - f)) for o, f, i in cases)
    den = sum(float(np.dot(i - f, i - f)) for _, f, i in cases)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 1e-12 else 0.0
