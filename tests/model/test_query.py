import logging

import numpy as np
import pytest
import scvi
import torch

import biojepa as bj

SMALL = {"n_latent": 4, "n_embed": 8, "n_heads": 2, "predictor_dim": 8, "n_layers": 1, "predictor_depth": 1}


def _seen(query):
    """The query relabelled to a reference batch: what the reference model itself embeds (batch is not read)."""
    out = query.copy()
    out.obs["batch"] = "batch_0"
    return out


@pytest.fixture(scope="module")
def split():
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid(batch_size=80, n_genes=40, n_batches=3, n_labels=3)
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    adata.obsm.clear()
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    bj.BioJEPA.setup_anndata(ref, batch_key="batch", categorical_covariate_keys=["labels"])
    model = bj.BioJEPA(ref, **SMALL)
    model.train(max_epochs=3, batch_size=40, enable_progress_bar=False)
    return model, ref, query


def test_prepare_query_reorders_masks_and_leaves_input_alone(split, caplog):
    model, _, query = split
    shuffled = query[:, list(query.var_names[5:][::-1])].copy()  # 5 genes missing, order reversed
    shuffled.var_names = list(shuffled.var_names[:-1]) + ["not_in_model"]  # and one gene unknown to the model
    before = shuffled.copy()
    with caplog.at_level(logging.INFO, logger="biojepa"):
        aligned = bj.BioJEPA.prepare_query_anndata(shuffled, model)
    assert "6 of the model's 40 genes are missing" in caplog.text
    assert list(aligned.var_names) == list(model.adata.var_names)
    assert sorted(aligned.uns["biojepa_missing_genes"]) == sorted([f"g{i}" for i in range(5)] + ["g5"])
    assert np.isnan(aligned.X[:, :6]).all() and np.isfinite(aligned.X[:, 6:]).all()
    np.testing.assert_array_equal(aligned[:, "g20"].X, query[:, "g20"].X)
    np.testing.assert_array_equal(shuffled.X, before.X)
    assert list(shuffled.var_names) == list(before.var_names)


def test_missing_genes_are_masked_not_zero_filled(split):
    model, _, query = split
    full = model.get_latent_representation(_seen(query))
    partial = query[:, 8:].copy()
    masked = model.get_latent_representation(bj.BioJEPA.prepare_query_anndata(_seen(partial), model))
    zero = _seen(query)
    zero.X[:, :8] = 0
    zero.X[zero.X.sum(1) == 0, 10] = 1
    zero_filled = model.get_latent_representation(zero)
    assert np.isfinite(masked).all()
    err_masked = np.linalg.norm(masked - full, axis=1).mean()
    err_zero = np.linalg.norm(zero_filled - full, axis=1).mean()
    assert err_masked < err_zero


def test_load_query_data_adds_categories_and_trains_only_them(split):
    model, _, query = split
    ref_state = {k: v.clone() for k, v in model.module.state_dict().items()}
    qmodel = bj.BioJEPA.load_query_data(query.copy(), model)
    mapping = qmodel.adata_manager.get_state_registry("batch").categorical_mapping
    assert list(mapping) == ["batch_0", "batch_1", "batch_2"]
    trainable = [n for n, p in qmodel.module.named_parameters() if p.requires_grad]
    assert trainable and all(".batch.weight" in n for n in trainable)
    z_before = qmodel.get_latent_representation()
    np.testing.assert_allclose(z_before, model.get_latent_representation(_seen(query)), atol=1e-5)
    qmodel.train(max_epochs=2, batch_size=40, enable_progress_bar=False)
    state = qmodel.module.state_dict()
    for key, ref in ref_state.items():
        if state[key].shape == ref.shape:
            assert torch.equal(state[key].cpu(), ref.cpu()), f"{key} changed"
        else:  # grown table: reference rows unchanged, the new row trained
            assert torch.equal(state[key][: ref.shape[0]].cpu(), ref.cpu()), f"reference rows of {key} changed"
            assert not torch.allclose(state[key][ref.shape[0] :].cpu(), ref.mean(0).cpu()), f"{key} did not train"
    np.testing.assert_allclose(qmodel.get_latent_representation(), z_before, atol=1e-5)  # same latent space


def test_load_query_data_from_folder_and_save(split, tmp_path):
    model, _, query = split
    model.save(str(tmp_path / "ref"))
    qmodel = bj.BioJEPA.load_query_data(query.copy(), str(tmp_path / "ref"))
    z = qmodel.get_latent_representation()
    np.testing.assert_allclose(z, model.get_latent_representation(_seen(query)), atol=1e-5)
    qmodel.save(str(tmp_path / "query"))
    loaded = bj.BioJEPA.load(str(tmp_path / "query"), adata=query.copy())
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-5)
    assert loaded.default_plan_kwargs_["weight_decay"] == 0.0


def test_load_query_data_errors(split):
    model, _, query = split
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        bj.BioJEPA.load_query_data(query[:, ::-1].copy(), model)
    nan = query.copy()
    nan.obs["labels"] = nan.obs["labels"].astype(object)
    nan.obs.iloc[0, nan.obs.columns.get_loc("labels")] = np.nan
    with pytest.raises(ValueError, match="'labels'.*missing"):
        bj.BioJEPA.load_query_data(nan, model)
    with pytest.raises(ValueError, match="none of the model's 40 genes"):
        other = query.copy()
        other.var_names = [f"x{i}" for i in range(other.n_vars)]
        bj.BioJEPA.prepare_query_anndata(other, model)
