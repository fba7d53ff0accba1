import numpy as np
import pytest
import scvi
import torch

import biojepa as bj

HELD_OUT = "g2"  # a gene never perturbed in training: calibration and unseen predictions


def _model(adata, epochs=10):
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(
        adata, perturbation_key="condition", control_value="control", categorical_covariate_keys=["line"]
    )
    model = bj.BioJEPA(adata, n_latent=8, n_embed=16, predictor_dim=16)
    model.train(max_epochs=epochs, batch_size=64, enable_progress_bar=False)
    return model


def _log_gap(model, adata, cells, label, covariates, dose=None):
    """Per gene: the generated counts' mean log expression minus the point prediction's, on the cells' sources.

    Both normalized by each source cell's library; the prediction's is the source cells' log expression moved by its
    change of mean log expression and floored at zero.
    """
    from biojepa.data import normalize_expression

    reference, groups, _ = model._reference(None, covariates)
    state = next(model._perturbation_states(reference, groups, model._parse_requests(label, dose), None))
    source = np.asarray(adata[cells.obs["source_cell"].astype(str).to_numpy()].X)
    reached = normalize_expression(np.asarray(cells.X), "counts", source.sum(1)).mean(0)
    target = np.maximum(normalize_expression(source, "counts") + state["d_log"] + state["offset"], 0.0).mean(0)
    return reached - target


@pytest.fixture(scope="module")
def counts(screen_factory):
    full = screen_factory(counts=True)
    train = full[full.obs["condition"] != HELD_OUT].copy()
    model = _model(train)
    model.train_generative(max_epochs=15, n_ensemble=2, batch_size=32)
    return model, train, full


def test_pairs_cover_every_observed_perturbation_of_every_group(counts):
    model, _, _ = counts
    pairs = model.generative_config_["pairs"]
    assert sorted(zip(pairs["group"], pairs["target"], strict=True)) == [
        (line, label) for line in ("L1", "L2") for label in ("g0", "g0+g1", "g1")
    ]
    assert len(model.generative_config_["final_loss"]) == 2


def test_sampled_counts_are_counts_and_carry_the_perturbation(counts):
    model, train, _ = counts
    before = (train.X.copy(), train.obs.copy())
    cells = model.sample_perturbation(["g0", "g1"], n_cells=300, covariates={"line": "L1"}, seed=1)
    assert cells.shape == (600, train.n_vars)
    assert list(cells.obs.columns) == ["condition", "line", "source_cell"]
    assert cells.obsm["X_biojepa"].shape == (600, 8)
    X = np.asarray(cells.X)
    assert (X >= 0).all() and np.array_equal(X, np.round(X))
    assert set(cells.obs["source_cell"]) <= set(train.obs_names[train.obs["condition"] == "control"])
    control = train.X[((train.obs["condition"] == "control") & (train.obs["line"] == "L1")).to_numpy()]
    g0 = X[(cells.obs["condition"] == "g0").to_numpy()]
    g1 = X[(cells.obs["condition"] == "g1").to_numpy()]
    # g0 scales genes 10-19 up four-fold, g1 genes 20-29: the generated cells show it, each in its own block
    assert g0[:, 10:20].mean() > 2.0 * control[:, 10:20].mean()
    assert g1[:, 20:30].mean() > 2.0 * control[:, 20:30].mean()
    assert g0[:, 20:30].mean() < 1.5 * control[:, 20:30].mean()
    np.testing.assert_array_equal(train.X, before[0])  # the training AnnData is left alone
    assert train.obs.equals(before[1])


def test_sampling_is_seeded_and_streams_in_chunks(counts):
    model, _, _ = counts
    a = model.sample_perturbation("g0+g1", n_cells=25, covariates={"line": "L2"}, seed=3, chunk_size=10)
    b = model.sample_perturbation("g0+g1", n_cells=25, covariates={"line": "L2"}, seed=3, chunk_size=10)
    c = model.sample_perturbation("g0+g1", n_cells=25, covariates={"line": "L2"}, seed=4, chunk_size=10)
    assert a.n_obs == 25 and a.obs_names.is_unique
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


def test_source_cells_are_drawn_evenly(counts):
    model, train, _ = counts
    is_control = (train.obs["condition"] == "control") & (train.obs["line"] == "L1")
    control = set(train.obs_names[is_control.to_numpy()])
    n = 2 * len(control) + 3  # in chunks of 7: the even draw spans the chunks
    cells = model.sample_perturbation("g1", n_cells=n, covariates={"line": "L1"}, chunk_size=7, seed=0)
    used = cells.obs["source_cell"].astype(str).value_counts()
    assert set(used.index) == control  # every control cell is a source
    assert sorted(used.value_counts().items()) == [(2, len(control) - 3), (3, 3)]  # twice each, three of them thrice


def test_hundred_thousand_cells_stream(counts):
    model, _, _ = counts
    cells = model.sample_perturbation(
        HELD_OUT, n_cells=100_000, covariates={"line": "L1"}, n_steps=2, chunk_size=25_000
    )
    assert cells.shape == (100_000, 60)
    assert np.isfinite(cells.obsm["X_biojepa"]).all()


def test_intervals_are_nested_and_calibration_covers_its_own_set(counts):
    model, _, full = counts
    pred = model.predict_uncertainty(["g0", HELD_OUT], covariates={"line": "L1"}, n_samples=100)
    X = np.asarray(pred.X)
    bounds = [pred.layers[k] for k in ("lower_95", "lower_80", "lower_50")]
    bounds += [X] + [pred.layers[k] for k in ("upper_50", "upper_80", "upper_95")]
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        assert (low <= high + 1e-5).all()
    assert (pred.obs["uncertainty"] > 0).all() and pred.uns["calibrated"] is False
    same = model.predict_perturbation(["g0", HELD_OUT], covariates={"line": "L1"}, return_uncertainty=True)
    np.testing.assert_allclose(
        same.layers["upper_80"],
        model.predict_uncertainty(["g0", HELD_OUT], covariates={"line": "L1"}).layers["upper_80"],
        rtol=1e-5,
    )
    held = full[full.obs["condition"].isin(["control", HELD_OUT]).to_numpy()].copy()
    table = model.calibrate_uncertainty(held, n_samples=100)
    assert table["quantile"].is_monotonic_increasing
    assert model.uncertainty_calibration_["perturbations"] == [HELD_OUT]
    pred = model.predict_uncertainty(HELD_OUT, n_cells=40, n_samples=100)
    coverage = bj.metrics.interval_coverage(pred, held, "condition", ["line"])
    # split conformal on the same perturbation: its own coverage reaches the level (up to Monte Carlo noise)
    assert coverage.loc[coverage["nominal"] == 0.8, "coverage"].mean() >= 0.7
    assert pred.uns["calibrated"] is True
    del model.uncertainty_calibration_


def test_calibration_scores_the_predictions_of_its_reference(counts):
    """The held-out gene is predicted from the training data, as `predict_uncertainty` predicts it by default.

    The held-out AnnData lacks the training singles that an unseen gene's prediction is anchored to, so predicting
    from it would score another predictor than the one whose intervals are calibrated.
    """
    model, _, full = counts
    held = full[full.obs["condition"].isin(["control", HELD_OUT]).to_numpy()].copy()
    model.calibrate_uncertainty(held, n_samples=50, seed=2)
    from_training = model.uncertainty_calibration_["quantiles"]
    cells = (held.obs["condition"] == HELD_OUT).to_numpy()
    sizes = held.obs.loc[cells, "line"].value_counts()
    assert sizes.nunique() == 1  # one n_cells serves both lines, so one call predicts them as calibration does
    del model.uncertainty_calibration_
    pred = model.predict_uncertainty(HELD_OUT, n_cells=int(sizes.iloc[0]), n_samples=50, seed=2)
    scores = []  # the scores recomputed from predict_uncertainty's own (uncalibrated) rows
    for i, line in enumerate(pred.obs["line"]):
        observed = np.asarray(held.X[cells & (held.obs["line"] == line).to_numpy()].mean(0), dtype=np.float64)
        scores.append(np.abs(observed.ravel() - np.asarray(pred.X[i], dtype=np.float64)) / pred.layers["scale"][i])
    from biojepa.model._uncertainty import CALIBRATION_LEVELS

    expected = np.quantile(np.concatenate(scores), CALIBRATION_LEVELS, method="higher")
    np.testing.assert_allclose(from_training, expected, rtol=1e-3)
    model.calibrate_uncertainty(held, reference=held, n_samples=50, seed=2)
    assert not np.allclose(model.uncertainty_calibration_["quantiles"], from_training, rtol=1e-2)
    del model.uncertainty_calibration_


def test_calibration_takes_a_perturbation_held_out_in_one_line_only(screen_factory):
    """g2 trains in L1 and is held out in L2: a pair never trained on, so it calibrates (the label alone was seen)."""
    full = screen_factory(counts=True)
    held_pair = ((full.obs["condition"] == "g2") & (full.obs["line"] == "L2")).to_numpy()
    model = _model(full[~held_pair].copy(), epochs=2)
    model.train_generative(max_epochs=2, n_ensemble=2, batch_size=32)
    held = full[held_pair | (full.obs["condition"] == "control").to_numpy()].copy()
    table = model.calibrate_uncertainty(held, n_samples=20)
    assert model.uncertainty_calibration_["n_scores"] == full.n_vars  # g2 in L2 only: one row of scores
    assert table["quantile"].is_monotonic_increasing
    seen_too = full[(full.obs["condition"].isin(["control", "g2"])).to_numpy()].copy()  # adds g2 in L1
    with pytest.raises(ValueError, match=r"\['g2 in L1'\] were in the training data"):
        model.calibrate_uncertainty(seen_too, n_samples=20)


def test_calibration_refuses_training_perturbations(counts):
    model, train, _ = counts
    with pytest.raises(
        ValueError, match=r"\['g0 in L1', 'g0 in L2', 'g0\+g1 in L1', .*'g1 in L2'\] were in the training data"
    ):
        model.calibrate_uncertainty(train)


def test_bad_arguments_name_the_value(counts):
    model, _, _ = counts
    with pytest.raises(ValueError, match="`n_cells` must be a positive integer, got 0"):
        model.sample_perturbation("g0", n_cells=0)
    with pytest.raises(ValueError, match=r"got \[1.5\]"):
        model.predict_uncertainty("g0", levels=(0.5, 1.5))
    with pytest.raises(ValueError, match="without `time_key`"):
        model.sample_trajectory([1.0])


def test_save_load_keeps_flows_and_refuses_a_pickled_head(counts, tmp_path):
    model, train, _ = counts
    model.save(tmp_path / "m", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=train)
    a = model.sample_perturbation("g1", n_cells=20, seed=0).obsm["X_biojepa"]
    np.testing.assert_allclose(loaded.sample_perturbation("g1", n_cells=20, seed=0).obsm["X_biojepa"], a, atol=1e-5)
    torch.save({"flow_state_dict": {"x": object()}}, tmp_path / "m" / "generative.pt")
    with pytest.raises(ValueError, match="Refusing to load .*generative.pt"):
        bj.BioJEPA.load(tmp_path / "m", adata=train)
    (tmp_path / "m" / "generative.pt").unlink()
    with pytest.raises(FileNotFoundError, match="generative.pt is missing"):
        bj.BioJEPA.load(tmp_path / "m", adata=train)


def test_log_input_gives_log_cells(screen_factory):
    adata = screen_factory(counts=False, n_cells=20)
    model = _model(adata, epochs=3)
    with pytest.raises(ValueError, match="call `model.train_generative\\(\\)` first"):
        model.sample_perturbation("g0")
    model.train_generative(max_epochs=5, n_ensemble=1)
    cells = model.sample_perturbation("g0", n_cells=50)
    X = np.asarray(cells.X)
    assert (X >= 0).all() and not np.array_equal(X, np.round(X))


def test_models_without_expression_head_raise():
    adata = scvi.data.synthetic_iid(batch_size=50, n_genes=30)
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=16, predictor_dim=16)
    with pytest.raises(ValueError, match="`perturbation_key` or `time_key`"):
        model.train_generative()


@pytest.fixture(scope="module")
def dosed(screen_factory):
    """g0 at doses 1 and 10 (dose 10 triples its block once more); g0 at dose 10 in L2 is held out of training."""
    full = screen_factory(counts=True)
    rng = np.random.default_rng(3)
    full.obs["dose"] = "0"
    full.obs.loc[full.obs["condition"] != "control", "dose"] = "1"
    full.obs.loc[full.obs["condition"] == "g0+g1", "dose"] = "1+1"
    g0 = np.flatnonzero((full.obs["condition"] == "g0").to_numpy())
    high = g0[rng.permutation(len(g0))[: len(g0) // 2]]
    full.obs.iloc[high, full.obs.columns.get_loc("dose")] = "10"
    full.X[np.ix_(high, np.arange(10, 20))] *= 3
    held_pair = ((full.obs["condition"] == "g0") & (full.obs["dose"] == "10") & (full.obs["line"] == "L2")).to_numpy()
    train = full[~held_pair].copy()
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(
        train, perturbation_key="condition", control_value="control", dose_key="dose",
        categorical_covariate_keys=["line"],
    )  # fmt: skip
    model = bj.BioJEPA(train, n_latent=8, n_embed=16, predictor_dim=16)
    model.train(max_epochs=10, batch_size=64, enable_progress_bar=False)
    pairs = model.train_generative(max_epochs=15, n_ensemble=2, batch_size=32)
    return model, pairs, full, held_pair


def test_flows_learn_each_dose_as_its_own_population(dosed):
    model, pairs, full, _ = dosed
    g0 = pairs[pairs["target"] == "g0"]
    assert sorted(zip(g0["group"], g0["dose"], strict=True)) == [("L1", "1"), ("L1", "10"), ("L2", "1")]
    assert pairs.loc[pairs["target"] == "g0+g1", "dose"].tolist() == ["1+1", "1+1"]
    low = model.sample_perturbation("g0", n_cells=400, covariates={"line": "L1"}, dose=1, seed=0)
    high = model.sample_perturbation("g0", n_cells=400, covariates={"line": "L1"}, dose=10, seed=0)
    assert low.obs["dose"].unique().tolist() == ["1"] and high.obs["dose"].unique().tolist() == ["10"]
    for cells, dose in ((low, 1), (high, 10)):  # the cells are centred on the prediction at their dose
        gap = _log_gap(model, full, cells, "g0", {"line": "L1"}, dose)[10:20]
        assert np.abs(gap.mean()) < 0.1, gap  # each cell keeps its own spread around the mean: genes differ a little
    block_low, block_high = np.asarray(low.X)[:, 10:20].mean(), np.asarray(high.X)[:, 10:20].mean()
    assert block_high > 2 * block_low  # dose 10 triples the block's counts


def test_calibration_with_doses_scores_a_held_out_dose(dosed):
    model, _, full, held_pair = dosed
    control = (full.obs["condition"] == "control").to_numpy()
    held = full[held_pair | (control & (full.obs["line"] == "L2").to_numpy())].copy()
    model.calibrate_uncertainty(held, n_samples=20)
    assert model.uncertainty_calibration_["n_scores"] == full.n_vars  # g0 at dose 10 in L2: one row of scores
    pred = model.predict_uncertainty("g0", covariates={"line": "L2"}, dose=10, n_samples=20)
    assert pred.uns["calibrated"] is True and (pred.layers["upper_80"] >= pred.X).all()
    del model.uncertainty_calibration_
    trained = held_pair | (full.obs["condition"] == "g0").to_numpy() & (full.obs["line"] == "L2").to_numpy()
    with pytest.raises(ValueError, match=r"\['g0 at 1 in L2'\] were in the training data"):
        model.calibrate_uncertainty(full[trained | control].copy(), n_samples=20)


def test_trajectory_cells_at_a_later_time():
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=30)
    adata.obs["hours"] = np.tile([0.0, 12.0, 24.0, 36.0], 50)
    bj.BioJEPA.setup_anndata(adata, time_key="hours", batch_key="batch")
    model = bj.BioJEPA(adata, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=2, enable_progress_bar=False)
    pairs = model.train_generative(max_epochs=3, n_ensemble=1)
    assert set(pairs["kind"]) == {"time"} and len(pairs) == 12  # 2 batches x 6 ordered pairs of time points
    cells = model.sample_trajectory([48.0], n_cells=40)
    assert cells.shape == (80, 30) and sorted(set(cells.obs["batch"])) == ["batch_0", "batch_1"]
    assert (np.asarray(cells.X) == np.round(np.asarray(cells.X))).all()  # synthetic_iid holds counts
    with pytest.raises(ValueError, match=r"\[36.0\] are not after the latest observation"):
        model.sample_trajectory([36.0, 48.0])


def test_generated_cells_are_centred_on_the_point_prediction(screen_factory):
    adata = screen_factory(counts=False, n_cells=20)
    model = _model(adata, epochs=3)
    model.train_generative(max_epochs=5, n_ensemble=1)
    assert model.generative_config_["spread"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # chosen on out-of-bag populations
    pred = model.predict_perturbation("g0+g1", covariates={"line": "L1"}).layers["delta"][0]
    up = pred > 0.5  # raised genes: no cell is clipped at zero there
    assert up.sum() >= 10

    def change(spread):
        model.generative_config_["spread"] = spread
        cells = model.sample_perturbation("g0+g1", n_cells=4000, covariates={"line": "L1"}, seed=2)
        moved = np.asarray(cells.X) - np.asarray(adata[cells.obs["source_cell"].astype(str).to_numpy()].X)
        return moved[:, up]

    # each source cell is drawn 4000 / 20 times on average: its mean over the draws is the centre measured on all
    whole, none = change(1.0), change(0.0)
    np.testing.assert_allclose(whole.mean(0), pred[up], atol=0.05)
    assert whole.std(0).mean() > 1e-3  # the cells spread around it: the flow's per-cell changes
    np.testing.assert_allclose(none, np.broadcast_to(pred[up], none.shape), atol=1e-4)  # no spread: the prediction


@pytest.fixture(scope="module")
def drifting():
    """Counts of 30 genes in 2 batches at 0, 12, 24 and 36 h; 10 genes rise over time. Trained on 0-24 h."""
    rng = np.random.default_rng(0)
    hours = np.repeat([0.0, 12.0, 24.0, 36.0], 120)
    batch = np.tile(["b0", "b1"], 240)
    rate = np.full((480, 30), 4.0)
    rate[:, :10] *= np.exp(hours / 24.0)[:, None]
    rate[batch == "b1", 10:20] *= 2.0
    import anndata as ad
    import pandas as pd

    full = ad.AnnData(rng.poisson(rate).astype(np.float32), obs=pd.DataFrame({"hours": hours, "batch": batch}))
    full.obs_names = [f"c{i}" for i in range(480)]
    full.var_names = [f"g{i}" for i in range(30)]
    train = full[hours < 30].copy()
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(train, time_key="hours", batch_key="batch")
    model = bj.BioJEPA(train, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=10, batch_size=64, enable_progress_bar=False)
    model.train_generative(max_epochs=10, n_ensemble=2)
    return model, train, full


def test_trajectory_cells_are_centred_on_the_point_prediction(drifting):
    _, _, full = drifting
    log = full[full.obs["hours"].to_numpy() < 30].copy()
    log.X = np.log1p(np.asarray(log.X))
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(log, time_key="hours", batch_key="batch")
    model = bj.BioJEPA(log, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=5, batch_size=64, enable_progress_bar=False)
    model.train_generative(max_epochs=5, n_ensemble=1)
    b0 = np.flatnonzero(log.obs["batch"].to_numpy() == "b0")
    chains = model.predict_trajectory(log, b0, time_points=[36.0])
    point = np.asarray(chains.X).mean(0) - np.asarray(log[chains.obs["anchor"].to_numpy()].X).mean(0)
    model.generative_config_["spread"] = 1.0  # perturbed cells would keep the flow's spread whole,
    model.generative_config_["trajectory_spread"] = 0.0  # but cells at later times take the backtest's share

    def moved(scale=None):
        if scale is not None:
            model.trajectory_change_scale_ = scale
        cells = model.sample_trajectory([36.0], n_cells=300, seed=1)
        cells = cells[(cells.obs["batch"] == "b0").to_numpy()]
        return np.asarray(cells.X) - np.asarray(log[cells.obs["source_cell"].astype(str).to_numpy()].X)

    change = moved()
    free = point > 0  # rising genes: no generated cell is floored at zero there
    assert free.sum() >= 5 and point[free].max() > 0.05
    np.testing.assert_allclose(change[:, free], np.broadcast_to(point[free], change[:, free].shape), atol=1e-4)
    np.testing.assert_allclose(moved(scale=0.0), 0.0, atol=1e-4)  # the backtested share: none of the change kept


def test_backtest_after_the_flows_chooses_the_spread_of_later_cells(drifting, monkeypatch, tmp_path):
    from biojepa.model._spread import SPREADS

    _, train, _ = drifting
    scvi.settings.seed = 0
    model = bj.BioJEPA(train, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    model.backtest_trajectory(max_epochs=1)
    assert "generative_config_" not in vars(model)  # no flows yet: nothing to choose
    model.train_generative(max_epochs=4, n_ensemble=2, batch_size=32)
    seen = {}
    real = bj.BioJEPA._backtest_spread

    def spy(self, adata, context, held, time_key, seed):
        seen.update(copy=self, held=held, distances=real(self, adata, context, held, time_key, seed))
        return seen["distances"]

    monkeypatch.setattr(bj.BioJEPA, "_backtest_spread", spy)
    spread = model.generative_config_["spread"]
    model.backtest_trajectory(max_epochs=1)
    assert model.generative_config_["spread"] == spread  # perturbed cells keep the out-of-bag share
    copy, held, distances = seen["copy"], seen["held"], seen["distances"]
    np.testing.assert_array_equal(held, train.obs["hours"].to_numpy() == 24.0)  # each batch's latest time
    assert copy is not model and copy.adata.n_obs == int((~held).sum())
    assert copy.generative_config_["n_ensemble"] == 1 and copy.generative_config_["fit"]["max_epochs"] == 4
    assert copy.trajectory_change_scale_ == model.trajectory_change_scale_
    assert distances.shape == (len(SPREADS),) and np.isfinite(distances).all() and (distances > 0).all()
    assert len(set(np.round(distances, 6))) > 1  # the shares give different cells
    chosen = model.generative_config_["trajectory_spread"]
    assert chosen == SPREADS[int(np.argmin(distances))]
    model.save(tmp_path / "m", overwrite=True)
    assert bj.BioJEPA.load(tmp_path / "m", adata=train).generative_config_["trajectory_spread"] == chosen
    model.train_generative(max_epochs=1, n_ensemble=1)  # new flows: the backtest's share no longer applies
    assert "trajectory_spread" not in model.generative_config_


def test_trajectory_intervals_per_group_and_time(drifting):
    model, train, _ = drifting
    pred = model.predict_trajectory_uncertainty([36.0, 48.0], n_samples=60)
    assert pred.obs[["hours", "batch"]].values.tolist() == [[36.0, "b0"], [48.0, "b0"], [36.0, "b1"], [48.0, "b1"]]
    assert pred.uns["calibrated"] is False and (pred.obs["uncertainty"] > 0).all()
    X = np.asarray(pred.X)
    bounds = [pred.layers[k] for k in ("lower_95", "lower_80", "lower_50")]
    bounds += [X] + [pred.layers[k] for k in ("upper_50", "upper_80", "upper_95")]
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        assert (low <= high + 1e-5).all()
    b1 = np.flatnonzero(train.obs["batch"].to_numpy() == "b1")
    chains = model.predict_trajectory(train, b1, time_points=[36.0])
    np.testing.assert_allclose(X[2], np.asarray(chains.X).mean(0), rtol=1e-4)  # the point: the chains' mean
    with pytest.raises(ValueError, match=r"\[24.0\] are not after the latest observation"):
        model.predict_trajectory_uncertainty([24.0])
    with pytest.raises(ValueError, match="n_samples"):
        model.predict_trajectory_uncertainty([36.0], n_samples=1)


def test_trajectory_calibration_on_a_held_out_time(drifting, tmp_path):
    model, train, full = drifting
    later = full[full.obs["hours"].to_numpy() == 36].copy()
    with pytest.raises(ValueError, match=r"Times \[24.0\] .* not after"):
        model.calibrate_trajectory_uncertainty(full[full.obs["hours"].to_numpy() >= 24].copy(), n_samples=60)
    table = model.calibrate_trajectory_uncertainty(later, n_samples=60)
    assert table["quantile"].is_monotonic_increasing and model.trajectory_calibration_["n_scores"] == 60
    pred = model.predict_trajectory_uncertainty([36.0], n_cells=60, n_samples=60)
    assert pred.uns["calibrated"] is True
    observed = np.vstack([np.asarray(later.X[later.obs["batch"].to_numpy() == b]).mean(0) for b in ("b0", "b1")])
    inside = (observed >= pred.layers["lower_80"]) & (observed <= pred.layers["upper_80"])
    assert inside.mean() >= 0.7  # split conformal on the same time: its own coverage reaches the level
    model.save(tmp_path / "m", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=train)
    assert loaded.trajectory_calibration_["quantiles"] == model.trajectory_calibration_["quantiles"]
    del model.trajectory_calibration_


def test_trajectory_intervals_refuse_sampled_time_courses():
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=20)
    adata.obs["subject"] = np.repeat([f"s{i}" for i in range(50)], 4)
    adata.obs["hours"] = np.tile([0.0, 12.0, 24.0, 36.0], 50)
    bj.BioJEPA.setup_anndata(adata, time_key="hours", sample_key="subject")
    model = bj.BioJEPA(adata, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.train_generative(max_epochs=1, n_ensemble=1)
    with pytest.raises(ValueError, match="population time courses"):
        model.predict_trajectory_uncertainty([48.0])


def test_generated_counts_keep_the_predicted_mean_log_expression(screen_factory, monkeypatch):
    """Counts drawn around an expected count have another mean log than its log: the decoding makes up for it."""
    from biojepa.model import _sampling

    adata = screen_factory(counts=True, n_cells=40)
    model = _model(adata, epochs=3)
    model.train_generative(max_epochs=5, n_ensemble=1)
    model.generative_config_["spread"] = 0.0  # every cell gets the point prediction's change

    def gap(bound):
        monkeypatch.setattr(_sampling, "_COUNT_SHIFT", bound)  # a shift bounded at zero is no shift
        cells = model.sample_perturbation("g0+g1", n_cells=4000, covariates={"line": "L1"}, seed=3)
        assert np.array_equal(np.asarray(cells.X), np.round(np.asarray(cells.X)))  # still counts
        return _log_gap(model, adata, cells, "g0+g1", {"line": "L1"})

    corrected = gap(_sampling._COUNT_SHIFT)
    plain = gap(0.0)  # no shift: the expected counts as the change gives them
    assert np.abs(plain).mean() > 0.3  # few counts per gene: the plain decoding misses the prediction
    np.testing.assert_allclose(corrected, 0.0, atol=0.15)
    assert np.abs(corrected).mean() < 0.2 * np.abs(plain).mean()
