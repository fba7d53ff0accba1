"""Training plan: scvi-tools' TrainingPlan plus the EMA schedule of the target encoder."""

from __future__ import annotations

from inspect import signature

import torch
from scvi.train import TrainingPlan

from .._constants import LOSS_KEYS
from ..nn import momentum_schedule


class BioJEPATrainingPlan(TrainingPlan):
    """Lightning training plan for BioJEPA.

    Optimizer, learning-rate schedule and logging come from :class:`scvi.train.TrainingPlan`. After
    every optimizer step the target encoder moves towards the context encoder by EMA, with momentum
    ramping linearly from ``ema_momentum[0]`` to ``ema_momentum[1]`` over the run. Per epoch,
    ``model.history`` gets ``train_loss``, the JEPA loss, the VICReg terms, the effective rank and mean
    standard deviation of the latent and the EMA momentum (each averaged over the epoch's batches).

    Parameters
    ----------
    module
        A :class:`~biojepa.module.BioJEPAModule`.
    ema_momentum
        ``(start, end)`` of the momentum schedule.
    lr, weight_decay, eps, optimizer
        Passed to :class:`scvi.train.TrainingPlan`; ``"Adam"``/``"AdamW"`` use PyTorch's fused kernels.
    **kwargs
        Other keyword arguments of :class:`scvi.train.TrainingPlan`.

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata)
    >>> model = bj.BioJEPA(adata, n_latent=8)
    >>> model.train(max_epochs=1, plan_kwargs={"ema_momentum": (0.99, 1.0)}, enable_progress_bar=False)
    >>> 0.99 <= float(model.history["ema_momentum"].iloc[-1, 0]) <= 1.0  # logged each epoch
    True
    """

    def __init__(
        self,
        module,
        *,
        ema_momentum: tuple[float, float] = (0.996, 1.0),
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        eps: float = 1e-8,
        optimizer: str = "AdamW",
        **kwargs,
    ):
        plan_args = set(signature(TrainingPlan.__init__).parameters) - {"self", "module", "loss_kwargs"}
        unknown = set(kwargs) - plan_args
        if unknown:
            raise TypeError(
                f"Unknown plan_kwargs {sorted(unknown)}; BioJEPA's plan accepts ema_momentum, lr, weight_decay, eps, "
                f"optimizer and {sorted(plan_args - {'lr', 'weight_decay', 'eps', 'optimizer'})}."
            )
        start, end = ema_momentum
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"`ema_momentum` must satisfy 0 <= start <= end <= 1, got {ema_momentum}.")
        kwargs.setdefault("n_epochs_kl_warmup", None)
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, optimizer=optimizer, **kwargs)
        self.ema_momentum = (start, end)

    def _optimizer_creator_fn(self, optimizer_cls):
        """Adam/AdamW with the fused multi-tensor kernel (one kernel for all parameters)."""
        return lambda params: optimizer_cls(
            params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=True
        )

    def compute_and_log_metrics(self, loss_output, metrics, mode: str) -> None:
        """Log the loss terms of :class:`~scvi.module.base.LossOutput`'s ``extra_metrics`` per epoch.

        Logged under ``no_grad`` rather than scvi-tools' ``inference_mode``: under DDP the epoch-end sync of these
        metrics updates them in place, which inference tensors forbid (gloo).
        """
        with torch.no_grad():
            for key, value in loss_output.extra_metrics.items():
                self.log(
                    f"{key}_{mode}",
                    value.detach() if isinstance(value, torch.Tensor) else value,
                    on_step=False,
                    on_epoch=True,
                    batch_size=loss_output.n_obs_minibatch,
                    sync_dist=self.use_sync_dist,
                )

    def on_train_start(self) -> None:
        """Fix the length of the momentum schedule to the run's number of optimizer steps."""
        self._total_steps = int(self.trainer.estimated_stepping_batches)

    def on_train_epoch_start(self) -> None:
        """Put the module in training mode.

        Lightning keeps the mode it finds, and any embedding call before ``train`` (or a loaded reference in
        query mapping) leaves the module in eval mode, which would silently turn off gene dropout, dropout and
        the perturbation identity dropout.
        """
        self.module.train()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """EMA update of the target encoder, once per optimizer step."""
        momentum = momentum_schedule(self.global_step, self._total_steps, *self.ema_momentum)
        self.module.update_target(momentum)
        self.log(LOSS_KEYS.MOMENTUM, momentum, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
