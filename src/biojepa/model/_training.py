"""Training of :class:`~biojepa.BioJEPA` (one process or DDP through Lightning), block-shuffled and streamed loading."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from lightning.fabric.utilities.imports import _IS_INTERACTIVE
from scvi import settings
from scvi.model._utils import use_distributed_sampler
from torch.utils.data import DataLoader

from ..data import BlockDataset, BlockSampler
from ..train import BioJEPADataSplitter
from ._checks import check_train_args

logger = logging.getLogger(__name__)

_LOADER_KWARGS = {"num_workers", "persistent_workers", "pin_memory"}
_FIND_UNUSED = {
    "ddp": "ddp_find_unused_parameters_true",
    "ddp_notebook": "ddp_notebook_find_unused_parameters_true",
    "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
}


def n_processes(devices, num_nodes: int = 1) -> int:
    """Number of training processes Lightning starts for ``devices`` on each of ``num_nodes`` nodes.

    ``devices`` as :class:`~lightning.pytorch.Trainer` reads it: ``"auto"``, an int, ``-1``, ``"0,1"`` or a list of
    device ids.

    Examples
    --------
    >>> from biojepa.model._training import n_processes
    >>> n_processes("auto"), n_processes(2), n_processes("0,1"), n_processes([0, 1, 2], num_nodes=2)
    (1, 2, 2, 6)
    """
    if isinstance(devices, str):
        devices = devices.strip()
        if devices == "auto":
            n = 1
        elif "," in devices:
            n = len([d for d in devices.split(",") if d.strip()])
        else:
            n = int(devices)
    elif isinstance(devices, Sequence):
        n = len(devices)
    else:
        n = int(devices)
    if n == -1:
        n = max(torch.cuda.device_count(), 1)
    return n * int(num_nodes)


class TrainingMixin:
    """``train`` with the DDP strategy guard and block-shuffled loading; streamed inference batches."""

    _data_splitter_cls = BioJEPADataSplitter

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        early_stopping: bool = False,
        plan_kwargs: dict | None = None,
        block_shuffle: bool = False,
        block_size: int | None = None,
        shuffle_set_split: bool | None = None,
        **kwargs,
    ):
        """Train with scvi-tools' runner and Lightning (progress bar, devices, DDP, checkpoints).

        Several devices or nodes (``devices=2``, ``num_nodes=2``) train through Lightning's DDP: without a ``strategy``,
        ``"ddp"`` is chosen (``"ddp_notebook"`` in a notebook), and a strategy that would not shard the minibatches
        raises. The named DDP strategies run with ``find_unused_parameters`` (a minibatch without time-course or
        perturbation samples leaves those predictor heads without gradient). Each process sees its own share of every
        epoch; gradients are averaged, so the context encoder and the EMA target stay identical on every rank. From a
        plain ``python script.py`` Lightning starts the other local processes itself (re-running the script); under
        ``torchrun`` or SLURM's ``srun`` it joins the processes those launched. Every rank returns from ``train``;
        :meth:`save` writes on rank 0 only.

        Parameters
        ----------
        max_epochs
            Number of epochs; ``None`` uses :func:`scvi.model.get_max_epochs_heuristic`.
        batch_size
            Minibatch size (per process under DDP).
        early_stopping
            Stop when ``validation_loss`` stops improving (validation then runs every epoch; off under DDP).
        plan_kwargs
            Keyword arguments of :class:`~biojepa.train.BioJEPATrainingPlan` (``ema_momentum``, ``lr``, ...).
        block_shuffle
            Load minibatches of contiguous rows, in random order with boundaries shifting each epoch
            (:class:`~biojepa.data.BlockSampler`): as fast from a backed AnnData (``read_h5ad(path, backed="r")``)
            as from memory. Write the file with rows shuffled once (:func:`~biojepa.data.write_shuffled_h5ad`), so
            that a block is a random sample of cells.
        block_size
            Rows per block with ``block_shuffle``; ``None`` uses ``batch_size``.
        shuffle_set_split
            Draw the train/validation split at random; ``None`` does so except with ``block_shuffle``, where the
            first rows (of a row-shuffled file) are the validation set and the training rows stay contiguous.
        **kwargs
            Other keyword arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and of
            :class:`lightning.pytorch.Trainer` (e.g. ``train_size``, ``accelerator``, ``devices``, ``num_nodes``,
            ``strategy``, ``check_val_every_n_epoch``).

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(adata)
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=2, batch_size=64, enable_progress_bar=False)
        >>> "jepa_loss_train" in model.history
        True
        >>> model.train(max_epochs=1, batch_size=64, block_shuffle=True, enable_progress_bar=False)
        """
        check_train_args(max_epochs, batch_size, self.adata.n_obs)
        plan_kwargs = {**getattr(self, "default_plan_kwargs_", {}), **(plan_kwargs or {})}
        if not any(p.requires_grad for p in self.module.parameters()):
            logger.info("BioJEPA: no trainable weight (a mapped query without new categories); nothing to train.")
            return None
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
            kwargs.setdefault("check_val_every_n_epoch", 1)
        kwargs = self._training_kwargs(block_shuffle, block_size, shuffle_set_split, kwargs)
        out = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            **kwargs,
        )
        self._after_training()
        return out

    def _after_training(self) -> None:
        """Calibration after the training loop (the perturbation mixin chooses the interaction's strength)."""

    def _training_kwargs(
        self, block_shuffle: bool, block_size: int | None, shuffle_set_split: bool | None, kwargs: dict
    ) -> dict:
        """Resolve the strategy for several processes and route the loading options to the data splitter."""
        n = n_processes(kwargs.get("devices", "auto"), kwargs.get("num_nodes", 1))
        strategy = kwargs.get("strategy")
        if n > 1 and strategy in (None, "auto"):
            strategy = "ddp_notebook" if _IS_INTERACTIVE else "ddp"
        if n > 1 and not use_distributed_sampler(strategy):
            raise ValueError(
                f"BioJEPA trains on several devices through DDP; strategy={strategy!r} would not shard the "
                "minibatches. Pass strategy='ddp' (or a lightning DDPStrategy), or leave it unset."
            )
        if strategy in _FIND_UNUSED:
            # a step without time-course or perturbation samples leaves those predictor heads without gradient
            strategy = _FIND_UNUSED[strategy]
            logger.info("BioJEPA: %d processes; training with strategy=%r.", n, strategy)
        if strategy is not None:
            kwargs["strategy"] = strategy
        if isinstance(strategy, str) and "spawn" in strategy and getattr(self.adata, "isbacked", False):
            raise ValueError(
                f"strategy={strategy!r} pickles the data into every process, which a backed AnnData cannot be; "
                "use strategy='ddp' (one script process per device, e.g. under torchrun or srun)."
            )
        if use_distributed_sampler(strategy) and "log_save_dir" not in kwargs:
            kwargs["log_save_dir"] = tempfile.mkdtemp(prefix="biojepa_logs_")  # DDP writes history to disk
        splitter_kwargs = dict(kwargs.pop("datasplitter_kwargs", None) or {})
        splitter_kwargs.update(block_shuffle=block_shuffle, block_size=block_size)
        kwargs["datasplitter_kwargs"] = splitter_kwargs
        kwargs["shuffle_set_split"] = (not block_shuffle) if shuffle_set_split is None else shuffle_set_split
        return kwargs

    def _make_data_loader(
        self, adata, indices=None, batch_size=None, shuffle=False, data_loader_class=None, **data_loader_kwargs
    ):
        """Inference loader reading each minibatch as row slices, in the order of ``indices`` (also when backed).

        scvi-tools' loader is used for shuffled or custom loaders.
        """
        rows = None if indices is None else np.asarray(indices)
        if rows is not None and rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if shuffle or data_loader_class is not None or set(data_loader_kwargs) - _LOADER_KWARGS:
            return super()._make_data_loader(
                adata, indices, batch_size, shuffle, data_loader_class, **data_loader_kwargs
            )
        manager = self.get_anndata_manager(adata)
        if manager is None:
            raise AssertionError("AnnDataManager not found; call `self._validate_anndata` first.")
        dataset = BlockDataset(manager, rows)
        sampler = BlockSampler(len(dataset), batch_size or settings.batch_size, shuffle=False, num_replicas=1, rank=0)
        data_loader_kwargs.setdefault("num_workers", settings.dl_num_workers)
        return DataLoader(dataset, sampler=sampler, batch_size=None, **data_loader_kwargs)
