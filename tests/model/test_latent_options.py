"""Encoder options of the latent: gene dropout, expression readout, pooling, multi-block masking."""

import numpy as np
import pytest
import scvi
import torch

import biojepa as bj
from biojepa._constants import LOSS_KEYS


@pytest.fixture
def adata():
    a = scvi.data.synthetic_iid(batch_size=60, n_genes=40, n_batches=1)
    bj.BioJEPA.setup_anndata(a)
    return a


def _tensors(adata, n=16):
    return {"X": torch.as_tensor(np.asarray(adata.X[:n].toarray() if hasattr(adata.X, "toarray") else adata.X[:n]))}


def test_readout_shapes_the_latent_and_is_logged(adata):
    scvi.settings.seed = 0
    model = bj.BioJEPA(adata, n_latent=6, readout_weight=5.0, readout_likelihood="mse")
    module = model.module
    inf = module.inference(_tensors(adata)["X"])
    gen = module.generative(inf["z"], inf["masks_pred"])
    out = module.loss({}, inf, gen)
    assert LOSS_KEYS.READOUT in out.extra_metrics
    module.zero_grad()
    readout = ((gen["readout_pred"] - inf["x_norm"]) ** 2).mean()
    readout.backward()
    grad = module.context_encoder.to_latent.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the readout's gradient reaches the encoder
    assert module.target_encoder.to_latent.weight.grad is None
    model.train(max_epochs=2, batch_size=30, enable_progress_bar=False)
    assert np.isfinite(model.history[f"{LOSS_KEYS.READOUT}_train"].to_numpy(dtype=float)).all()


def test_log_scale_readout_weighs_genes_by_variance(adata):
    scvi.settings.seed = 0
    module = bj.BioJEPA(adata, n_latent=6, readout_weight=5.0, readout_likelihood="mse_log").module
    variance = module.gene_std.pow(2)
    weight = module.readout_gene_weight
    assert torch.allclose(weight, variance / variance.mean()) and not torch.allclose(weight, torch.ones_like(weight))
    inf = module.inference(_tensors(adata)["X"])
    gen = module.generative(inf["z"], inf["masks_pred"])
    logged = module.loss({}, inf, gen).extra_metrics[LOSS_KEYS.READOUT]
    err = (gen["readout_pred"] - inf["x_norm"]) ** 2
    # the squared error of log expression on its own scale, over the mean variance
    assert torch.allclose(logged, (err * weight).mean())
    assert not torch.allclose(logged, err.mean())
    plain = bj.BioJEPA(adata, n_latent=6, readout_weight=5.0, readout_likelihood="mse").module
    assert torch.equal(plain.readout_gene_weight, torch.ones_like(weight))


def test_pure_jepa_has_no_readout(adata):
    model = bj.BioJEPA(adata, n_latent=6, readout_weight=0.0)
    assert model.module.readout is None
    inf = model.module.inference(_tensors(adata)["X"])
    out = model.module.loss({}, inf, model.module.generative(inf["z"], inf["masks_pred"]))
    assert LOSS_KEYS.READOUT not in out.extra_metrics


def test_gene_dropout_only_while_training(adata):
    scvi.settings.seed = 0
    module = bj.BioJEPA(adata, n_latent=6, gene_dropout=0.5).module
    x = _tensors(adata)["X"]
    module.eval()
    z1 = module.inference(x, masked=False)["z"]
    z2 = module.inference(x, masked=False)["z"]
    assert torch.equal(z1, z2)  # embedding is deterministic: no dropout outside training
    b = bj.BioJEPA(adata, n_latent=6).module
    b.load_state_dict(module.state_dict())
    module.train(), b.train()
    torch.manual_seed(0)
    a = module.inference(x)
    torch.manual_seed(0)
    b_out = b.inference(x)
    # same masks (same seed), same weights: only the dropped genes make the context latents differ
    assert torch.equal(a["masks_pred"], b_out["masks_pred"])
    assert not torch.allclose(a["z"], b_out["z"])
    assert torch.allclose(a["target_z"], b_out["target_z"])  # the target encoder sees every gene


@pytest.mark.parametrize(
    "kwargs", [{"gene_dropout": 1.0}, {"gene_dropout": -0.1}, {"readout_weight": -1.0}, {"readout_genes": 0}]
)
def test_bad_options_raise(adata, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        bj.BioJEPA(adata, **kwargs)


def test_pooling_trains_and_saves(adata, tmp_path):
    model = bj.BioJEPA(adata, n_latent=6, pooling="both")
    model.train(max_epochs=1, batch_size=30, enable_progress_bar=False)
    z = model.get_latent_representation()
    model.save(tmp_path / "m")
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata)
    assert np.allclose(z, loaded.get_latent_representation(), atol=1e-6)


def test_block_masking_trains_and_survives_save(adata, tmp_path):
    model = bj.BioJEPA(adata, n_latent=6, n_modules=8, mask_ratio=(0.5, 0.5), mask_blocks=2)
    module = model.module
    module.train()
    torch.manual_seed(0)
    hidden = module.inference(_tensors(adata)["X"])["masks_pred"]  # (16, 4): two runs of two modules each
    assert hidden.shape[1] == 4
    assert all(1 + int((row.diff() != 1).sum()) <= 2 for row in hidden)
    model.train(max_epochs=1, batch_size=30, enable_progress_bar=False)
    model.save(tmp_path / "m")
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata)
    assert loaded.module.mask_sampler.n_blocks == 2


def test_training_after_embedding_runs_in_training_mode(adata):
    model = bj.BioJEPA(adata, n_latent=6, gene_dropout=0.25)
    model.get_latent_representation()  # leaves the module in eval mode
    modes = []
    inference = model.module.inference

    def spy(*args, **kwargs):
        modes.append(model.module.training)
        return inference(*args, **kwargs)

    model.module.inference = spy
    model.train(max_epochs=1, batch_size=30, enable_progress_bar=False)
    assert modes and all(modes)  # gene dropout (and dropout) active in every training step


def test_default_readout_follows_the_input(adata):
    counts = bj.BioJEPA(adata, n_latent=6).module  # RNA counts: negative-binomial readout at the default weight
    assert isinstance(counts.readout, bj.nn.CountReadout) and counts.readout_weight == 3000.0
    logged = scvi.data.synthetic_iid(batch_size=60, n_genes=40, n_batches=1)
    logged.X = np.log1p(np.asarray(logged.X.toarray() if hasattr(logged.X, "toarray") else logged.X))
    bj.BioJEPA.setup_anndata(logged)
    module = bj.BioJEPA(logged, n_latent=6).module  # log input: log expression on its own scale
    assert isinstance(module.readout, bj.nn.ExpressionHead) and not torch.allclose(
        module.readout_gene_weight, torch.ones_like(module.readout_gene_weight)
    )
    assert bj.BioJEPA(logged, n_latent=6, readout_weight=0.0).module.readout is None  # the pure JEPA objective


def test_count_readout_shapes_the_latent(adata):
    scvi.settings.seed = 0
    model = bj.BioJEPA(adata, n_latent=6, readout_weight=5.0, readout_likelihood="nb")
    module = model.module
    assert isinstance(module.readout, bj.nn.CountReadout)
    x = _tensors(adata)["X"]
    inf = module.inference(x)
    out = module.loss({"X": x}, inf, module.generative(inf["z"], inf["masks_pred"]))
    nll = out.extra_metrics[LOSS_KEYS.READOUT]
    assert torch.isfinite(nll) and nll > 0
    module.zero_grad()
    module.readout.nll(inf["z"], x.float()).backward()
    assert module.context_encoder.to_latent.weight.grad.abs().sum() > 0  # the likelihood reaches the encoder
    model.train(max_epochs=2, batch_size=30, enable_progress_bar=False)
    history = model.history[f"{LOSS_KEYS.READOUT}_train"].to_numpy(dtype=float)
    assert np.isfinite(history).all()


def test_count_readout_needs_counts(adata):
    with pytest.raises(ValueError, match="readout_likelihood"):
        bj.BioJEPA(adata, readout_weight=1.0, readout_likelihood="poisson")
    logged = adata.copy()
    logged.X = np.log1p(np.asarray(logged.X.toarray() if hasattr(logged.X, "toarray") else logged.X))
    bj.BioJEPA.setup_anndata(logged)
    with pytest.raises(ValueError, match="readout_likelihood='nb'.*counts"):
        bj.BioJEPA(logged, readout_weight=1.0, readout_likelihood="nb")


def test_target_encoder_latent(adata):
    model = bj.BioJEPA(adata, n_latent=6)
    model.train(max_epochs=2, batch_size=30, enable_progress_bar=False)
    z = model.get_latent_representation()
    zt = model.get_latent_representation(encoder="target")
    assert zt.shape == z.shape and not np.allclose(z, zt)  # the EMA copy lags the trained encoder
    module = model.module
    module.context_encoder, module.target_encoder = module.target_encoder, module.context_encoder
    assert np.allclose(model.get_latent_representation(), zt, atol=1e-6)  # it is the target encoder's latent
    module.context_encoder, module.target_encoder = module.target_encoder, module.context_encoder
    with pytest.raises(ValueError, match="`encoder`.*'ema'"):
        model.get_latent_representation(encoder="ema")


def test_readout_on_a_random_gene_subset_per_step(adata):
    scvi.settings.seed = 0
    model = bj.BioJEPA(adata, n_latent=6, readout_genes=10)
    module = model.module
    assert module.readout_genes == 10
    assert bj.BioJEPA(adata, n_latent=6, readout_genes=1000).module.readout_genes is None  # >= every gene: all
    x = _tensors(adata)["X"]
    inf = module.inference(x)
    gen = module.generative(inf["z"], inf["masks_pred"])
    torch.manual_seed(1)
    first = module.loss({"X": x}, inf, gen).extra_metrics[LOSS_KEYS.READOUT]
    torch.manual_seed(2)
    second = module.loss({"X": x}, inf, gen).extra_metrics[LOSS_KEYS.READOUT]
    assert torch.isfinite(first) and first != second  # another subset of genes at each call
    model.train(max_epochs=2, batch_size=30, enable_progress_bar=False)
    assert np.isfinite(model.history[f"{LOSS_KEYS.READOUT}_train"].to_numpy(dtype=float)).all()
