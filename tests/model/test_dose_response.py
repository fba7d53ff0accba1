"""Dose-response and compound features of :meth:`biojepa.BioJEPA.predict_perturbation`."""

import numpy as np
import pandas as pd
import pytest
import scvi

import biojepa as bj


def _dosed_screen(screen_factory):
    """Compounds g0/g1/g2 at doses 0.1, 1 and 10 (the screen's effect, whatever the dose), vehicle at dose 0."""
    adata = screen_factory(counts=False)
    rng = np.random.default_rng(0)
    adata.obs["dose"] = rng.choice(["0.1", "1", "10"], adata.n_obs)
    adata.obs.loc[adata.obs.condition == "control", "dose"] = "0"
    adata.obs.loc[adata.obs.condition == "g0+g1", "dose"] = "1+1"
    return adata


def _features():
    rng = np.random.default_rng(1)
    names = ["g0", "g1", "g2", "drug_new"]
    return pd.DataFrame(rng.normal(size=(4, 6)), index=names, columns=[f"bit{i}" for i in range(6)])


def _train(adata, **kwargs):
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(
        adata,
        perturbation_key="condition",
        control_value="control",
        dose_key="dose",
        categorical_covariate_keys=["line"],
    )
    model = bj.BioJEPA(adata, n_latent=8, **kwargs)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    return model


def test_shift_grows_monotonically_with_dose_and_vanishes_at_zero(screen_factory):
    model = _train(_dosed_screen(screen_factory))
    doses = [0, 0.01, 0.1, 1, 10, 100, 1000]
    emb = [model.predict_perturbation("g0", covariates={"line": "L1"}, dose=d) for d in doses]
    shifts = [np.linalg.norm(p.obsm["X_biojepa"][0] - emb[0].obsm["X_biojepa"][0]) for p in emb]
    assert shifts[0] == 0 and np.all(np.diff(shifts) >= -1e-6), shifts
    np.testing.assert_allclose(emb[0].layers["delta"], 0.0, atol=1e-6)  # dose 0 is the vehicle
    assert np.abs(emb[-1].layers["delta"]).sum() > np.abs(emb[1].layers["delta"]).sum()


def test_unseen_compound_is_predicted_from_its_features(screen_factory):
    adata = _dosed_screen(screen_factory)
    model = _train(adata, perturbation_features=_features())
    assert model.perturbation_features_.n_features == 6
    pred = model.predict_perturbation(["drug_new", "drug_new+g0"], covariates={"line": "L1"}, dose=1)
    assert pred.obs["source"].tolist() == ["predicted", "predicted"]
    assert np.isfinite(pred.X).all() and np.abs(pred.layers["delta"][0]).sum() > 0
    with pytest.raises(ValueError, match=r"\['drug_unknown'\].*perturbation_features"):
        model.predict_perturbation("drug_unknown", dose=1)


def test_features_survive_save_and_load(screen_factory, tmp_path):
    adata = _dosed_screen(screen_factory)
    model = _train(adata, perturbation_features=_features())
    before = model.predict_perturbation("drug_new", covariates={"line": "L1"}, dose=3)
    model.save(tmp_path / "m")
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata)
    after = loaded.predict_perturbation("drug_new", covariates={"line": "L1"}, dose=3)
    np.testing.assert_allclose(before.X, after.X, atol=1e-5)


def test_feature_table_must_name_training_perturbations(screen_factory):
    adata = _dosed_screen(screen_factory)
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", dose_key="dose")
    table = pd.DataFrame({"f": [1.0]}, index=["unrelated"])
    with pytest.raises(ValueError, match="index the table by perturbation name"):
        bj.BioJEPA(adata, perturbation_features=table)


def test_screen_ranks_the_compound_that_reaches_the_target(screen_factory):
    adata = _dosed_screen(screen_factory)
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", dose_key="dose")
    model = bj.BioJEPA(adata, n_latent=8, perturbation_features=_features())
    model.train(max_epochs=15, batch_size=64, enable_progress_bar=False)
    start = adata[(adata.obs.condition == "control").to_numpy()].copy()
    target = adata[(adata.obs.condition == "g1").to_numpy() & (adata.obs.dose == "10").to_numpy()].copy()
    library = _features()
    ranked = model.screen(library, target=target, adata=start, dose=[10])
    assert ranked.iloc[0]["condition"] == "g1", ranked
    chunked = model.screen(library, target=target, adata=start, dose=[10], chunk_size=1)
    pd.testing.assert_frame_equal(ranked, chunked)
    change = adata[target.obs_names].X.mean(0) - start.X.mean(0)
    signature = pd.Series(np.asarray(change).ravel(), index=adata.var_names)
    by_signature = model.screen(library, target=signature, adata=start, dose=[10])
    assert by_signature.iloc[0]["condition"] == "g1", by_signature
    # anchored expression predictions: g1 at 10 is measured, so it starts from its measured change
    by_expression = model.screen(library, target=target, adata=start, dose=[1, 10], space="expression")
    assert by_expression.iloc[0]["condition"] == "g1" and by_expression.iloc[0]["score"] > 0.5, by_expression
    assert len(by_expression) == 8 and by_expression["rank"].tolist() == list(range(1, 9))
    chunked = model.screen(library, target=target, adata=start, dose=[1, 10], space="expression", chunk_size=1)
    pd.testing.assert_frame_equal(by_expression, chunked)
    by_signature = model.screen(library, target=signature, adata=start, dose=[10], space="expression")
    assert by_signature.iloc[0]["condition"] == "g1", by_signature
    with pytest.raises(ValueError, match="`space` must be"):
        model.screen(library, target=target, adata=start, space="genes")
    with pytest.raises(ValueError, match="feature columns"):
        model.screen(library.iloc[:, :3], target=target, adata=start)
    with pytest.raises(TypeError, match="`target` must be"):
        model.screen(library, target=[1, 2], adata=start)


def test_interpolation_weight_recovers_a_known_mixture():
    from biojepa.model._dose_interpolation import interpolation_weight

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(5):
        fitted, interpolated = rng.normal(size=20), rng.normal(size=20)
        cases.append((0.3 * interpolated + 0.7 * fitted, fitted, interpolated))
    assert interpolation_weight(cases) == pytest.approx(0.3)
    assert interpolation_weight([(f, f, i) for _, f, i in cases]) == 0.0  # the fit alone is exact
    assert interpolation_weight([(2 * i - f, f, i) for _, f, i in cases]) == 1.0  # clipped


def test_unseen_interior_dose_blends_fit_and_log_dose_line(screen_factory, monkeypatch):
    """At weight 1, an unseen dose between measured ones gets the log-dose line through their observed changes."""
    adata = _dosed_screen(screen_factory)  # g0 measured at 0.1, 1 and 10
    model = _train(adata)
    kw = {"covariates": {"line": "L1"}}
    cls = type(model)
    monkeypatch.setattr(cls, "_dose_weight", lambda self, adata, state: 1.0)
    blended = model.predict_perturbation("g0", dose=3.0, **kw).layers["delta"][0]
    monkeypatch.setattr(cls, "_dose_weight", lambda self, adata, state: 0.0)
    fitted = model.predict_perturbation("g0", dose=3.0, **kw).layers["delta"][0]
    in_l1 = (adata.obs["line"] == "L1").to_numpy()
    g0 = adata[(adata.obs["condition"] == "g0").to_numpy() & in_l1]
    control = np.asarray(adata[(adata.obs["condition"] == "control").to_numpy() & in_l1].X.mean(0)).ravel()
    doses = g0.obs["dose"].astype(float).to_numpy()
    measured = np.array(sorted(set(doses)))
    change = np.stack([np.asarray(g0.X[doses == d].mean(0)).ravel() - control for d in measured])
    x = np.log(measured)
    slope = ((x - x.mean())[:, None] * (change - change.mean(0))).sum(0) / ((x - x.mean()) ** 2).sum()
    expected = change.mean(0) + slope * (np.log(3.0) - x.mean())  # the LogDoseLinear baseline's prediction
    np.testing.assert_allclose(blended, expected, atol=1e-4)
    assert np.abs(blended - fitted).max() > 1e-3  # weight 0 keeps the fit along the dose-response
    monkeypatch.undo()
    chosen = model.predict_perturbation("g0", dose=3.0, **kw).layers["delta"][0]  # on the segment between them
    w = float(np.dot(chosen - fitted, blended - fitted) / np.dot(blended - fitted, blended - fitted))
    assert -1e-6 <= w <= 1 + 1e-6
    np.testing.assert_allclose(chosen, (1 - w) * fitted + w * blended, atol=1e-4)


def test_screen_ranks_an_unseen_compound_by_the_trained_compounds_it_resembles():
    """Three pairs of compounds, each pair raising its own block of genes; features say the pair (its target)."""
    import anndata as ad

    rng = np.random.default_rng(0)
    n_genes, blocks = 30, [range(0, 10), range(10, 20), range(20, 30)]
    X, labels = [rng.normal(2.0, 0.3, size=(120, n_genes))], ["control"] * 120
    for k, block in enumerate(blocks):
        for name in (f"c{2 * k}", f"c{2 * k + 1}"):
            cells = rng.normal(2.0, 0.3, size=(60, n_genes))
            cells[:, list(block)] += 1.5
            X.append(cells)
            labels += [name] * 60
    adata = ad.AnnData(np.vstack(X).astype(np.float32), obs=pd.DataFrame({"condition": labels}))
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs["dose"] = np.where(adata.obs["condition"] == "control", "0", "1")
    target = np.repeat(np.eye(3), 2, axis=0)  # the pair's target, as fingerprint bits, plus noise bits
    rows = np.hstack([target, 0.1 * rng.random((6, 3))])
    new = [[0, 1, 0, 0.05, 0.0, 0.05], [0, 0, 1, 0.0, 0.05, 0.05]]  # on the second and on the third target
    features = pd.DataFrame(np.vstack([rows, new]), index=[f"c{i}" for i in range(6)] + ["new1", "new2"])
    features.columns = [f"bit{i}" for i in range(6)]
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", dose_key="dose")
    model = bj.BioJEPA(adata, n_latent=8, perturbation_features=features)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    second = pd.Series(1.0, index=adata.var_names[10:20])  # a signature: raise the second block
    ranked = model.screen(features.loc[["new1", "new2"]], target=second, dose=[1], space="expression")
    score = ranked.set_index("condition")["cosine"]
    # the trained compounds' mean change raises every block alike, so without the prior both would score about 1
    # on the second block's genes; new1's peers raise that block, new2's the third alone
    assert score["new1"] > 0.85 and score["new2"] < 0.4, score.to_dict()
    # predictions leave the prior out: new1 is predicted as the mean change plus its own learned deviation
    delta = model.predict_perturbation("new1", dose=1).layers["delta"][0]
    assert delta[10:20].mean() - np.r_[delta[:10], delta[20:]].mean() < 0.5
