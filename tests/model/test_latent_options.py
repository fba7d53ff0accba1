"""Encoder options of the latent: gene dropout, expression readout, pooling."""

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
    model = bj.BioJEPA(adata, n_latent=6, readout_weight=5.0)
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


def test_pure_jepa_has_no_readout(adata):
    model = bj.BioJEPA(adata, n_latent=6)
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


@pytest.mark.parametrize("kwargs", [{"gene_dropout": 1.0}, {"gene_dropout": -0.1}, {"readout_weight": -1.0}])
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
