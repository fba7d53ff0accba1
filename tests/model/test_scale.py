"""Scale: DDP on 2 CPU processes (gloo), backed AnnData, block-shuffled loading and streamed inference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch

import biojepa as bj
from biojepa.data import BlockDataset, BlockSampler, row_runs, write_shuffled_h5ad
from biojepa.model._training import n_processes

WORKER = Path(__file__).with_name("ddp_worker.py")


def _counts(n: int = 256, g: int = 40, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(2.0, 1.0, (n, g))).astype(np.float32)
    X[:, 0] += 1  # no empty cells
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.obs["batch"] = rng.choice(["a", "b"], n)
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = [f"g{i}" for i in range(g)]
    return adata


@pytest.fixture(scope="module")
def h5ad_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scale") / "cells.h5ad"
    _counts().write_h5ad(path)
    return path


@pytest.mark.parametrize("mode", ["memory", "backed-block", "memory-rank0-save"])
def test_ddp_two_processes(h5ad_file, tmp_path, mode):
    """2-process gloo DDP: disjoint shards covering the data, identical EMA targets, rank-0 save, same reload."""
    args = [sys.executable, str(WORKER), str(h5ad_file), str(tmp_path)]
    if mode == "backed-block":
        args += ["--backed", "--block"]
    if mode == "memory-rank0-save":
        args += ["--rank0-save"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["strategy"] == "DDPStrategy"
    assert ranks[0]["ndims"] == [2]  # (B, G) minibatches, not the mis-sharded (1, B, G)
    adata = ad.read_h5ad(h5ad_file)
    row_sums = np.sort(np.asarray(adata.X.sum(1)).ravel())
    for epoch in (0, 1):
        assert len(ranks[0]["rows"][epoch]) == len(ranks[1]["rows"][epoch]) == adata.n_obs // 2
        seen = np.sort(np.r_[ranks[0]["rows"][epoch], ranks[1]["rows"][epoch]])
        np.testing.assert_allclose(seen, row_sums)  # every cell once per epoch, across the two ranks
    for part in ("context", "target"):
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), f"{part} {key} differs between ranks"
    history = pd.read_csv(tmp_path / "history.csv", index_col=0)
    assert len(history) == 2 and np.isfinite(history.to_numpy()).all()
    z0, z1 = np.load(tmp_path / "latent0.npy"), np.load(tmp_path / "latent1.npy")
    np.testing.assert_array_equal(z0, z1)
    bj.BioJEPA.setup_anndata(adata, batch_key="batch")
    loaded = bj.BioJEPA.load(str(tmp_path / "model"), adata=adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), z0, atol=1e-6)


def test_strategy_guard():
    adata = _counts(n=64)
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, predictor_dim=8)
    kwargs = model._training_kwargs(False, None, None, {"devices": 2, "accelerator": "cpu"})
    assert kwargs["strategy"] == "ddp_find_unused_parameters_true"
    assert kwargs["shuffle_set_split"] is True
    assert Path(kwargs["log_save_dir"]).is_dir()
    assert model._training_kwargs(False, None, None, {"devices": 1})["datasplitter_kwargs"] == {
        "block_shuffle": False,
        "block_size": None,
    }
    with pytest.raises(ValueError, match="strategy='fsdp' would not shard"):
        model._training_kwargs(False, None, None, {"devices": 2, "strategy": "fsdp"})
    with pytest.raises(ValueError, match="would not shard"):
        model.train(max_epochs=1, accelerator="cpu", devices="0,1", strategy="single_device")
    assert n_processes("auto") == 1 and n_processes(-1) >= 1
    assert n_processes([0, 1], num_nodes=3) == 6 and n_processes("3") == 3


def test_spawn_refused_for_backed(h5ad_file):
    adata = ad.read_h5ad(h5ad_file, backed="r")
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, predictor_dim=8)
    with pytest.raises(ValueError, match="backed AnnData cannot be"):
        model.train(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn")
    adata.file.close()


def test_block_sampler_epochs_and_shards():
    sampler = BlockSampler(1000, batch_size=100, block_size=25, seed=3)
    epoch0 = list(sampler)
    rows = np.concatenate([np.arange(a, b) for batch in epoch0 for a, b in batch])
    assert np.array_equal(np.sort(rows), np.arange(1000))  # every position exactly once
    assert all(b - a <= 25 for batch in epoch0 for a, b in batch)
    assert list(sampler) == epoch0  # same epoch, same order
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert {a for batch in epoch1 for a, _ in batch} != {a for batch in epoch0 for a, _ in batch}  # boundaries moved
    shards = [list(BlockSampler(1030, 100, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    covered = np.concatenate([np.arange(a, b) for s in shards for batch in s for a, b in batch])
    assert np.array_equal(np.unique(covered), np.arange(1030))
    ordered = list(BlockSampler(10, 4, shuffle=False))
    assert ordered == [[(0, 4)], [(4, 8)], [(8, 10)]]
    assert list(BlockSampler(10, 4, shuffle=False, drop_last=True)) == [[(0, 4)], [(4, 8)]]
    with pytest.raises(ValueError, match="block_size <= batch_size"):
        BlockSampler(10, 4, block_size=8)


def test_block_dataset_order_backed_and_memory(h5ad_file):
    backed = ad.read_h5ad(h5ad_file, backed="r")
    memory = ad.read_h5ad(h5ad_file)
    assert row_runs(np.array([1, 2, 3, 7])) == [slice(1, 4), slice(7, 8)]
    rows = np.array([200, 5, 6, 7, 5, 100])  # unsorted, with a repeat
    for adata in (backed, memory):
        bj.BioJEPA.setup_anndata(adata, batch_key="batch")
        manager = bj.BioJEPA._get_most_recent_anndata_manager(adata)
        batch = BlockDataset(manager, rows)[[(0, 6)]]
        np.testing.assert_array_equal(batch["X"], memory.X[rows].toarray())
        many = np.arange(0, 256, 3)  # more runs than slices: one fancy read
        np.testing.assert_array_equal(BlockDataset(manager, many)[[(0, len(many))]]["X"], memory.X[many].toarray())
    with pytest.raises(ValueError, match="row numbers in"):
        BlockDataset(manager, np.array([0, 999]))
    backed.file.close()


def test_backed_training_embedding_and_prediction(tmp_path):
    """A backed, row-shuffled file trains (block-shuffled), embeds and predicts like the same data in memory."""
    scvi.settings.seed = 0
    screen = _counts(n=300, g=30, seed=1)
    screen.obs["condition"] = np.random.default_rng(1).choice(["control", "g1", "g2", "g1+g2"], screen.n_obs)
    screen.write_h5ad(tmp_path / "screen.h5ad")
    order = write_shuffled_h5ad(tmp_path / "screen.h5ad", tmp_path / "shuffled.h5ad", chunk_size=64)
    backed = ad.read_h5ad(tmp_path / "shuffled.h5ad", backed="r")
    assert backed.isbacked and list(backed.obs_names) == list(screen.obs_names[order])
    bj.BioJEPA.setup_anndata(backed, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(backed, n_latent=8, n_embed=16, predictor_dim=16)
    model.train(max_epochs=2, batch_size=64, block_shuffle=True, block_size=16, enable_progress_bar=False)
    assert np.isfinite(model.history["jepa_loss_train"].to_numpy(dtype=float)).all()
    assert isinstance(backed.X, ad.abc.CSRDataset)  # still backed, never loaded
    z = model.get_latent_representation(progress_bar=True)
    memory = ad.read_h5ad(tmp_path / "shuffled.h5ad")
    np.testing.assert_allclose(model.get_latent_representation(memory), z, atol=1e-5)
    rows = np.array([250, 3, 99, 3, 120])
    np.testing.assert_allclose(model.get_latent_representation(indices=rows), z[rows], atol=1e-6)
    pred = model.predict_perturbation(["g1+g2", "g2"])
    assert pred.shape == (2, 30) and np.isfinite(pred.X).all()
    assert "X_biojepa" not in backed.obsm  # nothing stored without key_added
    backed.file.close()
