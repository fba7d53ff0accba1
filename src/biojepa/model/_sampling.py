"""Cells sampled from the generative head: latents from the flows, expression decoded onto the input scale."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse

from .._constants import INPUT_SCALES
from ..data import get_matrix, normalize_expression
from ..nn import integrate
from ._reference import _CHUNK

#: Control cells carried by the flow to measure the mean change that generated cells are centred on.
_CENTRING_CELLS = 500
#: Bisection steps, the largest per-gene log shift and the fewest cells decoded per step, of the count correction
#: (:meth:`_count_correction`).
_COUNT_ROUNDS, _COUNT_SHIFT, _COUNT_CELLS = 8, 3.0, 1000


class SamplingMixin:
    """``sample_perturbation`` and ``sample_trajectory``: AnnData of generated cells, streamed in chunks."""

    def sample_perturbation(
        self,
        perturbations: str | Sequence[str],
        n_cells: int = 1000,
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        adata: AnnData | None = None,
        perturbation_type: str | None = None,
        dose: float | str | None = None,
        seed: int = 0,
        n_steps: int = 10,
        chunk_size: int = 10_000,
        anchor: bool = True,
        ensemble: bool = False,
    ) -> AnnData:
        """Sample perturbed cells: ``n_cells`` per (perturbation, covariate group), on the input scale.

        Each generated cell starts from a control cell of the group, drawn evenly (every control cell once before any
        twice, in random order): its target latent is carried by the flow (:meth:`train_generative`) conditioned on
        the predicted latent shift of the perturbation, and its expression is the control cell's own expression
        moved by the expression head's change along that path, centred so that the mean change of the cells is the
        point prediction of :meth:`predict_perturbation` (anchored with ``anchor``): the flow gives how cells spread
        around the predicted mean, not the mean itself, whose own error would otherwise add to that of the
        prediction. The centre is measured by carrying up to 500 of the group's control cells once. Each cell keeps
        the share of its departure from that mean chosen by :meth:`train_generative` on the populations its
        bootstrap flows left out (``model.generative_config_["spread"]``; 0: every cell gets the predicted change).
        Log-normalized input gives log-normalized cells; count input gives counts, by binomial thinning of the
        control cell's counts where expression falls and added Poisson counts where it rises, so that count noise
        stays that of real cells :cite:p:`gerard2020thinning`. Counts drawn around an expected count have a lower
        mean log than its log, so each gene's expected counts carry a shift (found by bisection on the centring
        cells) that gives the cells the predicted mean log expression, normalized by their source cells' libraries.
        Genes with few counts then get more counts on average than the expected counts of
        :meth:`predict_perturbation`, and libraries grow with them (on the simulated screen of the benchmarks, 1.44×
        the observed cells' against 1.19× without the shift).
        Cells are made ``chunk_size`` at a time, so memory holds one chunk and the result.

        Parameters
        ----------
        perturbations
            Labels such as ``"SGK1"`` or ``"KLF1+MAP2K6"``, as in :meth:`predict_perturbation`.
        n_cells
            Cells per perturbation and covariate group.
        covariates, adata, perturbation_type
            As in :meth:`predict_perturbation` (``adata``: the reference control cells; not modified).
        dose
            Dose of every perturbation, as in :meth:`predict_perturbation` (a model set up with ``dose_key``): the
            flow is conditioned on the predicted shift at that dose, and the cells are centred on the prediction at
            that dose.
        seed
            Seed of the control cells drawn, the flows drawn and the count noise.
        n_steps
            Midpoint steps of the flow's ODE.
        chunk_size
            Cells generated at a time.
        anchor
            Start from the anchored mean change, as :meth:`predict_perturbation` does by default.
        ensemble
            Draw each cell's flow from the whole ensemble (a predictive mixture over the flows' hypotheses, wider
            than any one population); ``False`` uses the flow trained on every population pair.

        Returns
        -------
        New AnnData: ``X`` the generated expression (sparse when the training data are), ``obs`` the perturbation
        column, the dose column (with ``dose_key``), the covariates and ``source_cell`` (the control cell it started
        from), ``obsm["X_biojepa"]`` the generated latent (target-encoder space).

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
        >>> cells = model.sample_perturbation(["g1+g2", "g3"], n_cells=50)
        >>> cells.shape, cells.obs["condition"].value_counts().tolist(), cells.obsm["X_biojepa"].shape
        ((100, 100), [50, 50], (100, 8))
        """
        self._check_if_trained(warn=True)
        _check_count(n_cells, "n_cells")
        _check_count(chunk_size, "chunk_size")
        self._flows()
        setup = self._setup()
        parsed = self._parse_requests(perturbations, dose)
        adata, groups, every = self._reference(adata, covariates)
        rng = np.random.default_rng(seed)
        parts, obs, latents = [], [], []
        member = None if ensemble else 0
        dose_column = [setup.dose_key] if setup.dose_key else []
        for state in self._perturbation_states(adata, groups, parsed, perturbation_type, anchor, every):
            for rows, z, X in self._generate(adata, state, n_cells, rng, n_steps, chunk_size, member):
                parts.append(self._stored(X)), latents.append(z)
                p = state["perturbation"]
                obs.append(pd.DataFrame({"_label": p.label(setup.delimiter, setup.control_value),
                                         "source_cell": np.asarray(adata.obs_names)[rows]}))  # fmt: skip
                if setup.dose_key:
                    obs[-1]["_dose"] = p.dose_label(setup.delimiter) or "1"
                for key, value in zip(setup.covariate_keys, state["group"].values, strict=True):
                    obs[-1][key] = value
        renames = {"_label": setup.perturbation_key, "_dose": setup.dose_key}
        frame = pd.concat(obs, ignore_index=True).rename(columns=renames)
        frame = frame[[setup.perturbation_key, *dose_column, *setup.covariate_keys, "source_cell"]]
        return self._cells_anndata(adata, parts, latents, frame, n_steps)

    def sample_trajectory(
        self,
        time_points: Sequence[float],
        n_cells: int = 1000,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        seed: int = 0,
        n_steps: int = 10,
        chunk_size: int = 10_000,
        ensemble: bool = False,
    ) -> AnnData:
        """Sample cells at later times: ``n_cells`` per covariate group and requested time.

        The source population of a covariate group is its cells at their latest observed time (among ``indices``),
        drawn evenly as in :meth:`sample_perturbation`;
        the flows carry their latents conditioned on the shift from that population's mean latent to the mean
        predicted latent at the requested time (:meth:`predict_trajectory` from the group's observations, with the
        share of its change that :meth:`backtest_trajectory` chose), and expression is decoded as in
        :meth:`sample_perturbation`: centred so that the cells' mean change is the point prediction (each chain's
        change from its anchor, averaged), with the share of the flow's per-cell departure that
        :meth:`backtest_trajectory`, run after :meth:`train_generative`, chose on held-back later times
        (``model.generative_config_["trajectory_spread"]``), or else the out-of-bag share of
        ``model.generative_config_["spread"]``.

        Parameters
        ----------
        time_points
            Times to sample at, in ``time_key`` units, after each group's latest observation.
        n_cells
            Cells per covariate group and time.
        adata, indices
            Observations (``None``: the training AnnData; not modified) and which of them form the context.
        seed, n_steps, chunk_size, ensemble
            As in :meth:`sample_perturbation`.

        Returns
        -------
        New AnnData: ``X`` the generated expression, ``obs`` the time, the covariates and ``source_cell``,
        ``obsm["X_biojepa"]`` the generated latent.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["hours"] = np.repeat([0.0, 12.0, 24.0, 36.0], 100)
        >>> bj.BioJEPA.setup_anndata(adata, time_key="hours")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> cells = model.sample_trajectory([48.0, 60.0], n_cells=30)
        >>> cells.shape, sorted(set(cells.obs["hours"]))
        ((60, 100), [48.0, 60.0])
        """
        self._check_if_trained(warn=True)
        _check_count(n_cells, "n_cells")
        _check_count(chunk_size, "chunk_size")
        self._flows()
        args = self.adata_manager.registry["setup_args"]
        time_key = args.get("time_key")
        if time_key is None:
            raise ValueError("This model was set up without `time_key`; `sample_trajectory` needs a time course.")
        adata = self.adata if adata is None else adata
        rng = np.random.default_rng(seed)
        parts, obs, latents = [], [], []
        keys = self._covariate_keys()
        member = None if ensemble else 0
        for state in self._time_states(adata, indices, time_points, time_key):
            for src, z, X in self._generate(state["enc"], state, n_cells, rng, n_steps, chunk_size, member):
                parts.append(self._stored(X)), latents.append(z)
                names = np.asarray(adata.obs_names)[state["enc_rows"][src]]
                frame = pd.DataFrame({time_key: state["time"], "source_cell": names})
                for key, value in zip(keys, state["values"], strict=True):
                    frame[key] = value
                obs.append(frame)
        frame = pd.concat(obs, ignore_index=True)[[time_key, *keys, "source_cell"]]
        return self._cells_anndata(adata, parts, latents, frame, n_steps)

    # ------------------------------------------------------------------ helpers
    def _time_states(self, adata, indices, time_points, time_key: str) -> Iterator[dict]:
        """Per (covariate group, requested time): the flows' source (the group's latest cells) and condition.

        Each state holds ``values`` (the group's covariates), ``rows`` (the group's rows of ``adata``), ``time``,
        ``enc`` (the encodable observations) and ``enc_rows`` (their rows of ``adata``), and, for
        :meth:`_generate`, ``control`` (the latest cells, rows of ``enc``), ``z_control`` and ``condition`` (the
        shift from their mean latent to the predicted one at the time, and that mean).
        """
        times = np.asarray(time_points, dtype=np.float64).ravel()
        if times.size == 0 or not np.isfinite(times).all():
            raise ValueError(f"`time_points` must be one or more finite times, got {time_points!r}.")
        if time_key not in adata.obs:
            raise KeyError(f"adata.obs lacks the column {time_key!r} the model was set up with.")
        rows = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        enc = self._encodable(adata, rows)
        t_all = adata.obs[time_key].to_numpy(dtype=np.float64)[rows]
        for values, group_rows in self._time_groups(adata[rows]).items():
            t = t_all[group_rows]
            last = t.max()
            if (times <= last).any():
                raise ValueError(
                    f"`time_points` {times[times <= last].tolist()} are not after the latest observation of covariate "
                    f"group {values} (at {last:g}); ask for later times, or pass `indices` ending earlier."
                )
            source = group_rows[t == last]
            z_source = self._target_latent(enc, source)
            predicted, changes = self._predicted_time_latents(adata, rows[group_rows], times)
            for tt, z1, d_log in zip(times, predicted, changes, strict=True):
                condition = np.concatenate([z1 - z_source.mean(0), z_source.mean(0)]).astype(np.float32)
                yield {"values": values, "rows": rows[group_rows], "time": float(tt), "enc": enc, "enc_rows": rows,
                       "control": source, "z_control": z_source, "condition": condition, "d_log": d_log}  # fmt: skip

    def _perturbation_states(
        self, adata, groups, parsed, perturbation_type, anchor: bool = True, every=None
    ) -> Iterator[dict]:
        """Per (covariate group, perturbation): control rows, their latents, the flow condition and the offset.

        ``d_log`` is the decoded mean change without anchoring; the offset is what anchoring adds to it in
        :meth:`predict_perturbation` (each member gene observed alone corrected to its observed change, and, with
        ``every`` covariate group of the reference, the change a gene observed in other groups carries over).
        :meth:`_generate` centres the generated cells on their sum, the point prediction.
        """
        results = self._compose(adata, groups, parsed, perturbation_type, 500, 0, anchor=False)
        offsets = [0.0] * len(results)
        if anchor:
            anchored = self._compose(adata, groups, parsed, perturbation_type, 500, 0, anchor=True, every=every)
            offsets = [a["d_log"] - r["d_log"] for a, r in zip(anchored, results, strict=True)]
        latents: dict[tuple, np.ndarray] = {}
        for r, offset in zip(results, offsets, strict=True):
            group = r["group"]
            if group.values not in latents:
                latents[group.values] = self._target_latent(adata, group.control)
            z_control = latents[group.values]
            shift = r["shift"].cpu().numpy()[0]
            condition = np.concatenate([shift, z_control.mean(0)]).astype(np.float32)
            yield {**r, "control": group.control, "z_control": z_control, "condition": condition, "offset": offset}

    @torch.inference_mode()
    def _generate(self, adata, state, n_cells, rng, n_steps, chunk_size, member: int | None = 0, centre: bool = True):
        """Yield ``(source rows, generated latents, expression)`` chunks of ``n_cells`` cells from one source state.

        ``member``: use that flow of the ensemble for every cell; ``None`` draws one per cell. ``centre``: centre a
        perturbation's cells on its point prediction (see :meth:`sample_perturbation`); ``False`` keeps the flow's
        own mean, whose disagreement across the ensemble is what :meth:`predict_uncertainty` measures.
        """
        fields = self._flows()
        control, z_control = np.asarray(state["control"]), state["z_control"]
        condition = torch.as_tensor(state["condition"], device=self.device)

        def carry(pick):
            members = np.full(len(pick), member) if member is not None else rng.integers(0, len(fields), len(pick))
            z0 = torch.as_tensor(z_control[pick], device=self.device)
            z1 = torch.empty_like(z0)
            for m in np.unique(members):
                sel = torch.as_tensor(np.flatnonzero(members == m), device=self.device)
                z1[sel] = integrate(fields[int(m)], z0[sel], condition.expand(len(sel), -1), n_steps)
            return z0, z1

        offset, spread = state.get("offset", 0.0), 1.0
        if centre and "d_log" in state:  # centre the cells on the point prediction: the flow gives their spread
            config = getattr(self, "generative_config_", {})
            spread = float(config.get("spread", 1.0))
            if "time" in state:  # cells at later times: the share the backtest chose, where it ran
                spread = float(config.get("trajectory_spread", spread))
            reference = np.sort(rng.choice(len(control), min(len(control), _CENTRING_CELLS), replace=False))
            z0, z1 = carry(reference)
            offset = offset + state["d_log"] - spread * self._head_change(z0, z1).mean(0)
            if self.input_scale == INPUT_SCALES.COUNTS:
                offset = offset + self._count_correction(adata, control[reference], z0, z1, rng, offset, spread)
        draw = _even_draw(len(control), n_cells, rng)
        for start in range(0, n_cells, chunk_size):
            pick = np.sort(draw[start : start + chunk_size])  # rows read in order
            z0, z1 = carry(pick)
            cells = self._decode_cells(adata, control[pick], z0, z1, rng, offset, spread)
            order = rng.permutation(len(pick))  # cells in random order: any first k of them are a random draw
            yield control[pick][order], z1.cpu().numpy()[order], cells[order]

    @torch.inference_mode()
    def _head_change(self, z0: torch.Tensor, z1: torch.Tensor) -> np.ndarray:
        """Change of log expression the expression head reads from ``z0`` to ``z1`` (``(n, G)``; broadcasts)."""
        head = self.module.expression_head
        return ((head(z1) - head(z0)).double() * self.module.gene_std.double()).cpu().numpy()

    def _count_correction(self, adata, rows, z0, z1, rng, offset, spread: float) -> np.ndarray:
        """Per-gene log shift that gives count cells the mean log expression they are centred on.

        Counts drawn around an expected count have a lower mean ``log1p`` than ``log1p`` of that count (the log is
        concave), most for genes with few counts: cells decoded from a change of mean log expression then miss it.
        The shift is found per gene by bisection in [-3, 3] on ``rows`` (the centring cells, each decoded several
        times so that at least 1,000 cells are): decode, normalize by each source cell's library (as the expected
        counts were made, so that each gene is corrected on its own), and move the shift up where the gene's mean
        log falls short of the target, down where it passes it. The target is each cell's moved log expression
        floored at zero: the source cells moved by the point prediction's change of mean log expression.
        """
        copies = -(-_COUNT_CELLS // len(rows))  # each cell decoded several times: the noise of one draw averages out
        rows, z0, z1 = np.repeat(rows, copies), z0.repeat_interleave(copies, 0), z1.repeat_interleave(copies, 0)
        change = spread * self._head_change(z0, z1)
        chunks = []  # (moved log expression, raw counts, libraries), read and moved once for every step
        for start, (log, raw, lib) in zip(range(0, len(rows), _CHUNK), self._row_chunks(adata, rows), strict=True):
            chunks.append((log + change[start : start + len(log)] + offset, raw, lib))
        target = sum(np.maximum(moved, 0.0).sum(0) for moved, _, _ in chunks) / len(rows)
        low, high = np.full_like(target, -_COUNT_SHIFT), np.full_like(target, _COUNT_SHIFT)
        for _ in range(_COUNT_ROUNDS):  # bisection: the mean log rises with the shift, in steps where counts are few
            middle = (low + high) / 2
            reached = np.zeros_like(target)
            for moved, raw, lib in chunks:
                counts = _draw_counts(moved + middle, raw, lib, rng)
                reached += normalize_expression(counts, INPUT_SCALES.COUNTS, lib).sum(0, dtype=np.float64)
            short = reached / len(rows) < target
            low, high = np.where(short, middle, low), np.where(short, high, middle)
        return (low + high) / 2

    @torch.inference_mode()
    def _decode_cells(self, adata, rows, z0, z1, rng, offset=0.0, spread: float = 1.0) -> np.ndarray:
        """Source cells' expression moved by ``spread`` times the head's change from ``z0`` to ``z1`` plus ``offset``.

        On the input scale.
        """
        change = spread * self._head_change(z0, z1)  # (n, G) log scale
        out = []
        for start, (log, raw, lib) in zip(range(0, len(rows), _CHUNK), self._row_chunks(adata, rows), strict=True):
            moved = log + change[start : start + len(log)] + offset
            if self.input_scale != INPUT_SCALES.COUNTS:
                out.append(np.maximum(moved, min(float(log.min()), 0.0)).astype(np.float32))
                continue
            out.append(_draw_counts(moved, raw, lib, rng))
        return np.vstack(out)

    def _stored(self, X: np.ndarray):
        """A chunk of generated cells as the training data are stored: CSR when they are sparse, else dense."""
        layer = self.adata_manager.registry["setup_args"]["layer"]
        return sparse.csr_matrix(X) if sparse.issparse(get_matrix(self.adata, layer)) else X

    def _cells_anndata(self, adata, parts, latents, obs: pd.DataFrame, n_steps: int) -> AnnData:
        X = sparse.vstack(parts, format="csr") if sparse.issparse(parts[0]) else np.vstack(parts)
        obs = obs.astype({c: "category" for c in obs.columns if obs[c].dtype == object})
        obs.index = [f"generated{i}" for i in range(len(obs))]
        cells = AnnData(X=X, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
        cells.obsm["X_biojepa"] = np.vstack(latents).astype(np.float32)
        cells.uns["method"] = "BioJEPA flow"
        cells.uns["n_steps"] = n_steps
        return cells


def _draw_counts(moved: np.ndarray, raw: np.ndarray, lib: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts ``raw`` moved to the expected counts of log expression ``moved`` (libraries ``lib``), as float32.

    Binomial thinning where the expected count falls, added Poisson counts where it rises: count noise stays that of
    real cells.
    """
    mean = np.maximum(np.expm1(moved), 0.0) * lib[:, None] / 1e4  # expected counts after the change
    counts = np.asarray(raw, dtype=np.float64)
    down = mean < counts
    keep = np.where(down, mean / np.maximum(counts, 1e-12), 1.0)
    thinned = rng.binomial(counts.astype(np.int64), np.clip(keep, 0.0, 1.0))
    added = rng.poisson(np.where(down, 0.0, mean - counts))
    return (thinned + added).astype(np.float32)


def _even_draw(n_source: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` source rows, each of the ``n_source`` used once before any is used twice (random orders, repeated).

    Drawing with replacement would repeat some source cells and leave others out even when there are enough: a
    generated population with duplicated cells is less diverse than the cells it stands for.
    """
    return np.concatenate([rng.permutation(n_source) for _ in range(-(-n // n_source))])[:n]


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
