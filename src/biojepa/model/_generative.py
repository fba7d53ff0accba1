"""Generative head of :class:`~biojepa.BioJEPA`: an ensemble of conditional flows in latent space, fit after training.

The flows transport the latents of a source population (the control cells of a covariate group, or the cells of an
earlier time point) to those of the population it becomes (the cells of one perturbation, or of a later time point),
conditioned on the predictor's mean latent shift between the two and on the source's mean latent. Trained on the
populations observed in training, they apply to any shift the predictor makes: an unseen perturbation or time.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._constants import EXTRA_KEYS
from ..nn import VelocityField, flow_matching_loss, ot_pairing
from ._modality_flow import ModalityFlowMixin
from ._sampling import SamplingMixin
from ._save_load import _rank
from ._spread import SpreadMixin
from ._trajectory_uncertainty import TrajectoryUncertaintyMixin
from ._uncertainty import UncertaintyMixin

logger = logging.getLogger(__name__)

GENERATIVE_FILE = "generative.pt"


def _bootstrap(n: int, member: int, seed: int) -> np.ndarray:
    """Population pairs seen by ensemble member ``member``: all for member 0, a bootstrap resample otherwise."""
    if member == 0:
        return np.arange(n)
    return np.random.default_rng([seed, member]).integers(0, n, n)


class FlowTrainingMixin(ModalityFlowMixin, SpreadMixin):
    """``train_generative``: fit the flow ensemble on the populations observed in training; saved with the model."""

    def train_generative(
        self,
        max_epochs: int = 300,
        batch_size: int = 64,
        n_ensemble: int = 5,
        n_hidden: int = 128,
        n_layers: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        sigma: float = 0.05,
        max_cells: int = 1000,
        seed: int = 0,
        target: str | None = None,
        n_neighbors: int = 15,
    ) -> pd.DataFrame:
        r"""Fit an ensemble of conditional flows from source to target populations in the target-encoder latent space.

        Conditional flow matching on straight paths with minibatch optimal-transport pairing
        :cite:p:`lipman2023flow,liu2023rectified,tong2024otcfm` (pairing by POT's exact solver). Populations come from
        the training AnnData: with a ``perturbation_key``, each covariate group's control cells (source) and the cells
        of each observed perturbation in it (target; one population per dose with a ``dose_key``); with a ``time_key``,
        the cells of a covariate group at one time (source) and at each later time (target). A flow's condition is the
        predicted mean latent shift (the composition of :meth:`predict_perturbation`, or :meth:`predict_trajectory` from
        the source's time on) and the source's mean latent; its velocity is that shift plus a learned departure, so it
        generalizes to an unseen perturbation or time through the predictor. Member 0 of the ensemble sees every
        population pair, the others a bootstrap resample of them; their disagreement is the epistemic part of
        :meth:`predict_uncertainty`, and the perturbation pairs each leaves out choose how much of the flow's per-cell
        spread sampled cells keep around the predicted mean (``model.generative_config_["spread"]``; see
        :meth:`sample_perturbation`; for cells at later times, :meth:`backtest_trajectory` run afterwards chooses it
        on held-back times instead). The JEPA weights are not changed.

        For a model set up with :meth:`setup_mudata` the flows sample the ``target`` modality from RNA instead (see
        :meth:`sample_modality`): trained on the training cells that measured it (at most ``max_cells``, ``batch_size``
        cells per step, one epoch a pass over them), each cell's condition its RNA-only latent and its point prediction
        by :meth:`predict_modality` from its ``n_neighbors`` nearest other training cells.

        Parameters
        ----------
        max_epochs
            Epochs; one epoch takes as many steps as a typical target population has minibatches, each step one
            minibatch of ``batch_size`` cells from every population pair.
        batch_size
            Cells per population pair and step.
        n_ensemble
            Number of flows.
        n_hidden, n_layers
            Width and depth of each flow's MLP.
        lr, weight_decay
            AdamW settings (cosine decay of the learning rate to 0).
        sigma
            Noise around the straight paths.
        max_cells
            Cells per population at most (subsampled).
        seed
            Seed of the subsamples, the bootstrap, the initialization and the minibatches.
        target, n_neighbors
            Models set up with :meth:`setup_mudata` only: the modality to sample (``None``: the one besides RNA) and
            the neighbours of the point prediction.

        Returns
        -------
        One row per population pair: its kind (``"perturbation"``, ``"time"`` or, for a MuData model, one
        ``"modality"`` row), covariate group, source and target labels (and the target's dose, for a model with
        doses) and cell counts; also in ``model.generative_config_["pairs"]``, with each flow's final loss in
        ``model.generative_config_["final_loss"]`` (and, for a MuData model, the step each flow kept in
        ``model.generative_config_["stopped_at"]``).

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> pairs = model.train_generative(max_epochs=2, n_ensemble=2)
        >>> pairs["target"].tolist()
        ['g1', 'g1+g2', 'g2']
        """
        for name, value in {"max_epochs": max_epochs, "batch_size": batch_size, "n_ensemble": n_ensemble}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self._multimodal:
            self._check_if_trained(warn=True)
            return self._train_modality_flows(
                target, max_epochs, batch_size, n_ensemble, n_hidden, n_layers, lr, weight_decay, sigma, max_cells,
                n_neighbors, seed,
            )  # fmt: skip
        self._check_generative_model()
        self._check_if_trained(warn=True)
        rng = np.random.default_rng(seed)
        pairs = self._perturbation_pairs(max_cells, rng) + self._time_pairs(max_cells, rng)
        if not pairs:
            raise ValueError(
                "The training AnnData has no population to learn from: it needs control cells and perturbed cells in "
                "the same covariate group, or cells at two or more time points of a covariate group."
            )
        n_latent = self.module.n_latent
        config = {
            "n_latent": n_latent,
            "n_condition": 2 * n_latent,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "n_ensemble": n_ensemble,
            "fit": {
                "max_epochs": max_epochs,
                "batch_size": batch_size,
                "lr": lr,
                "weight_decay": weight_decay,
                "sigma": sigma,
                "max_cells": max_cells,
            },
        }
        steps = max(1, int(round(np.median([len(p["target"]) for p in pairs]) / batch_size))) * max_epochs
        fields, losses, members = nn.ModuleList(), [], []
        for member in range(n_ensemble):
            torch.manual_seed(seed * 1000 + member)
            field = VelocityField(n_latent, 2 * n_latent, n_hidden, n_layers).to(self.device)
            members.append(_bootstrap(len(pairs), member, seed))
            picked = [pairs[i] for i in members[-1]]
            gen = torch.Generator().manual_seed(seed * 1000 + member)
            losses.append(self._fit_flow(field, picked, steps, batch_size, lr, weight_decay, sigma, gen))
            fields.append(field.eval())
        self._flow_fields = fields
        config["spread"] = self._choose_spread(pairs, fields, members, seed)
        table = pd.DataFrame(
            {
                "kind": [p["kind"] for p in pairs],
                "group": [p["group"] for p in pairs],
                "source": [p["source_label"] for p in pairs],
                "target": [p["target_label"] for p in pairs],
                **({"dose": [p.get("dose") for p in pairs]} if any(p.get("dose") for p in pairs) else {}),
                "n_source": [len(p["source"]) for p in pairs],
                "n_target": [len(p["target"]) for p in pairs],
            }
        )
        config["pairs"] = table.to_dict("list")
        config["final_loss"] = losses
        self.generative_config_ = config
        logger.info("Generative head: %d flows on %d population pairs, %d steps each.", n_ensemble, len(pairs), steps)
        return table

    # ------------------------------------------------------------------ population pairs
    def _check_generative_model(self) -> None:
        if getattr(self.module, "expression_head", None) is None:
            raise ValueError(
                "The generative head decodes latents with the expression head, which models set up with a "
                "`perturbation_key` or `time_key` on an AnnData have; set the model up with one of them."
            )

    def _perturbation_pairs(self, max_cells: int, rng: np.random.Generator) -> list[dict]:
        """Control cells → cells of each observed perturbation, per covariate group, with the predicted shift."""
        if getattr(self, "perturbation_setup_", None) is None:
            return []
        setup = self._setup()
        adata, groups, _ = self._reference(None, None)
        out = []
        for group in groups:
            if not group.observed:
                continue
            populations = self._populations(group)
            perturbations = list(populations)
            try:
                results = self._compose(adata, [group], perturbations, None, 500, 0, anchor=False)
            except ValueError as err:  # e.g. a group with several perturbation types
                logger.warning("Covariate group %s left out of the generative head: %s", group.values, err)
                continue
            source_rows = _subsample(group.control, max_cells, rng)
            source = self._target_latent(adata, source_rows)
            for r in results:
                rows = _subsample(populations[r["perturbation"]], max_cells, rng)
                target = self._target_latent(adata, rows)
                shift = r["shift"].cpu().numpy()[0]
                out.append(
                    {
                        "kind": "perturbation",
                        "source_label": setup.control_value,
                        "target_label": r["perturbation"].label(setup.delimiter, setup.control_value),
                        "dose": r["perturbation"].dose_label(setup.delimiter),
                        "group": "/".join(map(str, group.values)),
                        "source": source,
                        "target": target,
                        "source_rows": source_rows,
                        "target_rows": rows,
                        "condition": np.concatenate([shift, source.mean(0)]).astype(np.float32),
                    }
                )
        return out

    def _time_pairs(self, max_cells: int, rng: np.random.Generator) -> list[dict]:
        """Cells at one time → cells at each later time of the same covariate group, with the predicted shift."""
        if EXTRA_KEYS.TIME not in self.adata_manager.data_registry:
            return []
        args = self.adata_manager.registry["setup_args"]
        time_key = args["time_key"]
        out = []
        for values, rows in self._time_groups(self.adata).items():
            t = self.adata.obs[time_key].to_numpy(dtype=np.float64)[rows]
            times = np.unique(t)
            for i, t0 in enumerate(times[:-1]):
                later = times[i + 1 :]
                context = rows[t <= t0]
                src_rows = _subsample(rows[t == t0], max_cells, rng)
                source = self._target_latent(self.adata, src_rows)
                # the predictor as trained: inside the training span the backtested share does not apply
                predicted, _ = self._predicted_time_latents(self.adata, context, later, change_scale=1.0)
                for t1, z1 in zip(later, predicted, strict=True):
                    tgt_rows = _subsample(rows[t == t1], max_cells, rng)
                    target = self._target_latent(self.adata, tgt_rows)
                    shift = z1 - source.mean(0)
                    out.append(
                        {
                            "kind": "time",
                            "source_label": f"{t0:g}",
                            "target_label": f"{t1:g}",
                            "group": "/".join(map(str, values)),
                            "source": source,
                            "target": target,
                            "source_rows": src_rows,
                            "target_rows": tgt_rows,
                            "condition": np.concatenate([shift, source.mean(0)]).astype(np.float32),
                        }
                    )
        return out

    def _time_groups(self, adata) -> dict[tuple, np.ndarray]:
        """Rows of each covariate group (batch and categorical covariates) of ``adata``."""
        keys = self._covariate_keys()
        if not keys:
            return {(): np.arange(adata.n_obs)}
        frame = adata.obs[keys].astype(str)
        return {tuple(np.atleast_1d(k)): np.asarray(v) for k, v in frame.groupby(keys, observed=True).indices.items()}

    def _predicted_time_latents(
        self, adata, context: np.ndarray, times: np.ndarray, change_scale: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean predicted latent ``(len(times), d)`` and mean predicted change of log expression ``(len(times), G)``.

        The latent is averaged over the sequences of ``context`` at each of ``times``; the change is the one the head
        reads from each sequence's anchor to its prediction, averaged: the point prediction of
        :meth:`predict_trajectory` as a change.
        """
        times = np.asarray(times, dtype=np.float64)
        pred = self._trajectory_latents(adata, context, times, None, 0, None, change_scale)
        changes = [self._head_change(pred.z_anchor, pred.z_pred[:, q]).mean(0) for q in range(len(times))]
        return pred.z_pred.mean(0).cpu().numpy(), np.stack(changes)

    # ------------------------------------------------------------------ fitting
    def _fit_flow(self, field, pairs, steps, batch_size, lr, weight_decay, sigma, gen) -> float:
        """Train one flow; return its mean loss over the last tenth of the steps."""
        dev = self.device
        src = [torch.as_tensor(p["source"], device=dev) for p in pairs]
        tgt = [torch.as_tensor(p["target"], device=dev) for p in pairs]
        cond = torch.as_tensor(np.stack([p["condition"] for p in pairs]), device=dev)  # (P, 2d)
        opt = torch.optim.AdamW(field.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        field.train()
        tail: list[float] = []
        for step in range(steps):
            x0, x1 = [], []
            for s, t in zip(src, tgt, strict=True):
                a = s[torch.randint(len(s), (batch_size,), generator=gen).to(dev)]
                b = t[torch.randint(len(t), (batch_size,), generator=gen).to(dev)]
                x0.append(a), x1.append(b[ot_pairing(a, b, gen)])
            x0, x1 = torch.cat(x0), torch.cat(x1)  # (P * B, d)
            c = cond.repeat_interleave(batch_size, 0)  # (P * B, 2d)
            loss = flow_matching_loss(field, x0, x1, c, sigma, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step >= steps - max(1, steps // 10):
                tail.append(float(loss.detach()))
        return float(np.mean(tail))

    # ------------------------------------------------------------------ saving
    def _flows(self) -> nn.ModuleList:
        fields = getattr(self, "_flow_fields", None)
        if fields is None:
            raise ValueError("The generative head is not trained; call `model.train_generative()` first.")
        return fields

    def save(self, dir_path: str, prefix: str | None = None, overwrite: bool = False, **kwargs) -> None:
        """Save the model for :meth:`~biojepa.BioJEPA.load`; a trained generative head goes to ``generative.pt``.

        The JEPA is saved by the base ``save`` (``model.pt`` and ``model.json``); the flows' weights, tensors only,
        are written next to it and their settings are in ``model.json``.

        Parameters
        ----------
        dir_path, prefix, overwrite
            Folder, file-name prefix and whether to replace the files of an existing folder.
        **kwargs
            ``save_anndata`` and the AnnData writer's keyword arguments, as in the base ``save``.

        Examples
        --------
        >>> import os, tempfile, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["condition"] = ["control", "g1"] * 200
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=1, n_ensemble=2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model.save(d, overwrite=True)
        ...     sorted(os.listdir(d))
        ['generative.pt', 'model.json', 'model.pt']
        """
        super().save(dir_path, prefix=prefix, overwrite=overwrite, **kwargs)
        fields = getattr(self, "_flow_fields", None)
        if fields is None or _rank() != 0:
            return
        state = {k: v.detach().cpu() for k, v in fields.state_dict().items()}
        torch.save({"flow_state_dict": state}, Path(dir_path) / f"{prefix or ''}{GENERATIVE_FILE}")

    @classmethod
    def load(cls, dir_path: str, adata=None, accelerator: str = "auto", device="auto", prefix: str | None = None):
        """Load a saved model, with its generative head if it had one, without unpickling any object.

        Weights, the flows' included, are read with ``torch.load(weights_only=True)``.

        Parameters
        ----------
        dir_path, adata, accelerator, device, prefix
            As in the base ``load``: the folder, the data with the model's genes (``None``: the saved data), where to
            put the model and the file-name prefix.

        Returns
        -------
        The model, in eval mode.

        Examples
        --------
        >>> import tempfile, numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.obs["condition"] = ["control", "g1"] * 200
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> _ = model.train_generative(max_epochs=1, n_ensemble=2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model.save(d, overwrite=True)
        ...     loaded = bj.BioJEPA.load(d, adata=adata)
        >>> a = model.sample_perturbation("g2", n_cells=5).obsm["X_biojepa"]
        >>> np.allclose(a, loaded.sample_perturbation("g2", n_cells=5).obsm["X_biojepa"], atol=1e-5)
        True
        """
        model = super().load(dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix)
        config = getattr(model, "generative_config_", None)
        if not config:
            return model
        path = Path(dir_path) / f"{prefix or ''}{GENERATIVE_FILE}"
        try:
            state = torch.load(path, map_location=model.device, weights_only=True)["flow_state_dict"]
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{path} is missing: the model was saved with a trained generative head; save it again."
            ) from err
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as err:
            raise ValueError(f"Refusing to load {path}: it is not a tensor-only generative head ({err}).") from err
        fields = nn.ModuleList(
            VelocityField(config["n_latent"], config["n_condition"], config["n_hidden"], config["n_layers"])
            for _ in range(config["n_ensemble"])
        )
        fields.load_state_dict(state)
        model._flow_fields = fields.to(model.device).eval()
        return model


class GenerativeMixin(UncertaintyMixin, TrajectoryUncertaintyMixin, SamplingMixin, FlowTrainingMixin):
    """The generative head of :class:`~biojepa.BioJEPA`: training, sampling, intervals, saving."""


def _subsample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.asarray(rows)
    return rows if len(rows) <= n else np.sort(rng.choice(rows, n, replace=False))
