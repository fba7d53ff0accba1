"""Strength of the learned interaction, chosen on combinations held out from training."""

from __future__ import annotations

import numpy as np

#: Largest interaction strength considered.
MAX_INTERACTION_SCALE = 2.0


def interaction_scale(
    residuals: np.ndarray, interactions: np.ndarray, max_scale: float = MAX_INTERACTION_SCALE
) -> float:
    r"""Least-squares strength :math:`\lambda` of the interaction on held-out combinations, clipped to ``[0, max]``.

    With :math:`r_i` the observed latent shift of held-out combination :math:`i` minus the sum of its members'
    learned effects and :math:`I_i` the learned interaction,
    :math:`\lambda = \arg\min_\lambda \sum_i \lVert r_i - \lambda I_i\rVert^2 = \sum_i \langle r_i, I_i\rangle /
    \sum_i \lVert I_i\rVert^2`. No held-out combination (or a zero interaction) gives 0: the additive composition.

    Parameters
    ----------
    residuals, interactions
        ``(n, n_latent)`` arrays.
    max_scale
        Upper clip.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.perturbation import interaction_scale
    >>> inter = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> interaction_scale(0.5 * inter, inter), interaction_scale(-inter, inter), interaction_scale(inter[:0], inter[:0])
    (0.5, 0.0, 0.0)
    """
    residuals, interactions = np.asarray(residuals, np.float64), np.asarray(interactions, np.float64)
    denom = float((interactions**2).sum())
    if residuals.size == 0 or denom <= 1e-12:
        return 0.0
    return float(np.clip((residuals * interactions).sum() / denom, 0.0, max_scale))
