"""Train BioJEPA on 2 CPU processes (gloo DDP) and record what each rank saw and holds.

Run by ``tests/model/test_scale.py`` as ``python ddp_worker.py DATA.h5ad OUT_DIR [--backed] [--block]
[--rank0-save]``; Lightning re-runs this script for rank 1. Each rank writes ``OUT_DIR/rank{r}.pt`` (row sums of every
training cell it was given, per epoch, and its context and target encoder weights) and ``OUT_DIR/latent{r}.npy``;
rank 0 saves the model to ``OUT_DIR/model`` (every rank calls ``save``, or with ``--rank0-save`` only the
global-zero one) and the history to ``OUT_DIR/history.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import Callback

import biojepa as bj


class RecordRows(Callback):
    """Row sums and shapes of the minibatches this rank trains on."""

    def __init__(self):
        self.rows: dict[int, list[float]] = {}
        self.ndims: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch["X"]
        self.ndims.add(x.ndim)
        self.rows.setdefault(trainer.current_epoch, []).extend(x.reshape(-1, x.shape[-1]).sum(-1).tolist())


def main(data: str, out: str, backed: bool, block: bool, rank0_save: bool) -> None:
    scvi.settings.seed = 0
    adata = ad.read_h5ad(data, backed="r" if backed else None)
    bj.BioJEPA.setup_anndata(adata, batch_key="batch")
    model = bj.BioJEPA(adata, n_latent=8, n_embed=16, predictor_dim=16)
    record = RecordRows()
    model.train(
        max_epochs=2,
        batch_size=32,
        train_size=1.0,
        accelerator="cpu",
        devices=2,
        strategy="ddp" if block else None,  # None: the guard picks DDP
        block_shuffle=block,
        callbacks=[record],
        enable_progress_bar=False,
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out = Path(out)
    state = {
        "world": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "strategy": type(model.trainer.strategy).__name__ if hasattr(model, "trainer") else None,
        "rows": record.rows,
        "ndims": sorted(record.ndims),
        "context": {k: v.clone() for k, v in model.module.context_encoder.state_dict().items()},
        "target": {k: v.clone() for k, v in model.module.target_encoder.state_dict().items()},
    }
    torch.save(state, out / f"rank{rank}.pt")
    np.save(out / f"latent{rank}.npy", model.get_latent_representation())
    if rank0_save:  # the Lightning idiom: only the global-zero process calls save
        if model.trainer.is_global_zero:
            model.save(str(out / "model"), overwrite=True)
    else:
        model.save(str(out / "model"), overwrite=True)
    if rank == 0:
        model.history["jepa_loss_train"].to_csv(out / "history.csv")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--backed" in sys.argv, "--block" in sys.argv, "--rank0-save" in sys.argv)
