"""Reliability diagram: observed coverage of predictive intervals against their nominal level."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes


def reliability(
    coverage: pd.DataFrame,
    hue: str | None = None,
    tolerance: float = 0.1,
    ax: Axes | None = None,
) -> Axes:
    """Plot the mean observed coverage of intervals against their nominal level, with the diagonal.

    Parameters
    ----------
    coverage
        Columns ``nominal`` and ``coverage`` (e.g. from :func:`biojepa.metrics.interval_coverage`); rows of one
        level are averaged, and their standard deviation drawn as a vertical bar.
    hue
        Column whose values get one line each (e.g. ``"method"`` or ``"seed"``); ``None``: one line.
    tolerance
        Half-width of the shaded band around the diagonal (``0.1``: within ten points of nominal); ``0`` draws none.
    ax
        Axes to draw into.

    Returns
    -------
    The axes; ``ax.lines`` holds the diagonal first, then one line per value of ``hue``, labelled with it.

    Examples
    --------
    >>> import pandas as pd, biojepa as bj
    >>> table = pd.DataFrame({"nominal": [0.5, 0.8, 0.95] * 2, "coverage": [0.45, 0.7, 0.9, 0.55, 0.8, 0.97],
    ...                       "method": ["calibrated"] * 3 + ["normal"] * 3})
    >>> ax = bj.pl.reliability(table, hue="method")
    >>> [line.get_label() for line in ax.lines[1:]]
    ['calibrated', 'normal']
    """
    missing = [c for c in ("nominal", "coverage", *([hue] if hue else [])) if c not in coverage]
    if missing:
        raise KeyError(f"`coverage` lacks the columns {missing}; pass the table of `bj.metrics.interval_coverage`.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="nominal")
    if tolerance > 0:
        grid = np.linspace(0, 1, 11)
        ax.fill_between(grid, grid - tolerance, grid + tolerance, color="0.9", zorder=0)
    groups = coverage.groupby(hue, sort=False, observed=True) if hue else [(None, coverage)]
    for name, frame in groups:
        stats = frame.groupby("nominal")["coverage"].agg(["mean", "std"]).reset_index()
        (line,) = ax.plot(stats["nominal"], stats["mean"], marker="o", label="coverage" if name is None else str(name))
        spread = stats["std"].fillna(0.0)
        ax.vlines(stats["nominal"], stats["mean"] - spread, stats["mean"] + spread, color=line.get_color())
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.legend(loc="upper left", frameon=False)
    return ax
