"""The training plan with perturbations: loss terms, held-out combinations, and the EMA target."""

import numpy as np
import pytest
import scvi
import torch

import biojepa as bj
from biojepa._constants import LOSS_KEYS, MODULE_KEYS
from biojepa.train import BioJEPATrainingPlan


def _model(screen_factory, **setup):
    adata = screen_factory(counts=False)
    adata.obs["dose"] = np.where(adata.obs.condition == "control", "0", "1")
    adata.obs.loc[adata.obs.condition == "g0+g1", "dose"] = "1+1"
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(
        adata, perturbation_key="condition", control_value="control", categorical_covariate_keys=["line"], **setup
    )
    return bj.BioJEPA(adata, n_latent=8)


def test_training_logs_perturbation_terms_and_moves_the_target_only_by_ema(screen_factory):
    model = _model(screen_factory, dose_key="dose")
    target_before = [p.detach().clone() for p in model.module.target_encoder.parameters()]
    context_before = [p.detach().clone() for p in model.module.context_encoder.parameters()]
    model.train(max_epochs=2, batch_size=64, enable_progress_bar=False, plan_kwargs={"ema_momentum": (1.0, 1.0)})
    for key in (LOSS_KEYS.PERTURBATION, LOSS_KEYS.INTERACTION, LOSS_KEYS.EXPRESSION, LOSS_KEYS.JEPA):
        series = model.history[f"{key}_train"].iloc[:, 0].astype(float)
        assert len(series) == 2 and np.isfinite(series).all(), key
    assert all(not p.requires_grad for p in model.module.target_encoder.parameters())
    # momentum 1: the target encoder never moves, the context encoder does (it gets gradients)
    assert all(torch.equal(a, b) for a, b in zip(target_before, model.module.target_encoder.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(context_before, model.module.context_encoder.parameters(), strict=True)
    )
    assert model.module.control_seen.sum() > 0  # control latents of the covariate groups were tracked


def test_training_step_excludes_held_out_combinations_from_the_perturbation_loss(screen_factory):
    model = _model(screen_factory)
    module = model.module
    labels = model.perturbation_setup_.labels
    module.condition_holdout[:] = torch.tensor([label == "g0+g1" for label in labels])
    loader = model._make_data_loader(adata=model.adata, batch_size=model.adata.n_obs, shuffle=False)
    tensors = next(iter(loader))
    module.train()
    _, generative, _ = module(tensors)
    rows = generative[MODULE_KEYS.PERT_ROWS]
    condition = np.asarray(model.adata.obs["condition"])
    assert not rows[torch.as_tensor(condition == "g0+g1")].any()
    assert rows[torch.as_tensor(np.isin(condition, ["g0", "g1", "g2"]))].all()
    assert not rows[torch.as_tensor(condition == "control")].any()


def test_training_step_excludes_a_single_held_out_in_one_group_only(screen_factory):
    model = _model(screen_factory)
    module = model.module
    adata = model.adata
    code = model.perturbation_setup_.labels.index("g0")
    group = model._group_code(("L1",))
    module.pair_holdout = torch.tensor([code * module.n_groups + group])
    loader = model._make_data_loader(adata=adata, batch_size=adata.n_obs, shuffle=False)
    module.train()
    _, generative, _ = module(next(iter(loader)))
    rows = generative[MODULE_KEYS.PERT_ROWS].numpy()
    g0, line = (adata.obs["condition"] == "g0").to_numpy(), adata.obs["line"].to_numpy()
    assert g0.any() and set(line[g0]) >= {"L1", "L2"}  # g0 is observed in both lines: the check below can fail
    assert not rows[g0 & (line == "L1")].any()
    assert rows[g0 & (line == "L2")].all()


def test_plan_rejects_unknown_kwargs_and_bad_momentum(screen_factory):
    module = _model(screen_factory).module
    with pytest.raises(TypeError, match=r"Unknown plan_kwargs \['nope'\]"):
        BioJEPATrainingPlan(module, nope=1)
    with pytest.raises(ValueError, match="ema_momentum"):
        BioJEPATrainingPlan(module, ema_momentum=(1.0, 0.5))
