"""Generative head of a multi-modal :class:`~biojepa.BioJEPA`: flows that sample a modality (protein, ATAC) from RNA.

:meth:`~biojepa.BioJEPA.predict_modality` returns one profile per cell, the mean of its neighbours in the joint
latent. The flows here turn that point into a distribution: conditioned on a cell's RNA-only latent and its point
prediction, they transport noise of the size of the point prediction's error to the measured profiles of cells
like it, so :meth:`~biojepa.BioJEPA.sample_modality` draws profiles of the target modality for cells that have RNA
only, and ``predict_modality(..., levels=...)`` adds per-cell intervals. The flows live in the target's own
(normalized) feature space rather than in the joint latent: a latent decoded back to the modality keeps only what
the decoder explains, and the intervals must cover measured values, noise included.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from torch import nn

from .._constants import MODULE_KEYS
from ..nn import VelocityField, flow_matching_loss, integrate
from ._multiomics import _knn_average
from ._sampling import _check_count
from ._uncertainty import _check_levels, interval_layers

logger = logging.getLogger(__name__)


class ModalityFlowMixin:
    """``train_generative`` for models set up with :meth:`setup_mudata`, and ``sample_modality``."""

    def _train_modality_flows(
        self,
        target: str | None,
        max_epochs: int,
        batch_size: int,
        n_ensemble: int,
        n_hidden: int,
        n_layers: int,
        lr: float,
        weight_decay: float,
        sigma: float,
        max_cells: int,
        n_neighbors: int,
        seed: int,
    ) -> pd.DataFrame:
        """Fit the flow ensemble RNA → ``target`` on the training cells that measured ``target``."""
        target = self._flow_target(target)
        _check_count(n_neighbors, "n_neighbors")
        i = self.module.modality_index(target)
        rng = np.random.default_rng(seed)
        z_rna, values, z_ref, ref_values, rows = self._modality_training_cells(i, target, max_cells, rng)
        if len(rows) < 2:
            raise ValueError(f"The training data has {len(rows)} cell(s) with {target!r}; the flows need at least 2.")
        # Point predictions of the training cells without their own profile: a query never finds itself.
        point = _knn_average(z_rna, z_ref, ref_values, n_neighbors, rows)
        scale = (values - point).std(0).clamp(min=1e-3)  # (F,) the point prediction's error, in z-score units
        condition = torch.cat([point, z_rna], dim=1)  # (N, F + d): the point first, the velocity's base
        n_x = values.shape[1]
        # A fifth of the cells (at least one) is kept aside: each flow stops where their energy score is best.
        order = rng.permutation(len(rows))
        held, fit_rows = order[: max(1, len(rows) // 5)], order[max(1, len(rows) // 5) :]
        check = (values[held], condition[held])
        steps = max(1, int(np.ceil(len(fit_rows) / batch_size))) * max_epochs
        fields, losses, stops = nn.ModuleList(), [], []
        for member in range(n_ensemble):
            torch.manual_seed(seed * 1000 + member)
            gen = torch.Generator().manual_seed(seed * 1000 + member)
            picked = fit_rows if member == 0 else fit_rows[np.random.default_rng([seed, member]).integers(
                0, len(fit_rows), len(fit_rows))]  # fmt: skip
            field = VelocityField(n_x, n_x + z_rna.shape[1], n_hidden, n_layers).to(self.device)
            loss, stop = _fit(
                field, values[picked], condition[picked], scale, steps, batch_size, lr, weight_decay, sigma, gen, check
            )
            losses.append(loss), stops.append(stop)
            fields.append(field.eval())
        self._flow_fields = fields
        table = pd.DataFrame(
            {
                "kind": ["modality"],
                "group": [None],
                "source": ["rna"],
                "target": [target],
                "n_source": [len(rows)],
                "n_target": [len(rows)],
            }  # fmt: skip
        )
        self.generative_config_ = {
            "target": target,
            "n_latent": n_x,  # width of the flows' state (the target's features); the name load() reads
            "n_condition": n_x + z_rna.shape[1],
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "n_ensemble": n_ensemble,
            "n_neighbors": n_neighbors,
            "scale": scale.cpu().tolist(),
            "pairs": table.to_dict("list"),
            "final_loss": losses,
            "stopped_at": stops,
            "steps": steps,
        }
        logger.info(
            "Generative head: %d flows RNA → %s on %d cells, stopped at steps %s of %d.", n_ensemble, target, len(rows),
            stops, steps,
        )  # fmt: skip
        return table

    def _flow_target(self, target: str | None) -> str:
        mods, _ = self._modality_specs()
        others = [kind for kind in mods if kind != "rna"]
        if target is None:
            if len(others) != 1:
                raise ValueError(f"The model has the modalities {others} besides RNA; pass `target=` to pick one.")
            return others[0]
        if target not in others:
            raise ValueError(f"`target` must be one of the model's modalities besides RNA, {others}; got {target!r}.")
        return target

    @torch.inference_mode()
    def _modality_training_cells(self, i: int, target: str, max_cells: int, rng: np.random.Generator):
        """RNA-only latents and z-scored ``target`` values of (up to ``max_cells``) training cells that measured it.

        Also every such cell's joint latent and values (the neighbours of :meth:`predict_modality`) and the positions
        of the picked cells among them.
        """
        start, stop = self.module.modality_offsets[i], self.module.modality_offsets[i + 1]
        self.module.eval()
        z_rna, z_ref, values = [], [], []
        for tensors in self._make_data_loader(adata=self.adata):
            inputs = self.module._get_inference_input(tensors)
            x, present = self.module.normalize_inputs(**inputs)
            keep = present[:, i]
            z_ref.append(self.module.inference(**inputs, masked=False)[MODULE_KEYS.Z][keep])
            z_rna.append(self.module.inference(**inputs, masked=False, drop=[target])[MODULE_KEYS.Z][keep])
            values.append(x[keep, start:stop])
        z_rna, z_ref, values = torch.cat(z_rna), torch.cat(z_ref), torch.cat(values)
        rows = np.arange(len(values))
        if len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        picked = torch.as_tensor(rows, device=values.device)
        return z_rna[picked].clone(), values[picked].clone(), z_ref.clone(), values.clone(), rows

    def _modality_flows(self, target: str) -> tuple[nn.ModuleList, dict]:
        config = getattr(self, "generative_config_", None) or {}
        if config.get("target") is None:
            raise ValueError("The generative head is not trained; call `model.train_generative()` first.")
        if config["target"] != target:
            raise ValueError(
                f"The generative head samples {config['target']!r}, not {target!r}; call "
                f"`model.train_generative(target={target!r})`."
            )
        return self._flows(), config

    @torch.inference_mode()
    def sample_modality(
        self,
        data: AnnData | MuData | None = None,
        target: str | None = None,
        n_samples: int = 1,
        indices: Sequence[int] | None = None,
        n_steps: int = 10,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> AnnData:
        """Sample profiles of a modality (e.g. protein) for cells from their RNA, with the flows of the generative head.

        Each cell is embedded from RNA alone, as in :meth:`predict_modality`; its point prediction (the mean profile
        of its neighbours among the training cells) and its latent condition the flows, which transport Gaussian
        noise of the size of the point prediction's error on the training cells (each cell's own profile left out)
        to profiles like those measured. Sample ``k`` of a cell comes from flow ``k mod n_ensemble``, so the samples
        carry the ensemble's disagreement as well as the cell-to-cell spread. A sampled value below the lowest value
        of its feature in the training cells is raised to it (log1p CP10k is never negative, for one).

        Parameters
        ----------
        data
            A MuData like the training one, or an AnnData of RNA (the model's genes); ``None``: the training data.
        target
            The modality the head was trained for (``None``: that one).
        n_samples
            Profiles per cell.
        indices
            Cells to sample for; ``None``: all.
        n_steps
            Midpoint steps of the ODE solver.
        seed
            Seed of the noise.
        batch_size
            Cells per minibatch; sampling streams over them.

        Returns
        -------
        AnnData with ``n_samples`` rows per cell (cells × samples, cell-major) and the target's features, on the
        scale of :meth:`predict_modality` (centred log-ratio for protein counts, log1p CP10k for ATAC counts);
        ``obs["cell"]`` names the cell and ``obs["sample"]`` numbers its samples; ``obsm["X_biojepa"]`` holds the
        cell's RNA-only latent.

        Examples
        --------
        >>> import numpy as np, anndata as ad, mudata as md, biojepa as bj
        >>> rng = np.random.default_rng(0)
        >>> rna = ad.AnnData(rng.poisson(2.0, (60, 40)).astype(np.float32))
        >>> adt = ad.AnnData(rng.poisson(20.0, (60, 6)).astype(np.float32))
        >>> mdata = md.MuData({"rna": rna, "adt": adt})
        >>> bj.BioJEPA.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "adt"})
        >>> model = bj.BioJEPA(mdata, n_latent=8)
        >>> model.train(max_epochs=2, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> cells = model.sample_modality(rna, n_samples=3)
        >>> cells.shape, cells.obs["sample"].tolist()[:4]
        ((180, 6), [0, 1, 2, 0])
        """
        self._check_if_trained(warn=True)
        if not self._multimodal:
            raise ValueError("This model was set up with `setup_anndata`; `sample_modality` needs `setup_mudata`.")
        _check_count(n_samples, "n_samples")
        data = self.adata if data is None else data
        mdata = self._as_mudata(data) if isinstance(data, AnnData) else self._validate_anndata(data)
        config = getattr(self, "generative_config_", None) or {}
        target = self._flow_target(target if target is not None else config.get("target"))
        self._modality_flows(target)
        i = self.module.modality_index(target)
        batches = self._modality_latents(mdata, target, indices, batch_size)
        reference = self._modality_reference(i, batch_size)
        parts, latents = [], []
        for z, samples in self._modality_samples(batches, target, n_samples, n_steps, seed, reference):
            parts.append(samples.reshape(-1, samples.shape[-1]).cpu().numpy())
            latents.append(z.repeat_interleave(n_samples, 0).cpu().numpy())
        names = np.asarray(mdata.obs_names)
        rows = np.arange(len(names)) if indices is None else np.asarray(indices)
        mods, _ = self._modality_specs()
        obs = pd.DataFrame(
            {"cell": np.repeat(names[rows], n_samples), "sample": np.tile(np.arange(n_samples), len(rows))},
            index=[f"{c}-{s}" for c in names[rows] for s in range(n_samples)],
        )
        out = AnnData(
            X=np.concatenate(parts).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=self.adata.mod[mods[target]].var_names.copy()),
        )
        out.obsm["X_biojepa"] = np.concatenate(latents)
        return out

    @torch.inference_mode()
    def _modality_latents(self, mdata, target: str, indices, batch_size) -> list[torch.Tensor]:
        """RNA-only latents (``target`` hidden) of the cells of ``mdata``, one tensor per minibatch."""
        self.module.eval()
        out = []
        for tensors in self._make_data_loader(adata=mdata, indices=indices, batch_size=batch_size):
            inputs = self.module._get_inference_input(tensors)
            out.append(self.module.inference(**inputs, masked=False, drop=[target])[MODULE_KEYS.Z])
        return out

    def _modality_samples(self, batches, target, n_samples, n_steps, seed, reference):
        """Per minibatch of RNA-only latents ``(B, d)``: the latents and sampled profiles ``(B, n_samples, F)``.

        ``reference``: the training cells' latents and ``target`` values of :meth:`_modality_reference`.
        """
        fields, config = self._modality_flows(target)
        _check_count(n_steps, "n_steps")
        i = self.module.modality_index(target)
        start, stop = self.module.modality_offsets[i], self.module.modality_offsets[i + 1]
        mean, std = self.module.gene_mean[start:stop], self.module.gene_std[start:stop]
        scale = torch.as_tensor(config["scale"], device=self.device, dtype=torch.float32)
        ref_z, ref_values = reference
        floor = ref_values.min(0).values  # (F,) lowest value of each feature in training: the scale's floor
        ref_values = (ref_values - mean) / std  # the flows' z-score units
        gen = torch.Generator().manual_seed(seed)
        for z in batches:
            with torch.inference_mode():
                point = _knn_average(z, ref_z, ref_values, config["n_neighbors"])
                condition = torch.cat([point, z], dim=1).repeat_interleave(n_samples, 0)  # (B * S, F + d)
                x0 = torch.randn(condition.shape[0], len(scale), generator=gen).to(z) * scale
                member = torch.arange(n_samples, device=z.device).repeat(len(z)) % len(fields)
                x1 = torch.empty_like(x0)
                for m, field in enumerate(fields):
                    pick = member == m
                    if pick.any():
                        x1[pick] = integrate(field, x0[pick], condition[pick], n_steps)
            yield z, torch.maximum(x1 * std + mean, floor).view(len(z), n_samples, -1)

    def _with_modality_intervals(self, pred: AnnData, batches, target, levels, n_samples, seed, reference):
        """Add the quantiles of each cell's sampled profiles as interval layers of ``pred`` (in place).

        ``batches``: the cells' RNA-only latents per minibatch; ``reference``: as in :meth:`_modality_samples`.
        """
        levels = _check_levels(levels)
        _check_count(n_samples, "n_samples")
        bounds = {level: ([], []) for level in levels}
        spread = []
        for _, samples in self._modality_samples(batches, target, n_samples, 10, seed, reference):
            for level, (lower, upper) in bounds.items():
                q = torch.quantile(samples, torch.tensor([0.5 - level / 2, 0.5 + level / 2]).to(samples), dim=1)
                lower.append(q[0].cpu().numpy()), upper.append(q[1].cpu().numpy())
            spread.append(samples.std(1).pow(2).mean(1).sqrt().cpu().numpy())
        for level, (lower, upper) in bounds.items():
            names = interval_layers(level)
            pred.layers[names[0]] = np.concatenate(lower).astype(np.float32)
            pred.layers[names[1]] = np.concatenate(upper).astype(np.float32)
        pred.obs["uncertainty"] = np.concatenate(spread)
        return pred


def _fit(field, values, condition, scale, steps, batch_size, lr, weight_decay, sigma, gen, check) -> tuple[float, int]:
    """Train one flow from noise of per-feature ``scale`` to ``values`` given ``condition``.

    Source and target are paired by the cell (the condition is the cell's), so no transport plan is needed. Every
    twentieth of the steps (and before the first) the energy score of the cells of ``check`` (values, conditions)
    is measured; the field keeps the weights where it was lowest (step 0: no departure from Gaussian noise around
    the point prediction). Returns the mean loss over the last tenth of the steps and the step kept.
    """
    opt = torch.optim.AdamW(field.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    every = max(1, steps // 20)
    best = (_check_score(field, *check, scale), 0, copy.deepcopy(field.state_dict()))
    field.train()
    tail: list[float] = []
    for step in range(1, steps + 1):
        idx = torch.randint(len(values), (min(batch_size, len(values)),), generator=gen).to(values.device)
        x1, c = values[idx], condition[idx]
        x0 = torch.randn(x1.shape, generator=gen).to(x1) * scale
        loss = flow_matching_loss(field, x0, x1, c, sigma, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step > steps - max(1, steps // 10):
            tail.append(float(loss.detach()))
        if step % every == 0 or step == steps:
            score = _check_score(field, *check, scale)
            if score < best[0]:
                best = (score, step, copy.deepcopy(field.state_dict()))
            field.train()
    field.load_state_dict(best[2])
    return float(np.mean(tail)), best[1]


@torch.no_grad()
def _check_score(field, values, condition, scale, n_samples: int = 16) -> float:
    """Mean energy score of ``n_samples`` flowed profiles per cell against its values (fixed noise: comparable)."""
    field.eval()
    gen = torch.Generator().manual_seed(0)
    c = condition.repeat_interleave(n_samples, 0)
    x = integrate(field, torch.randn(len(c), len(scale), generator=gen).to(c) * scale, c, 10)
    x = x.view(len(values), n_samples, -1)  # (cells, S, F)
    fit = (x - values[:, None]).norm(dim=2).mean(1)
    spread = torch.cdist(x, x).mean((1, 2))
    return float((fit - 0.5 * spread).mean())
