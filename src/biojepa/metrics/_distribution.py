"""Distances between samples of cells beyond the energy distance (Sinkhorn divergence, MMD) and the energy score."""

from __future__ import annotations

import numpy as np
import ot
from scipy import sparse
from scipy.spatial.distance import cdist


def _rows(X) -> np.ndarray:
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    return np.atleast_2d(X).astype(np.float64)


def _pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _rows(X), _rows(Y)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y have different numbers of genes: {X.shape[1]} and {Y.shape[1]}.")
    if len(X) < 2 or len(Y) < 1:
        raise ValueError(f"X needs two or more cells and Y one or more; got {len(X)} and {len(Y)}.")
    return X, Y


def sinkhorn_divergence(X, Y, epsilon: float = 0.1) -> float:
    r"""Debiased Sinkhorn divergence between two samples of cells (squared Euclidean cost), from POT.

    :math:`S_\varepsilon(X, Y) = \mathrm{OT}_\varepsilon(X, Y) - \tfrac12 \mathrm{OT}_\varepsilon(X, X) -
    \tfrac12 \mathrm{OT}_\varepsilon(Y, Y)` :cite:p:`feydy2019sinkhorn`. The entropic regularisation is
    ``epsilon`` times the mean squared distance between rows of ``X``, so pass the reference (observed) cells as
    ``X`` and every candidate as ``Y`` to compare candidates on one scale. Lower is better (0 for identical samples).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import sinkhorn_divergence
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 2))
    >>> sinkhorn_divergence(X, X + 3.0) > sinkhorn_divergence(X, X + 0.5) > sinkhorn_divergence(X, X)
    True
    """
    X, Y = _pair(X, Y)
    reg = epsilon * float(cdist(X, X, "sqeuclidean").mean())
    value = ot.bregman.empirical_sinkhorn_divergence(X, Y, max(reg, 1e-12), warn=False)
    return max(float(value), 0.0)


def mmd(X, Y, scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> float:
    r"""Squared maximum mean discrepancy between two samples of cells with a sum of Gaussian kernels.

    :math:`\mathrm{MMD}^2 = \overline{k(X, X')} + \overline{k(Y, Y')} - 2\,\overline{k(X, Y)}` (biased estimate,
    every pair of rows), with :math:`k = \sum_s \exp(-\lVert x - y \rVert^2 / (2 (s h)^2))` and :math:`h` the median
    distance between rows of ``X``: pass the reference (observed) cells as ``X``. Lower is better.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import mmd
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 2))
    >>> mmd(X, X + 3.0) > mmd(X, rng.normal(size=(100, 2))) >= 0.0
    True
    """
    X, Y = _pair(X, Y)
    d_xx, d_yy, d_xy = cdist(X, X, "sqeuclidean"), cdist(Y, Y, "sqeuclidean"), cdist(X, Y, "sqeuclidean")
    h2 = max(float(np.median(d_xx[np.triu_indices(len(X), 1)])), 1e-12)  # median squared distance
    total = 0.0
    for s in scales:
        gamma = 1.0 / (2.0 * s * s * h2)
        total += np.exp(-gamma * d_xx).mean() + np.exp(-gamma * d_yy).mean() - 2 * np.exp(-gamma * d_xy).mean()
    return max(float(total), 0.0)


def energy_score(samples, observed) -> float:
    r"""Mean energy score of per-cell predictive samples against each cell's observed profile.

    For cell :math:`i` with samples :math:`x_{i1}, \dots, x_{iS}` and observation :math:`y_i`, the score is
    :math:`\overline{\lVert x_{is} - y_i \rVert} - \tfrac12 \overline{\lVert x_{is} - x_{is'} \rVert}`, a proper
    scoring rule of multivariate predictive distributions :cite:p:`gneiting2007scoring` (lower is better); for one
    sample per cell (a point prediction) it is the distance to the observation. Unlike a distance between two
    populations it rewards the right distribution for each cell, not only a population that looks right.

    Parameters
    ----------
    samples
        Array ``(cells, samples, features)``, e.g. the rows of :meth:`~biojepa.BioJEPA.sample_modality` reshaped.
    observed
        Array ``(cells, features)``.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import energy_score
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(200, 3))
    >>> good, narrow = rng.normal(size=(200, 50, 3)), 0.1 * rng.normal(size=(200, 50, 3))
    >>> bool(energy_score(good, y) < energy_score(narrow, y) < energy_score(np.zeros((200, 1, 3)), y))
    True
    """
    x, y = np.asarray(samples, dtype=np.float64), _rows(observed)
    if x.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[1]:
        raise ValueError(
            f"`samples` must be (cells, samples, features) matching `observed` (cells, features); got {x.shape} and "
            f"{y.shape}."
        )
    fit = np.linalg.norm(x - y[:, None, :], axis=2).mean(1)  # (cells,)
    spread = np.stack([cdist(cell, cell).mean() for cell in x])  # (cells,)
    return float((fit - 0.5 * spread).mean())
