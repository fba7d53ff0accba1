"""How far a time-course prediction is trusted: a backtest inside the training data chooses the share kept.

Extrapolating beyond the training time span is what :meth:`~biojepa.BioJEPA.predict_trajectory` is asked to do, and
the predictor can overshoot there (it never saw those spans). :meth:`~biojepa.BioJEPA.backtest_trajectory` measures
that on the training data itself: a copy of the model, with the same setup and settings, trains on every sequence's
observations but its latest third (a population: its latest time point) and predicts those from the rest. The share
of the predicted latent change from the anchor (the latest observation kept) whose decoded mean expression is
closest to the held-back observations becomes ``model.trajectory_change_scale_``, which ``predict_trajectory`` (and
through it ``sample_trajectory`` and the trajectory intervals) uses from then on.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import torch
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base._save_load import _initialize_model

from ._spread import SPREADS

logger = logging.getLogger(__name__)

#: Shares of the predicted change scored by the backtest.
CHANGE_SCALES = np.round(np.linspace(0.0, 1.0, 21), 2)


class TrajectoryBacktestMixin:
    """``backtest_trajectory`` of :class:`~biojepa.BioJEPA`."""

    def backtest_trajectory(self, max_epochs: int | None = None, batch_size: int = 128, seed: int = 0) -> pd.DataFrame:
        """Choose, by a backtest on the training data, how much of a predicted time-course change to keep.

        A copy of this model (same setup and settings) is trained on the training observations minus each
        sequence's latest third (at least two observations kept; a population without ``sample_key``: minus the
        latest time point of each covariate group observed at three times or more) and predicts the held-back
        observations from the rest with :meth:`predict_trajectory`. Each share in 0, 0.05, ..., 1 of the predicted
        latent change from the anchor is decoded, and the share whose mean log expression is closest (squared error
        over genes, averaged over held-back sequences and times) to the observed one is stored as
        ``model.trajectory_change_scale_``: :meth:`predict_trajectory` keeps that share of every predicted change
        from then on (0 carries the latest observation forward; 1 is the prediction as trained). The copy trains
        as long as this model did, unless ``max_epochs`` says otherwise, and draws from the global random state as
        :meth:`train` does (set ``scvi.settings.seed`` first for a reproducible share).

        Called after :meth:`train_generative` on a population time course (no ``sample_key``), the backtest also
        chooses how much of the flow's per-cell spread cells sampled at later times keep: the copy, predicting with
        the chosen share, trains one flow with this model's generative settings, samples the held-back times with
        :meth:`sample_trajectory` keeping each share in 0, 0.25, ..., 1 of its spread, and the share whose cells are
        closest to the held-back cells (energy distance on log expression) is stored as
        ``model.generative_config_["trajectory_spread"]``, which :meth:`sample_trajectory` uses instead of the
        out-of-bag ``"spread"`` (chosen inside the training span). A later :meth:`train_generative` drops it.

        Parameters
        ----------
        max_epochs
            Epochs of the copy; ``None``: as many as this model trained (or scvi-tools' heuristic).
        batch_size
            Minibatch size of the copy.
        seed
            Seed of the population coupling at prediction.

        Returns
        -------
        DataFrame with one row per share scored: ``change_scale`` and ``mse`` (mean squared error of the mean log
        expression over genes), ``chosen`` marking the stored share.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["hours"] = np.repeat([0.0, 12.0, 24.0, 36.0], 100)
        >>> bj.BioJEPA.setup_anndata(adata, time_key="hours")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> table = model.backtest_trajectory(max_epochs=1)
        >>> 0 <= model.trajectory_change_scale_ <= 1, int(table["chosen"].sum())
        (True, 1)
        """
        self._check_if_trained(warn=True)
        args = self.adata_manager.registry["setup_args"]
        time_key = args.get("time_key")
        if time_key is None:
            raise ValueError("This model was set up without `time_key`; `backtest_trajectory` needs a time course.")
        if args.get("perturbation_key") or args.get("modalities"):
            raise ValueError(
                "`backtest_trajectory` retrains the model on a subset of its AnnData; it supports time-course models "
                "set up with `setup_anndata` without `perturbation_key`."
            )
        held = self._held_back(time_key, args.get("sample_key"))
        if not held.any():
            raise ValueError(
                "No observation can be held back: a backtest needs a sequence with three or more observations (a "
                "population: a covariate group observed at three or more times)."
            )
        backtest = self._trained_copy(~held, max_epochs, batch_size)
        errors = backtest._backtest_errors(self.adata, ~held, held, time_key, args.get("sample_key"), seed)
        best = int(np.argmin(errors))
        self.trajectory_change_scale_ = float(CHANGE_SCALES[best])
        config = getattr(self, "generative_config_", None)
        if config and "fit" in config and not args.get("sample_key"):  # the spread of extrapolated cells too
            self._backtest_generative(backtest, held, time_key, seed)
        return pd.DataFrame({"change_scale": CHANGE_SCALES, "mse": errors, "chosen": np.arange(errors.size) == best})

    # ------------------------------------------------------------------ helpers
    def _backtest_generative(self, backtest, held: np.ndarray, time_key: str, seed: int) -> None:
        """Store the share of the flow's spread whose cells, sampled by ``backtest``, best match the held-back ones.

        ``backtest`` (the copy trained without the held-back rows) keeps this model's chosen change share and trains
        one flow with this model's generative settings; see :mod:`biojepa.model._spread`.
        """
        backtest.trajectory_change_scale_ = self.trajectory_change_scale_
        config = self.generative_config_
        backtest.train_generative(
            n_ensemble=1, n_hidden=config["n_hidden"], n_layers=config["n_layers"], seed=seed, **config["fit"]
        )
        distances = backtest._backtest_spread(self.adata, ~held, held, time_key, seed)
        config["trajectory_spread"] = float(SPREADS[int(np.argmin(distances))])
        logger.info(
            "Backtest: cells sampled at later times keep %.2f of the flow's per-cell spread (energy distance %s for "
            "shares %s).",
            config["trajectory_spread"],
            np.round(distances, 4).tolist(),
            list(SPREADS),
        )

    def _held_back(self, time_key: str, sample_key: str | None) -> np.ndarray:
        """Training rows held back: each sequence's latest third, or each population's latest time."""
        obs = self.adata.obs
        t = obs[time_key].to_numpy(dtype=np.float64)
        held = np.zeros(self.adata.n_obs, bool)
        if sample_key:
            for rows in obs.groupby(sample_key, observed=True).indices.values():
                order = rows[np.argsort(t[rows], kind="stable")]
                k = int(np.ceil(len(order) / 3))
                if len(order) - k >= 2:
                    held[order[len(order) - k :]] = True
            return held
        for rows in self._time_groups(self.adata).values():
            times = np.unique(t[rows])
            if times.size >= 3:
                held[rows[t[rows] == times[-1]]] = True
        return held

    def _trained_copy(self, keep: np.ndarray, max_epochs: int | None, batch_size: int):
        """A new model with this one's setup and settings, trained on the ``keep`` rows of its AnnData."""
        subset = self.adata[keep].copy()
        type(self).setup_anndata(subset, **self.adata_manager.registry["setup_args"])
        init = {"init_params_": copy.deepcopy(self.init_params_)}
        model = _initialize_model(type(self), subset, None, init, None)  # as scvi-tools' `load` builds a model
        if max_epochs is None:
            history = getattr(self, "history_", None) or {}
            max_epochs = len(history.get("train_loss", [])) or get_max_epochs_heuristic(subset.n_obs)
        model.train(max_epochs=max_epochs, batch_size=batch_size, enable_progress_bar=False)
        return model

    @torch.inference_mode()
    def _backtest_errors(self, adata, context, held, time_key: str, sample_key: str | None, seed: int) -> np.ndarray:
        """Squared error of the held-back mean log expression for every share in ``CHANGE_SCALES``."""
        t = adata.obs[time_key].to_numpy(dtype=np.float64)
        units = (  # rows of each sequence, or of each covariate group of a population
            list(adata.obs.groupby(sample_key, observed=True).indices.values())
            if sample_key
            else list(self._time_groups(adata).values())
        )
        errors = np.zeros(CHANGE_SCALES.size)
        n = 0
        for rows in units:
            target_rows = rows[held[rows]]
            if target_rows.size == 0:
                continue
            times = np.unique(t[target_rows])
            pred = self._trajectory_latents(adata, rows[context[rows]], times, None, seed, None, 1.0)
            log_anchor = self._log_expression(pred.enc, pred.anchors)  # (S, G)
            observed = self._log_expression(self._encodable(adata, target_rows), np.arange(target_rows.size))
            for q, tt in enumerate(times):
                goal = observed[np.isclose(t[target_rows], tt)].mean(0)
                z0, z1 = pred.z_anchor, pred.z_pred[:, q]
                for i, scale in enumerate(CHANGE_SCALES):
                    mean = (log_anchor + self._head_change(z0, z0 + float(scale) * (z1 - z0))).mean(0)
                    errors[i] += float(np.mean((mean - goal) ** 2))
                n += 1
        return errors / max(n, 1)
