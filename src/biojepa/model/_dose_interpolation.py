r"""Unseen doses between measured ones: the learned dose-response and a log-dose line, weighed by validation.

A single measured at doses :math:`d_1 < \dots < d_k` of a group has at each an observed change :math:`c_i` and a
residual :math:`\rho_i` (the change minus the decoding :math:`D(d_i)` of its learned effect,
:mod:`biojepa.model._anchoring`). At an unseen dose :math:`d` inside that range there are two estimates of the
residual:

* the fitted one, :math:`h(d)\, r`, with :math:`r` fitted over every measured dose along the learned dose-response
  :math:`h`: it averages the doses' sampling noise, and is as right as the learned curve's shape;
* the line: the least-squares line in log dose through the observed changes :math:`c_i` (the ``LogDoseLinear``
  baseline) at :math:`d`, minus the decoding :math:`D(d)`, so that the prediction is that line; it follows the
  measured changes' trend whatever the learned curve says.

Which is better depends on the data, so it is measured: every interior measured dose of every single of the group is
left out in turn and predicted both ways from the other doses, and the weight :math:`w \in [0, 1]` of the line that
minimizes the squared error of :math:`(1 - w)\,\text{fitted} + w\,\text{line}` is the least-squares solution,
clipped (:func:`interpolation_weight`). Nothing is set by hand; :math:`w = 0` (the fitted
residual alone) where no single of the group has an interior measured dose (three doses or more). Measured doses and
doses outside the measured range keep the fitted residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def log_dose_line(
    doses: np.ndarray, values: Sequence[np.ndarray], variances: Sequence[np.ndarray], dose: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Least-squares line in log dose through the measured ``values``, at ``dose``, and its sampling variance.

    The chemical benchmark's ``LogDoseLinear`` baseline (:class:`biojepa.baselines.LogDoseLinear` fits the same line
    on log(1 + dose)): every measured dose weighs in, so the noise of each averages out. ``None`` at a measured dose
    or outside the range of ``doses`` (increasing, positive; two or more).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._dose_interpolation import log_dose_line
    >>> doses = np.array([0.1, 1.0, 100.0])
    >>> value, var = log_dose_line(doses, [np.zeros(1), np.ones(1), np.full(1, 3.0)], [np.ones(1)] * 3, 10.0)
    >>> value.round(6).tolist()  # the points lie on 1 + log10(dose): the line goes through them
    [2.0]
    >>> log_dose_line(doses, [np.zeros(1)] * 3, [np.ones(1)] * 3, 1.0) is None  # a measured dose
    True
    """
    doses = np.asarray(doses, dtype=np.float64)
    if len(doses) < 2 or not doses[0] < dose < doses[-1] or np.isclose(doses, dose).any():
        return None
    x = np.log(doses)
    centred = x - x.mean()
    weights = 1.0 / len(x) + centred * (np.log(dose) - x.mean()) / (centred**2).sum()  # (k,) of each point
    return (
        np.tensordot(weights, np.stack(values), axes=1),
        np.tensordot(weights**2, np.stack(variances), axes=1),
    )


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
