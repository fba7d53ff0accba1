"""Predictive intervals of time-course predictions: ``predict_trajectory_uncertainty`` and its calibration.

The counterpart of :mod:`biojepa.model._uncertainty` for population time courses: the mean expression of a
covariate group's cells at a later time (the mean over the chains of :meth:`~biojepa.BioJEPA.predict_trajectory`)
gets per-gene intervals whose scale combines the disagreement of the generative head's flows, the spread of the
cells they generate and the noise of the latest observed cells the prediction starts from; split-conformal
calibration on later times held out from training sets their widths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._sampling import _check_count
from ._uncertainty import _check_levels, _scale, _with_intervals, conformal_calibration

logger = logging.getLogger(__name__)


class TrajectoryUncertaintyMixin:
    """``predict_trajectory_uncertainty`` and ``calibrate_trajectory_uncertainty`` of :class:`~biojepa.BioJEPA`."""

    def predict_trajectory_uncertainty(
        self,
        time_points: Sequence[float],
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        levels: Sequence[float] = (0.5, 0.8, 0.95),
        n_cells: int | None = None,
        n_samples: int = 500,
        seed: int = 0,
    ) -> AnnData:
        r"""Predict the mean expression of each covariate group at later times, with per-gene predictive intervals.

        The point is the mean over the chains of :meth:`predict_trajectory` (a population time course: no
        ``sample_key``). Each flow of the generative head samples ``n_samples`` cells at the time from the group's
        latest observed cells (as :meth:`sample_trajectory`); the scale of a gene's mean is
        :math:`\sigma^2 = \overline{(\mu_m - \hat x)^2} + s^2 / n + s_0^2 / n_0`, as in :meth:`predict_uncertainty`:
        the flows' disagreement, the variance of generated cells over ``n_cells`` and that of the :math:`n_0` latest
        observed cells over :math:`n_0`. Intervals are :math:`\hat x \pm q_\alpha \sigma`, :math:`q_\alpha` from
        :meth:`calibrate_trajectory_uncertainty` (or the normal quantile before calibration).

        Parameters
        ----------
        time_points
            Times to predict, after each group's latest observation.
        adata, indices
            Observations (``None``: the training AnnData; not modified) and which of them form the context.
        levels
            Nominal coverages, each in (0, 1).
        n_cells
            Cells in the observed population whose mean the intervals are for; ``None``: the median number of cells
            at an observed time of a group.
        n_samples
            Cells generated per flow, group and time.
        seed
            Seed of the generated cells and of the population coupling.

        Returns
        -------
        AnnData with one row per covariate group and time: ``X`` the predicted mean (scale of
        :meth:`predict_trajectory`), ``layers["lower_80"]``, ``layers["upper_80"]``, ..., ``layers["scale"]``,
        ``obs`` the time, the covariates and ``"uncertainty"`` (root mean square of :math:`\sigma` over genes),
        ``uns["calibrated"]``.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["hours"] = np.repeat([0.0, 12.0, 24.0, 36.0], 100)
        >>> bj.BioJEPA.setup_anndata(adata, time_key="hours")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> pred = model.predict_trajectory_uncertainty([48.0, 60.0], n_samples=50)
        >>> pred.shape, pred.obs["hours"].tolist(), bool((pred.layers["upper_95"] >= pred.X).all())
        ((2, 100), [48.0, 60.0], True)
        """
        levels = _check_levels(levels)
        pred, spread, cell_var = self._trajectory_spread(time_points, adata, indices, n_samples, seed)
        n = self._typical_time_cells() if n_cells is None else n_cells
        _check_count(n, "n_cells")
        calibration = getattr(self, "trajectory_calibration_", None)
        return _with_intervals(pred, _scale(spread, cell_var, n), levels, calibration)

    def calibrate_trajectory_uncertainty(
        self, adata: AnnData, reference: AnnData | None = None, n_samples: int = 500, seed: int = 0
    ) -> pd.DataFrame:
        r"""Calibrate the intervals of :meth:`predict_trajectory_uncertainty` on later times held out from training.

        Every time of ``adata`` is predicted from ``reference`` (default: the training data) in each covariate
        group, and the score :math:`|x - \hat x| / \sigma` of its observed mean is computed for every gene,
        :math:`\sigma` taking the observed number of cells. The score quantiles at :data:`CALIBRATION_LEVELS`
        become the interval widths (split conformal :cite:p:`angelopoulos2023conformal`), stored in
        ``model.trajectory_calibration_`` and saved with the model. Calibrate on times as far ahead as the later
        predictions: errors grow with the horizon.

        Parameters
        ----------
        adata
            Cells at times after the reference's latest observation of their group (not modified).
        reference
            The observations predictions start from; ``None``: the training data.
        n_samples, seed
            As in :meth:`predict_trajectory_uncertainty`.

        Returns
        -------
        The score quantile and the coverage before calibration (normal quantiles) at each level.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["hours"] = np.repeat([0.0, 12.0, 24.0, 36.0], 100)
        >>> train = adata[adata.obs["hours"] < 30].copy()
        >>> bj.BioJEPA.setup_anndata(train, time_key="hours")
        >>> model = bj.BioJEPA(train, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> table = model.calibrate_trajectory_uncertainty(adata[adata.obs["hours"] == 36].copy(), n_samples=50)
        >>> list(table.columns), model.trajectory_calibration_["n_scores"]
        (['level', 'quantile', 'coverage_uncalibrated'], 100)
        """
        time_key = self._time_key()
        if time_key not in adata.obs:
            raise KeyError(f"adata.obs lacks the column {time_key!r} the model was set up with.")
        ref = self.adata if reference is None else reference
        t_held = adata.obs[time_key].to_numpy(dtype=np.float64)
        t_ref = ref.obs[time_key].to_numpy(dtype=np.float64)
        held_groups, ref_groups = self._time_groups(adata), self._time_groups(ref)
        scores = []
        for values, rows in held_groups.items():
            if values not in ref_groups:
                raise ValueError(f"Covariate group {values} of `adata` has no observation in the reference.")
            last = t_ref[ref_groups[values]].max()
            times = np.unique(t_held[rows])
            if (times <= last).any():
                raise ValueError(
                    f"Times {times[times <= last].tolist()} of covariate group {values} are not after the reference's "
                    f"latest observation ({last:g}): calibrate on later times held out from training."
                )
            pred, spread, cell_var = self._trajectory_spread(times, ref, ref_groups[values], n_samples, seed)
            for i, t in enumerate(times):
                at = rows[t_held[rows] == t]
                observed = self._observed_mean(adata, at)
                sigma = _scale(spread[i : i + 1], cell_var[i : i + 1], len(at))[0]
                scores.append(np.abs(observed - np.asarray(pred.X[i], dtype=np.float64)) / sigma)
        if not scores:
            raise ValueError("`adata` has no cells to calibrate on.")
        self.trajectory_calibration_, table = conformal_calibration(np.concatenate(scores))
        return table

    # ------------------------------------------------------------------ helpers
    def _time_key(self) -> str:
        args = self.adata_manager.registry["setup_args"]
        if args.get("time_key") is None:
            raise ValueError("This model was set up without `time_key`; trajectory intervals need a time course.")
        if args.get("sample_key") is not None:
            raise ValueError(
                "Trajectory intervals are for population time courses; this model was set up with a `sample_key`."
            )
        return args["time_key"]

    def _trajectory_spread(self, time_points, adata, indices, n_samples, seed):
        """Per (group, time): the point (mean over chains), the flows' squared disagreement and cell variance."""
        fields = self._flows()
        time_key = self._time_key()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 2:
            raise ValueError(f"`n_samples` must be an integer of at least 2, got {n_samples!r}.")
        adata = self.adata if adata is None else adata
        rng = np.random.default_rng(seed)
        keys = self._covariate_keys()
        means, spreads, cell_vars, frames = [], [], [], []
        group: dict = {}  # the point (over chains) and the source noise, once per covariate group
        for state in self._time_states(adata, indices, time_points, time_key):
            if group.get("values") != state["values"]:
                point = self.predict_trajectory(adata, state["rows"], time_points=time_points, seed=seed)
                noise = self._observed_var(state["enc"], state["control"]) / len(state["control"])
                group = {"values": state["values"], "point": point, "noise": noise}
            point = group["point"]
            at = point.obs[time_key].to_numpy(dtype=np.float64) == state["time"]
            center = np.asarray(point.X[at], dtype=np.float64).mean(0)
            spread, cell_var = group["noise"].copy(), np.zeros_like(center)
            for m in range(len(fields)):
                chunks = self._generate(state["enc"], state, n_samples, rng, 10, 10_000, m, centre=False)
                cells = np.vstack([x for _, _, x in chunks])
                spread += (cells.mean(0) - center) ** 2 / len(fields)
                cell_var += cells.var(0, ddof=1) / len(fields)
            means.append(center), spreads.append(spread), cell_vars.append(cell_var)
            frames.append({time_key: state["time"], **dict(zip(keys, state["values"], strict=True))})
        obs = pd.DataFrame(frames)
        obs.index = [f"{'/'.join(map(str, r[keys])) if keys else 'all'}@{r[time_key]:g}" for _, r in obs.iterrows()]
        pred = AnnData(X=np.vstack(means).astype(np.float32), obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
        return pred, np.vstack(spreads), np.vstack(cell_vars)

    def _typical_time_cells(self) -> int:
        time_key = self._time_key()
        t = self.adata.obs[time_key].to_numpy(dtype=np.float64)
        sizes = [np.unique(t[rows], return_counts=True)[1] for rows in self._time_groups(self.adata).values()]
        return int(np.median(np.concatenate(sizes)))
