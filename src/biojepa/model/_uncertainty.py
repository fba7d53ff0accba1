"""Predictive intervals of perturbation predictions from the generative head, with split-conformal calibration."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import norm

from .._constants import INPUT_SCALES

logger = logging.getLogger(__name__)

#: Nominal levels at which calibration stores the quantile of the scores.
CALIBRATION_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist()) + (0.99,)


def interval_layers(level: float) -> tuple[str, str]:
    """Names of the lower and upper bound layers of a nominal level.

    Examples
    --------
    >>> from biojepa.model._uncertainty import interval_layers
    >>> interval_layers(0.8), interval_layers(0.95)
    (('lower_80', 'upper_80'), ('lower_95', 'upper_95'))
    """
    pct = f"{100 * level:g}".replace(".", "_")
    return f"lower_{pct}", f"upper_{pct}"


class UncertaintyMixin:
    """``predict_uncertainty`` and ``calibrate_uncertainty`` of :class:`~biojepa.BioJEPA`."""

    def predict_uncertainty(
        self,
        perturbations: str | Sequence[str],
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        adata: AnnData | None = None,
        levels: Sequence[float] = (0.5, 0.8, 0.95),
        n_cells: int | None = None,
        n_samples: int = 500,
        seed: int = 0,
        **predict_kwargs,
    ) -> AnnData:
        r"""Predict perturbations with per-gene predictive intervals of the mean and a per-prediction uncertainty.

        The rows are those of :meth:`predict_perturbation` (same arguments). Each flow of the generative ensemble
        samples ``n_samples`` cells per row; the scale of a gene's mean is
        :math:`\sigma^2 = \overline{(\mu_m - \hat x)^2} + s^2 / n + s_0^2 / n_0`: the mean squared distance of the
        members' means :math:`\mu_m` from the prediction :math:`\hat x` (epistemic), the variance :math:`s^2` of the
        generated cells over ``n_cells`` (the noise of an observed mean) and that of the :math:`n_0` control cells
        over :math:`n_0` (the noise of the control mean the prediction starts from). The interval at level
        :math:`\alpha` is :math:`\hat x \pm q_\alpha \sigma`: :math:`q_\alpha` is the :math:`\alpha` quantile of
        :math:`|x - \hat x| / \sigma` on held-out perturbations (split conformal :cite:p:`angelopoulos2023conformal`,
        from :meth:`calibrate_uncertainty`), or the normal quantile before calibration.

        Parameters
        ----------
        perturbations, covariates, adata
            As in :meth:`predict_perturbation`.
        levels
            Nominal coverage of the intervals, each in (0, 1).
        n_cells
            Cells in the observed population whose mean the intervals are for; ``None``: the median number of cells
            of a perturbation in the training data.
        n_samples
            Cells generated per flow and row.
        seed
            Seed of the generated cells (and of ``predict_perturbation``).
        **predict_kwargs
            Other arguments of :meth:`predict_perturbation` (``perturbation_type``, ``anchor``, ...).

        Returns
        -------
        The AnnData of :meth:`predict_perturbation` with ``layers["lower_80"]``, ``layers["upper_80"]``, ... (bounds
        of ``X`` at each level), ``layers["scale"]`` (:math:`\sigma`), ``obs["uncertainty"]`` (root mean square of
        :math:`\sigma` over genes, the units of ``X``) and ``uns["calibrated"]``.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> pred = model.predict_uncertainty(["g1+g2", "g3"], n_samples=50)
        >>> sorted(k for k in pred.layers if k.startswith("lower")), bool((pred.layers["upper_95"] >= pred.X).all())
        (['lower_50', 'lower_80', 'lower_95'], True)
        """
        levels = _check_levels(levels)
        pred, spread, cell_var = self._prediction_spread(
            perturbations, covariates, adata, n_samples, seed, predict_kwargs
        )
        n = self._typical_cells() if n_cells is None else n_cells
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"`n_cells` must be a positive integer or None, got {n_cells!r}.")
        scale = _scale(spread, cell_var, n)
        return self._with_intervals(pred, scale, levels)

    def calibrate_uncertainty(
        self,
        adata: AnnData,
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        reference: AnnData | None = None,
        n_samples: int = 500,
        seed: int = 0,
        **predict_kwargs,
    ) -> pd.DataFrame:
        r"""Calibrate the intervals of :meth:`predict_uncertainty` on perturbations held out from training.

        Every non-control perturbation of ``adata`` is predicted from ``reference``, as :meth:`predict_uncertainty`
        predicts new ones, and the score :math:`|x - \hat x| / \sigma` of its observed mean in ``adata`` is computed
        for every gene, :math:`\sigma` taking the perturbation's own number of cells. The quantiles of
        the scores at :data:`CALIBRATION_LEVELS` become the interval widths of later predictions (split conformal
        :cite:p:`angelopoulos2023conformal`), stored in ``model.uncertainty_calibration_`` and saved with the model.

        Parameters
        ----------
        adata
            Control cells and cells of perturbations that the model was not trained on (not modified).
        covariates
            Covariate groups to use, as in :meth:`predict_perturbation`; ``None``: every group.
        reference
            The cells predictions start from, as ``adata`` of :meth:`predict_uncertainty`; ``None``: the training
            data. Pass the reference that later predictions will use: the singles observed in it anchor the
            combinations predicted from it, so predictions from another reference have other errors (calibrating
            on ``adata`` itself, which lacks the training singles, gives intervals too wide or too narrow for
            predictions from the training data).
        n_samples, seed, **predict_kwargs
            As in :meth:`predict_uncertainty`.

        Returns
        -------
        The score quantile and the coverage before calibration (normal quantiles) at each level.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g3"] * 100
        >>> held = adata.obs["condition"].isin(["control", "g3"]).to_numpy()
        >>> train = adata[adata.obs["condition"] != "g3"].copy()
        >>> bj.BioJEPA.setup_anndata(train, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(train, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> table = model.calibrate_uncertainty(adata[held].copy(), n_samples=50)
        >>> list(table.columns), model.uncertainty_calibration_["n_scores"]
        (['level', 'quantile', 'coverage_uncalibrated'], 100)
        """
        setup = self._setup()
        key = setup.perturbation_key
        if key not in adata.obs:
            raise KeyError(f"adata.obs lacks the perturbation column {key!r} the model was set up with.")
        labels = sorted(
            {setup.parse(str(x)).label(setup.delimiter, setup.control_value) for x in adata.obs[key].unique()}
            - {setup.control_value}
        )
        if not labels:
            raise ValueError(f"adata.obs[{key!r}] has only control cells; calibration needs held-out perturbations.")
        ref, groups, _ = self._reference(adata, covariates)
        held = {g.values: self._populations(g, adata) for g in groups}  # one population per dose with doses
        _, _, trained = self._reference(None, None)
        in_training = {(g.values, p) for g in trained for p in self._populations(g)}
        seen = sorted(
            _population_name(p, values, setup)
            for values, pops in held.items()
            for p in pops
            if (values, p) in in_training
        )
        if seen:
            raise ValueError(
                f"Perturbations {seen} were in the training data, so their errors understate those of new "
                "perturbations; calibrate on perturbations held out from training (drop them from `adata`)."
            )
        if covariates is None and setup.covariate_keys:  # predict in the groups the held-out cells come from
            covariates = {k: sorted({g.values[j] for g in groups}) for j, k in enumerate(setup.covariate_keys)}
        by_dose: dict[str | None, set[str]] = {}  # one prediction call per dose, as `dose` applies to every label
        for pops in held.values():
            for p in pops:
                by_dose.setdefault(p.dose_label(setup.delimiter), set()).add(
                    p.label(setup.delimiter, setup.control_value)
                )
        scores = []
        for dose, names in sorted(by_dose.items(), key=lambda kv: str(kv[0])):
            kwargs = predict_kwargs if dose is None else {**predict_kwargs, "dose": dose}
            pred, spread, cell_var = self._prediction_spread(
                sorted(names), covariates, reference, n_samples, seed, kwargs
            )
            for i in range(pred.n_obs):
                values = tuple(pred.obs[k].iloc[i] for k in setup.covariate_keys)
                rows = held.get(values, {}).get(setup.parse(str(pred.obs[key].iloc[i]), dose))
                if rows is None:  # not observed at this dose in this group of `adata`
                    continue
                observed = self._observed_mean(ref, rows)
                sigma = _scale(spread[i : i + 1], cell_var[i : i + 1], len(rows))[0]
                scores.append(np.abs(observed - np.asarray(pred.X[i], dtype=np.float64)) / sigma)
        if not scores:
            raise ValueError(
                "No held-out perturbation of `adata` was predicted in a covariate group where `adata` observed it; "
                "pass a `reference` holding the control cells of those groups."
            )
        calibration, table = conformal_calibration(np.concatenate(scores))
        self.uncertainty_calibration_ = calibration | {"perturbations": labels}
        return table

    # ------------------------------------------------------------------ helpers
    def _prediction_spread(self, perturbations, covariates, adata, n_samples, seed, predict_kwargs):
        """Point prediction, mean squared deviation of the flows' means from it, and the generated cells' variance."""
        self._flows()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 2:
            raise ValueError(f"`n_samples` must be an integer of at least 2, got {n_samples!r}.")
        pred = self.predict_perturbation(perturbations, covariates, adata, seed=seed, **predict_kwargs)
        parsed = self._parse_requests(perturbations, predict_kwargs.get("dose"))
        ref, groups, every = self._reference(adata, covariates)
        rng = np.random.default_rng(seed)
        spread = np.zeros(pred.shape)
        cell_var = np.zeros(pred.shape)
        control_noise: dict[tuple, np.ndarray] = {}
        anchor = predict_kwargs.get("anchor", True)
        states = self._perturbation_states(ref, groups, parsed, predict_kwargs.get("perturbation_type"), anchor, every)
        for i, state in enumerate(states):  # same order as predict_perturbation's rows
            center = np.asarray(pred.X[i], dtype=np.float64)
            values = state["group"].values
            if values not in control_noise:  # the prediction starts from the observed control mean: its noise
                control_noise[values] = self._observed_var(ref, state["group"].control) / len(state["group"].control)
            spread[i] += control_noise[values]
            for m in range(len(self._flows())):
                chunks = self._generate(ref, state, n_samples, rng, 10, 10_000, m, centre=False)
                cells = np.vstack([x for _, _, x in chunks])
                spread[i] += (cells.mean(0) - center) ** 2 / len(self._flows())
                cell_var[i] += cells.var(0, ddof=1) / len(self._flows())
        return pred, spread, cell_var

    def _observed_var(self, adata, rows) -> np.ndarray:
        """Per-gene variance of ``rows`` on the scale of ``predict_perturbation``'s ``X``."""
        total, squares = np.zeros(adata.n_vars), np.zeros(adata.n_vars)
        for log, raw, _ in self._row_chunks(adata, rows):
            x = np.asarray(raw if self.input_scale == INPUT_SCALES.COUNTS else log, dtype=np.float64)
            total += x.sum(0)
            squares += (x**2).sum(0)
        n = max(len(rows), 2)
        return np.maximum(squares - total**2 / len(rows), 0.0) / (n - 1)

    def _observed_mean(self, adata, rows) -> np.ndarray:
        """Mean of ``rows`` on the scale of ``predict_perturbation``'s ``X`` (mean counts, or mean log expression)."""
        if self.input_scale != INPUT_SCALES.COUNTS:
            return self._mean_log_expression(adata, rows)
        total = np.zeros(adata.n_vars)
        for _, raw, _ in self._row_chunks(adata, rows):
            total += raw.sum(0, dtype=np.float64)
        return total / len(rows)

    def _typical_cells(self) -> int:
        adata, groups, _ = self._reference(None, None)
        sizes = [len(rows) for g in groups for rows in g.observed.values()]
        return int(np.median(sizes)) if sizes else 100

    def _with_intervals(self, pred: AnnData, scale: np.ndarray, levels: list[float]) -> AnnData:
        return _with_intervals(pred, scale, levels, getattr(self, "uncertainty_calibration_", None))


def _population_name(p, values: tuple, setup) -> str:
    """``"g0 at 10 in L1"``: a perturbation, its dose and its covariate group, for error messages."""
    name = p.label(setup.delimiter, setup.control_value)
    if p.doses is not None:
        name += f" at {p.dose_label(setup.delimiter)}"
    return name + (f" in {', '.join(map(str, values))}" if setup.covariate_keys else "")


def conformal_calibration(scores: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """Split-conformal widths: the quantiles of ``scores`` at :data:`CALIBRATION_LEVELS`, and the table to return.

    The table gives each level's quantile and the share of scores the normal quantile would have covered.
    """
    quantiles = np.quantile(scores, CALIBRATION_LEVELS, method="higher")
    calibration = {
        "levels": list(CALIBRATION_LEVELS),
        "quantiles": quantiles.astype(float).tolist(),
        "n_scores": int(scores.size),
    }
    z = norm.ppf(0.5 + np.asarray(CALIBRATION_LEVELS) / 2)
    table = pd.DataFrame(
        {
            "level": CALIBRATION_LEVELS,
            "quantile": quantiles,
            "coverage_uncalibrated": [(scores <= q).mean() for q in z],
        }
    )
    return calibration, table


def _with_intervals(pred: AnnData, scale: np.ndarray, levels: list[float], calibration: dict | None) -> AnnData:
    """Add the interval layers at ``levels`` (calibrated quantiles, else normal), the scale and the uncertainty."""
    if calibration is None:
        logger.info("Intervals use normal quantiles: calibrate them on held-out data first.")
    X = np.asarray(pred.X, dtype=np.float64)
    for level in levels:
        if calibration is None:
            q = float(norm.ppf(0.5 + level / 2))
        else:
            q = float(np.interp(level, calibration["levels"], calibration["quantiles"]))
        lower, upper = interval_layers(level)
        pred.layers[lower] = (X - q * scale).astype(np.float32)
        pred.layers[upper] = (X + q * scale).astype(np.float32)
    pred.layers["scale"] = scale.astype(np.float32)
    pred.obs["uncertainty"] = np.sqrt((scale**2).mean(1))
    pred.uns["calibrated"] = calibration is not None
    return pred


def _scale(spread: np.ndarray, cell_var: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-gene scale of a predicted mean, floored so that genes generated constant do not divide by zero."""
    scale = np.sqrt(spread + cell_var / n_cells)
    floor = 1e-3 * max(float(np.median(scale)), 1e-6)
    return np.maximum(scale, floor)


def _check_levels(levels) -> list[float]:
    levels = [float(x) for x in np.atleast_1d(levels)]
    bad = [x for x in levels if not 0 < x < 1]
    if bad or not levels:
        raise ValueError(f"`levels` must be nominal coverages in (0, 1), e.g. (0.5, 0.8, 0.95); got {bad or levels}.")
    return levels
