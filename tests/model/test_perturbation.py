import numpy as np
import pandas as pd
import pytest
import scvi

import biojepa as bj
from biojepa.baselines import Additive


def _model(adata, epochs=5, **setup):
    scvi.settings.seed = 0
    setup.setdefault("categorical_covariate_keys", ["line"])
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", **setup)
    model = bj.BioJEPA(adata, n_latent=8)
    model.train(max_epochs=epochs, batch_size=64, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def trained(screen_factory):
    adata = screen_factory(counts=False)
    return _model(adata, epochs=15), adata


def test_setup_errors(screen_factory):
    adata = screen_factory()
    with pytest.raises(ValueError, match="'ctrl' not found"):
        bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="ctrl")
    with pytest.raises(KeyError, match="guide"):
        bj.BioJEPA.setup_anndata(adata, perturbation_key="guide", control_value="control")
    with pytest.raises(ValueError, match="need `perturbation_key`"):
        bj.BioJEPA.setup_anndata(adata, control_value="control")
    adata.obs["dose"] = "1+1+1"
    with pytest.raises(ValueError, match="'1\\+1\\+1'"):
        bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", dose_key="dose")


def test_gears_labels_register():
    adata = bj.datasets.norman2019_gears_tiny()
    bj.BioJEPA.setup_anndata(adata, layer="counts", perturbation_key="condition", control_value="ctrl")
    model = bj.BioJEPA(adata, n_latent=4)
    setup = model.perturbation_setup_
    labels = model.adata_manager.get_state_registry("perturbation").categorical_mapping
    for label, genes in zip(labels, setup.condition_genes(), strict=True):
        expected = [] if label == "ctrl" else sorted({g for g in label.split("+") if g != "ctrl"})
        assert [setup.vocabulary[i] for i in genes if i >= 0] == expected


def test_seen_single_is_observed_delta_and_double_starts_additive(trained):
    model, adata = trained
    additive = Additive().fit(adata, "condition", "control", ["line"])
    pred = model.predict_perturbation(["g0", "g0+g1"], covariates={"line": "L1"})
    base = additive.predict_perturbation(["g0", "g0+g1"], covariates={"line": "L1"})
    np.testing.assert_allclose(pred.layers["delta"][0], base.layers["delta"][0], atol=1e-4)
    assert pred.obs["source"].tolist() == ["observed", "predicted"]
    # one double only: no combination to validate the interaction on, so its strength is 0 (additive in latent)
    assert model.module.interaction_scale.item() == 0.0
    # what the double adds to additive is the decoder's non-additivity only: small next to the change itself
    extra = np.abs(pred.layers["delta"][1] - base.layers["delta"][1]).mean()
    assert extra < 0.5 * np.abs(base.layers["delta"][1]).mean()
    free = model.predict_perturbation(["g0"], covariates={"line": "L1"}, anchor=False)
    assert free.obs["source"].tolist() == ["predicted"]
    assert not np.allclose(free.layers["delta"][0], base.layers["delta"][0], atol=1e-4)  # the model's own decoding
    obs = model.predict_perturbation(["g0+g1"], covariates={"line": "L1"}, observed=True)
    observed = adata[(adata.obs.condition == "g0+g1") & (adata.obs.line == "L1")].X.mean(0)
    np.testing.assert_allclose(obs.X[0], observed, rtol=1e-4, atol=1e-4)
    assert obs.obs["source"].tolist() == ["observed"]


def test_prediction_layout_and_no_mutation(trained):
    model, adata = trained
    before = adata.copy()
    pred = model.predict_perturbation(["g0+g1", "g5", "control"])
    assert pred.shape == (6, adata.n_vars)
    assert list(pred.obs.columns) == ["condition", "line", "source"]
    assert pred.obs["condition"].tolist() == ["g0+g1", "g5", "control"] * 2
    assert pred.obsm["X_biojepa"].shape == (6, 8)
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.line == "L1")].X.mean(0)
    np.testing.assert_allclose(pred.X[0] - pred.layers["delta"][0], ctrl, atol=1e-4)
    np.testing.assert_allclose(pred.layers["delta"][2], 0.0)
    assert np.abs(pred.layers["delta"][1]).sum() > 0  # unseen measured gene: predicted from its token
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    np.testing.assert_array_equal(adata.X, before.X)


def test_unseen_gene_and_covariate_errors(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="NOTAGENE"):
        model.predict_perturbation("NOTAGENE")
    with pytest.raises(KeyError, match="L9"):
        model.predict_perturbation("g0", covariates={"line": "L9"})
    with pytest.raises(KeyError, match="donor"):
        model.predict_perturbation("g0", covariates={"donor": "x"})


def test_perturbation_in_a_line_where_it_was_never_observed(screen_factory):
    adata = screen_factory()
    keep = ~((adata.obs.condition == "g2") & (adata.obs.line == "L2")).to_numpy()
    model = _model(adata[keep].copy(), epochs=3)
    pred = model.predict_perturbation("g2", covariates={"line": "L2"})
    assert pred.shape[0] == 1 and np.isfinite(pred.X).all() and (pred.X >= 0).all()  # counts scale
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.line == "L2")].X.mean(0)
    np.testing.assert_allclose(pred.X[0] - pred.layers["delta"][0], ctrl, rtol=1e-4)
    # anchored on g2's residual in L1, where it was observed: its own block (genes 30-39) goes up
    delta = pred.layers["delta"][0]
    assert delta[30:40].mean() > 0 and delta[30:40].mean() > 3 * np.abs(delta[50:60]).mean()


def test_embedding_and_retrieval(trained):
    model, adata = trained
    emb = model.get_perturbation_embedding(covariates={"line": "L1"})
    assert emb.shape == (4, 8)
    assert sorted(emb.obs["condition"]) == ["g0", "g0+g1", "g1", "g2"]
    hits = 0
    for cond in ("g0", "g1", "g2"):
        idx = np.flatnonzero(((adata.obs.condition == cond) & (adata.obs.line == "L1")).to_numpy())
        ranking = model.retrieve_perturbations(adata, idx)
        hits += ranking.iloc[0]["condition"] == cond
    assert hits == 3
    with pytest.raises(ValueError, match="covariate groups"):
        model.retrieve_perturbations(adata, np.arange(adata.n_obs))


def test_save_load_keeps_predictions(trained, tmp_path):
    model, adata = trained
    pred = model.predict_perturbation("g0+g1")
    model.save(tmp_path / "m")
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata)
    np.testing.assert_allclose(loaded.predict_perturbation("g0+g1").X, pred.X, atol=1e-5)


def test_no_perturbation_setup_error():
    adata = scvi.data.synthetic_iid(batch_size=20, n_genes=20)
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4)
    with pytest.raises(ValueError, match="perturbation_key"):
        model.predict_perturbation("0")


def test_reference_and_query_with_unseen_labels_are_left_alone(screen_factory):
    full = screen_factory(counts=False)
    held = ((full.obs.condition == "g0+g1") & (full.obs.line == "L1")).to_numpy()
    model = _model(full[~held].copy(), epochs=2)
    before = full.copy()
    pred = model.predict_perturbation(["g0+g1", "g5"], covariates={"line": "L1"}, adata=full)
    default = model.predict_perturbation(["g0+g1", "g5"], covariates={"line": "L1"})
    np.testing.assert_allclose(pred.X, default.X, atol=1e-4)  # same controls and singles: the same prediction
    observed = model.predict_perturbation("g0+g1", covariates={"line": "L1"}, adata=full, observed=True)
    assert observed.obs["source"].tolist() == ["observed"]  # observed in this reference, not in training
    query = full[held].copy()
    del query.obs["condition"]  # unlabeled query cells
    ranking = model.retrieve_perturbations(query, np.arange(query.n_obs), reference=full)
    assert set(ranking["condition"]) == {"g0", "g1", "g2", "g0+g1"}  # candidates: labels of the reference
    pd.testing.assert_frame_equal(full.obs, before.obs)
    assert list(full.uns) == list(before.uns) and list(full.obsm) == list(before.obsm)


def test_combination_members_are_denoised_before_composing(screen_factory):
    adata = screen_factory(counts=False)
    ctrl = np.flatnonzero(((adata.obs.condition == "control") & (adata.obs.line == "L1")).to_numpy())
    condition = adata.obs["condition"].astype(str).to_numpy().copy()
    condition[ctrl[::2]] = "g3"  # a single without effect: its mean change is sampling noise alone
    adata.obs["condition"] = condition
    model = _model(adata, epochs=5)
    labels, line = ["g0", "g1", "g2", "g3", "g1+g3"], {"line": "L1"}
    anchored = model.predict_perturbation(labels, covariates=line).layers["delta"].astype(np.float64)
    free = model.predict_perturbation(labels, covariates=line, anchor=False).layers["delta"].astype(np.float64)
    residual = anchored[:4] - free[:4]  # a seen single keeps its whole residual: its observed change
    mean = residual.mean(0)

    def kept(i):  # per-gene share of single i's deviation kept: 1 - sampling variance / squared deviation
        rows = ((adata.obs.condition == labels[i]) & (adata.obs.line == "L1")).to_numpy()
        noise = np.asarray(adata.X[rows], dtype=np.float64).var(0, ddof=1) / rows.sum()
        deviation = residual[i] - mean
        return np.clip(1.0 - noise / np.maximum(deviation**2, 1e-12), 0.0, 1.0)

    expected = 2 * mean + kept(1) * (residual[1] - mean) + kept(3) * (residual[3] - mean)
    np.testing.assert_allclose(anchored[4] - free[4], expected, atol=1e-4)
    # the effect-free single keeps less of its deviation than g1, which keeps most of its own block (g20-g29)
    assert kept(3).mean() < kept(1).mean() and kept(1)[20:30].mean() > 0.9
    assert (kept(3) < 1.0).any()
