"""Time courses of :class:`~biojepa.BioJEPA`: Δt-conditioned prediction and rollouts of sequences and populations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from .._constants import EXTRA_KEYS, INPUT_SCALES
from ..data import Sequences, check_time, coupled_sequences, get_matrix, paired_sequences, time_scale

_CHUNK = 1024  # sequences per predictor pass


class _Predicted(NamedTuple):
    """Predicted latents of sequences: what :meth:`TrajectoryMixin.predict_trajectory` decodes."""

    enc: AnnData  # the encodable observations (rows of ``adata``)
    rows: np.ndarray  # their rows of ``adata``
    anchors: np.ndarray  # (S,) each sequence's latest observation, a row of ``enc``
    z_anchor: torch.Tensor  # (S, d) its target-encoder latent
    z_pred: torch.Tensor  # (S, Q, d) the predicted latent at each requested time
    names: list[str]  # sequence names
    name_key: str  # the sample key, or "chain"


class TrajectoryMixin:
    """Methods of :class:`~biojepa.BioJEPA` that need a registered ``time_key``."""

    def _time_module_kwargs(self) -> dict:
        """Time step and pairing of the registered time course (empty without a ``time_key``)."""
        if EXTRA_KEYS.TIME not in self.adata_manager.data_registry:
            return {}
        times = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.TIME)).ravel()
        paired = EXTRA_KEYS.SAMPLE in self.adata_manager.data_registry
        span = float(np.ptp(times)) if times.size else 0.0
        if paired:
            samples = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.SAMPLE)).ravel()
            span = float(pd.Series(times).groupby(samples).agg(np.ptp).max())
        return {"time_scale": time_scale(times), "time_span": span, "paired": paired}

    @torch.inference_mode()
    def predict_trajectory(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        time_points: Sequence[float] | None = None,
        *,
        rollout_step: float | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        change_scale: float | None = None,
    ) -> AnnData:
        """Predict the states of sequences (samples) or populations at the requested times.

        The observed time points of each sequence are the predictor's context; each requested time is a query
        whose RoPE position is its time since the sequence's first observation, so predictions are conditioned
        on Δt and may interpolate or extrapolate. A query's context is limited to the points within the longest
        time span of a training sequence before it (at least the latest point): the predictor is not asked about
        spans it never saw; ``rollout_step`` reaches further in steps. With a registered ``sample_key`` a sequence is
        one sample's observations; without it, a population: the cells of the latest observed time point are traced back
        through earlier time points by optimal-transport coupling (as in training), and each chain is rolled
        forward.

        Expression is decoded relative to each sequence's last observed cell (its anchor): the anchor's
        observed expression plus the expression head's change from the anchor's latent to the predicted one,
        returned on the input scale (counts stay counts). The predicted latent keeps ``change_scale`` of its change
        from the anchor's latent: the share that :meth:`backtest_trajectory` found to predict held-back later
        observations of the training data best, or all of it before a backtest.

        Parameters
        ----------
        adata
            AnnData with the model's genes and the ``time_key`` column (and ``sample_key`` where registered);
            ``None`` uses the training AnnData. Samples never seen in training are fine.
        indices
            Observations forming the context; ``None`` uses all.
        time_points
            Times to predict, in ``time_key`` units.
        rollout_step
            If given, roll out: predict the next point ``rollout_step`` after the last observed one, add it to the
            context, and repeat up to each requested time (which is then predicted from the extended context).
            ``None`` predicts every requested time directly from the observations.
        seed
            Seed of the population coupling.
        batch_size
            Minibatch size for encoding.
        change_scale
            Share in [0, 1] of the predicted latent change from each anchor that is kept (0: the anchor carried
            forward); ``None`` uses ``model.trajectory_change_scale_`` set by :meth:`backtest_trajectory`, or 1.

        Returns
        -------
        AnnData with one row per sequence and requested time: ``X`` the predicted expression on the input
        scale, ``obsm["X_biojepa"]`` the predicted latent, ``obs`` the sample (``"chain"`` for populations),
        the time, the covariates and the ``"anchor"`` observation.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["subject"] = np.repeat([f"s{i}" for i in range(100)], 4)
        >>> adata.obs["hours"] = np.tile([0.0, 12.0, 24.0, 36.0], 100)
        >>> bj.BioJEPA.setup_anndata(adata, time_key="hours", sample_key="subject")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> pred = model.predict_trajectory(indices=np.arange(8), time_points=[48.0, 60.0])
        >>> pred.shape, list(pred.obs.columns[:2])
        ((4, 100), ['subject', 'hours'])
        """
        self._check_if_trained(warn=True)
        args = self.adata_manager.registry["setup_args"]
        time_key = args.get("time_key")
        if time_key is None:
            raise ValueError(
                "This model was set up without a time course; call `BioJEPA.setup_anndata(adata, time_key=..., "
                "sample_key=...)` before creating the model."
            )
        times_req = np.asarray([] if time_points is None else time_points, dtype=np.float64).ravel()
        adata = self.adata if adata is None else adata
        pred = self._trajectory_latents(adata, indices, times_req, rollout_step, seed, batch_size, change_scale)
        enc, rows, anchors, z_pred = pred.enc, pred.rows, pred.anchors, pred.z_pred
        X = self._anchored_expression(enc, anchors, pred.z_anchor, z_pred)  # (S, Q, G)
        S, Q = z_pred.shape[:2]
        seq_names, name_key = pred.names, pred.name_key
        cov_keys = self._covariate_keys()
        cov = adata.obs.iloc[rows[anchors]][cov_keys].astype(str).to_numpy() if cov_keys else np.zeros((S, 0))
        obs = pd.DataFrame(
            {
                name_key: np.repeat(seq_names, Q),
                time_key: np.tile(times_req, S),
                **{k: np.repeat(cov[:, i], Q) for i, k in enumerate(cov_keys)},
                "anchor": np.repeat(np.asarray(adata.obs_names)[rows[anchors]], Q),
            }
        )
        obs.index = [f"{n}@{tt:g}" for n, tt in zip(obs[name_key], obs[time_key], strict=True)]
        return AnnData(
            X=X.reshape(S * Q, -1).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=adata.var_names.copy()),
            obsm={"X_biojepa": z_pred.reshape(S * Q, -1).cpu().numpy().astype(np.float32)},
        )

    # ------------------------------------------------------------------ helpers
    @torch.inference_mode()
    def _trajectory_latents(
        self, adata: AnnData, indices, times_req: np.ndarray, rollout_step, seed: int, batch_size, change_scale
    ) -> _Predicted:
        """The sequences of ``adata[indices]``, their anchors' latents and their predicted latents at ``times_req``.

        What :meth:`predict_trajectory` decodes, for the methods that need the latents only.
        """
        if times_req.size == 0 or not np.isfinite(times_req).all():
            raise ValueError(f"`time_points` must be one or more finite times, got {times_req.tolist()!r}.")
        if rollout_step is not None and not rollout_step > 0:
            raise ValueError(f"`rollout_step` must be a positive time, got {rollout_step!r}.")
        scale = self._change_scale(change_scale)
        args = self.adata_manager.registry["setup_args"]
        time_key, sample_key = args["time_key"], args.get("sample_key")
        for key in [time_key] + ([sample_key] if sample_key else []):
            if key not in adata.obs:
                raise KeyError(f"adata.obs lacks the column {key!r} the model was set up with.")
        check_time(adata, time_key)
        rows = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if rows.size == 0:
            raise ValueError("`indices` selects no observation.")
        enc = self._encodable(adata, rows)
        t = adata.obs[time_key].to_numpy(dtype=np.float64)[rows]
        z_ctx = torch.as_tensor(self.get_latent_representation(enc, batch_size=batch_size), device=self.device)
        z_tgt = torch.as_tensor(self._target_latent(enc, None, batch_size), device=self.device)
        cond, group = self._cell_condition(enc)
        if sample_key:
            labels = adata.obs[sample_key].astype(str).to_numpy()[rows]
            codes, names = pd.factorize(labels)
            seqs = paired_sequences(torch.as_tensor(codes), torch.as_tensor(t), min_length=1)
            seq_names = [names[codes[int(c)]] for c in seqs.cells[seqs.first_token()].tolist()]
            name_key = sample_key
        else:
            seqs = self._population_chains(t, group, z_tgt, seed)
            seq_names = [f"chain{i}" for i in range(len(seqs.lengths))]
            name_key = "chain"
        vis = list(seqs.cells.split(seqs.lengths.tolist()))
        first = np.array([t[v.cpu().numpy()].min() for v in vis])
        early = times_req[times_req < first.max() - 1e-9]
        if early.size:
            s = int(np.argmax(first))
            raise ValueError(
                f"`time_points` {early.tolist()} come before the first observation of {name_key} "
                f"{seq_names[s]!r} (at {first[s]:g}); BioJEPA predicts forward from observations: ask for times from "
                f"{first.max():g} on, or pass `indices` selecting sequences observed earlier."
            )
        z_pred = self._predict_times(vis, z_ctx, z_tgt, t, cond, times_req, rollout_step)  # (S, Q, d)
        anchors = np.array([int(v[-1]) for v in vis])
        z_anchor = z_tgt[anchors]
        z_pred = z_anchor[:, None] + scale * (z_pred - z_anchor[:, None])
        return _Predicted(enc, rows, anchors, z_anchor, z_pred, seq_names, name_key)

    def _change_scale(self, change_scale: float | None) -> float:
        """``change_scale`` checked, or the backtested one (1 before a backtest)."""
        if change_scale is None:
            stored = getattr(self, "trajectory_change_scale_", None)
            return 1.0 if stored is None else float(stored)
        value = float(change_scale)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"`change_scale` must lie in [0, 1], got {change_scale!r}.")
        return value

    def _cell_condition(self, enc: AnnData) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Per-cell predictor condition and covariate-group code of a registered AnnData."""
        registry = self.adata_manager.data_registry
        dev = self.device
        batch = torch.as_tensor(np.asarray(self.get_from_registry(enc, REGISTRY_KEYS.BATCH_KEY)), device=dev)
        cats = conts = None
        if REGISTRY_KEYS.CAT_COVS_KEY in registry:
            cats = torch.as_tensor(np.asarray(self.get_from_registry(enc, REGISTRY_KEYS.CAT_COVS_KEY)), device=dev)
        if REGISTRY_KEYS.CONT_COVS_KEY in registry:
            cont = np.asarray(self.get_from_registry(enc, REGISTRY_KEYS.CONT_COVS_KEY), dtype=np.float32)
            conts = torch.as_tensor(cont, device=dev)
        return self.module.condition(batch, cats, conts), self.module.group_index(batch, cats)

    def _population_chains(self, t: np.ndarray, group: torch.Tensor, z: torch.Tensor, seed: int) -> Sequences:
        """Chains ending at each cell of its group's latest time point, traced back by OT coupling."""
        time = torch.as_tensor(t, device=z.device)
        latest = torch.zeros_like(time)
        for g in torch.unique(group):
            latest[group == g] = time[group == g].max()
        ends = time == latest
        gen = torch.Generator(device="cpu").manual_seed(seed)
        seqs = coupled_sequences(time.cpu(), group.cpu(), z.cpu(), ends=ends.cpu(), generator=gen)
        covered = torch.zeros(len(t), dtype=torch.bool)
        covered[seqs.cells[torch.cumsum(seqs.lengths, 0) - 1]] = True
        single = (ends.cpu() & ~covered).nonzero().view(-1)  # groups observed at one time point only
        cells = torch.cat([seqs.cells, single]).to(z.device)
        lengths = torch.cat([seqs.lengths, torch.ones_like(single)]).to(z.device)
        return Sequences(cells, lengths)

    def _predict_times(self, vis, z_ctx, z_tgt, t, cond, times_req, rollout_step) -> torch.Tensor:
        """``(S, Q, n_latent)`` predicted target latents of each sequence at the requested times."""
        S = len(vis)
        vis_z = [torch.stack([z_ctx[v], z_tgt[v]]) for v in vis]  # (2, L, d): context and target latents
        vis_t = [torch.as_tensor(t[v.cpu().numpy()], device=z_ctx.device) for v in vis]
        seq_cond = None if cond is None else cond[torch.stack([v[-1] for v in vis])]
        if rollout_step is not None:
            last = torch.stack([vt.max() for vt in vis_t])
            n_steps = int(np.ceil((times_req.max() - float(last.min())) / rollout_step - 1e-9))
            for k in range(1, max(n_steps, 0) + 1):
                step_t = last + k * rollout_step  # (S,)
                due = step_t < float(times_req.max()) - 1e-9
                if not bool(due.any()):
                    break
                z_next = self._query(vis_z, vis_t, seq_cond, step_t[:, None])[:, 0]
                for s in due.nonzero().view(-1).tolist():
                    vis_z[s] = torch.cat([vis_z[s], z_next[s : s + 1][None].expand(2, -1, -1)], 1)
                    vis_t[s] = torch.cat([vis_t[s], step_t[s : s + 1]])
        out = []
        for q in times_req:
            query_t = torch.full((S, 1), float(q), device=z_ctx.device, dtype=torch.float64)
            keep = [
                vt < q - 1e-9 if rollout_step is not None else torch.ones_like(vt, dtype=torch.bool) for vt in vis_t
            ]
            keep = [k if bool(k.any()) else torch.ones_like(k) for k in keep]  # a query before every point
            out.append(
                self._query(
                    [z[:, k] for z, k in zip(vis_z, keep, strict=True)],
                    [vt[k] for vt, k in zip(vis_t, keep, strict=True)],
                    seq_cond,
                    query_t,
                )
            )
        return torch.cat(out, 1)

    def _query(self, vis_z, vis_t, seq_cond, query_t: torch.Tensor) -> torch.Tensor:
        """Run the predictor on sequences (observed latents and times) with one query each, ``query_t`` ``(S, 1)``.

        The context of a query is the sequence's points within the longest time span seen in training before the
        query (at least the latest point), so the predictor is never asked about spans it was not trained on.
        """
        pred = self.module.predictor
        scale = float(self.module.time_scale)
        span = float(self.module.time_span)
        if span > 0:
            keep = [vt >= float(q) - span - 1e-9 for vt, q in zip(vis_t, query_t[:, 0], strict=True)]
            keep = [k if bool(k.any()) else vt == vt.max() for k, vt in zip(keep, vis_t, strict=True)]
            vis_z = [z[:, k] for z, k in zip(vis_z, keep, strict=True)]
            vis_t = [vt[k] for vt, k in zip(vis_t, keep, strict=True)]
        results = []
        for start in range(0, len(vis_z), _CHUNK):
            idx = range(start, min(start + _CHUNK, len(vis_z)))
            z_parts, pos_parts, q_parts, lengths = [], [], [], []
            for s in idx:
                first = vis_t[s].min()
                ctx_z = vis_z[s][0]
                z_parts += [ctx_z, ctx_z.new_zeros(1, ctx_z.shape[1])]
                pos_parts += [(vis_t[s] - first) / scale, (query_t[s] - first) / scale]
                q_parts += [torch.zeros(len(vis_t[s]), dtype=torch.bool), torch.ones(1, dtype=torch.bool)]
                lengths.append(len(vis_t[s]) + 1)
            query = torch.cat(q_parts).to(query_t.device)
            lengths_t = torch.as_tensor(lengths, device=query_t.device)
            cond = None
            if seq_cond is not None:
                cond = torch.repeat_interleave(seq_cond[list(idx)], lengths_t, 0)
            segment = pred.time_segment(torch.cat(z_parts), query, lengths_t, torch.cat(pos_parts).float(), cond)
            out = pred.to_latent(pred([segment])[0][query])
            results.append(out[:, None])
        return torch.cat(results)

    def _anchored_expression(self, enc: AnnData, anchors: np.ndarray, z_anchor, z_pred) -> np.ndarray:
        """Anchor's expression plus the head's change from its latent to each prediction, on the input scale."""
        log_anchor = self._log_expression(enc, anchors)  # (S, G)
        X = log_anchor[:, None] + self._head_change(z_anchor[:, None], z_pred)  # (S, Q, G)
        if self.input_scale == INPUT_SCALES.COUNTS:
            counts = get_matrix(enc, self.adata_manager.registry["setup_args"]["layer"])[anchors]
            counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
            lib = np.maximum(counts.sum(1), 1e-8)
            if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
                lib = np.asarray(self.get_from_registry(enc, REGISTRY_KEYS.SIZE_FACTOR_KEY)).ravel()[anchors]
            X = np.maximum(np.expm1(X), 0.0) * lib[:, None, None] / 1e4  # log1p below 0 is no count
        return X
