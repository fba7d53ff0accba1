import logging

import numpy as np
import pytest
import scanpy as sc
import scvi
import torch

import biojepa as bj
from biojepa._constants import LOSS_KEYS


@pytest.fixture
def synthetic():
    return scvi.data.synthetic_iid(batch_size=100, n_genes=60, n_batches=2, n_labels=3)


def _trained(adata, seed=0, **setup):
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(adata, **setup)
    model = bj.BioJEPA(adata, n_latent=6, n_embed=16, n_heads=2, predictor_dim=16)
    model.train(max_epochs=2, batch_size=64, check_val_every_n_epoch=1, enable_progress_bar=False)
    return model


def test_train_history_and_latent(synthetic):
    model = _trained(synthetic, batch_key="batch")
    for key in (LOSS_KEYS.JEPA, LOSS_KEYS.VARIANCE, LOSS_KEYS.COVARIANCE, LOSS_KEYS.EFFECTIVE_RANK):
        for mode in ("train", "validation"):
            values = model.history[f"{key}_{mode}"].to_numpy(dtype=float)
            assert values.shape == (2, 1) and np.isfinite(values).all()
    assert (model.history[f"{LOSS_KEYS.EFFECTIVE_RANK}_train"].to_numpy(dtype=float) >= 1).all()
    z = model.get_latent_representation(key_added="X_biojepa")
    assert z.shape == (synthetic.n_obs, 6) and np.isfinite(z).all()
    np.testing.assert_array_equal(synthetic.obsm["X_biojepa"], z)
    assert model.get_latent_representation(indices=[0, 5, 7]).shape == (3, 6)


def test_target_encoder_has_no_gradient_and_moves_by_ema(synthetic):
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(synthetic)
    model = bj.BioJEPA(synthetic, n_latent=6, n_embed=16, n_heads=2, predictor_dim=16)
    target = model.module.target_encoder
    before = [p.detach().clone() for p in target.parameters()]
    assert all(not p.requires_grad for p in target.parameters())
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    assert all(p.grad is None for p in target.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, target.parameters(), strict=True)]
    assert any(moved)
    context = dict(model.module.context_encoder.named_parameters())
    name, param = next(iter(target.named_parameters()))
    assert not torch.equal(param, context[name])  # EMA lags behind the context encoder


def test_save_load_identical_latents(synthetic, tmp_path):
    model = _trained(synthetic)
    z = model.get_latent_representation()
    model.save(tmp_path / "model", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "model", adata=synthetic)
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    for (name, a), b in zip(model.module.state_dict().items(), loaded.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_fixed_seed_reproducible(synthetic):
    z1 = _trained(synthetic.copy(), seed=3).get_latent_representation()
    z2 = _trained(synthetic.copy(), seed=3).get_latent_representation()
    z3 = _trained(synthetic.copy(), seed=4).get_latent_representation()
    np.testing.assert_allclose(z1, z2, rtol=0, atol=1e-6)
    assert not np.allclose(z1, z3)


def test_new_anndata_same_genes_and_gene_errors(synthetic):
    model = _trained(synthetic)
    query = synthetic[:50].copy()
    del query.obs["_scvi_batch"]
    z = model.get_latent_representation(query)
    np.testing.assert_allclose(z, model.get_latent_representation(indices=np.arange(50)), atol=1e-5)
    with pytest.raises(ValueError, match="lacks 5 of the model's 60 genes"):
        model.get_latent_representation(synthetic[:, 5:].copy())
    with pytest.raises(ValueError, match="reorder"):
        model.get_latent_representation(synthetic[:, ::-1].copy())


def test_covariates_train(synthetic):
    synthetic.obs["cont"] = np.linspace(0, 1, synthetic.n_obs)
    model = _trained(
        synthetic, batch_key="batch", categorical_covariate_keys=["labels"], continuous_covariate_keys=["cont"]
    )
    assert np.isfinite(model.get_latent_representation()).all()
    assert model.module.condition.cont is not None and len(model.module.condition.cats) == 1


def test_real_kang_counts_and_umap(caplog):
    adata = bj.datasets.kang2018_ifnb()
    with caplog.at_level(logging.INFO, logger="biojepa"):
        bj.BioJEPA.setup_anndata(adata, batch_key="sample_id")
    assert "raw counts (detected)" in caplog.text
    scvi.settings.seed = 0
    model = bj.BioJEPA(adata, n_latent=8, n_embed=16, n_heads=2, predictor_dim=16)
    assert model.input_scale == "counts"
    model.train(max_epochs=2, batch_size=256, enable_progress_bar=False)
    model.get_latent_representation(key_added="X_biojepa")
    sc.pp.neighbors(adata, use_rep="X_biojepa", n_neighbors=10)
    sc.tl.umap(adata, maxiter=20)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and np.isfinite(adata.obsm["X_umap"]).all()


def test_real_kang_log_layer_detected(caplog):
    adata = bj.datasets.kang2018_ifnb()
    with caplog.at_level(logging.INFO, logger="biojepa"):
        bj.BioJEPA.setup_anndata(adata, layer="logcounts")
    assert "log-normalized expression (detected)" in caplog.text
    assert bj.BioJEPA(adata, n_embed=16, n_heads=2).input_scale == "log"
    with caplog.at_level(logging.INFO, logger="biojepa"):
        bj.BioJEPA.setup_anndata(adata, input_scale="log")  # counts forced to be read as log
    assert "set by `input_scale`" in caplog.text


def test_early_stopping_monitors_validation_loss(synthetic):
    bj.BioJEPA.setup_anndata(synthetic)
    model = bj.BioJEPA(synthetic, n_latent=4, n_embed=16, n_heads=2, predictor_dim=16)
    model.train(max_epochs=3, batch_size=64, early_stopping=True, enable_progress_bar=False)
    assert len(model.history["validation_loss"]) == 3
    assert np.isfinite(model.history["validation_loss"].to_numpy(dtype=float)).all()
