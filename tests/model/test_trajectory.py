import numpy as np
import pandas as pd
import pytest
import scvi
from anndata import AnnData

import biojepa as bj
from biojepa._constants import LOSS_KEYS

TIMES = (0.0, 12.0, 24.0, 36.0)
N_LATENT = 6
SMALL = {"n_latent": N_LATENT, "n_embed": 16, "n_heads": 2, "predictor_dim": 16, "n_layers": 1, "predictor_depth": 1}


def make_course(n_subjects=40, times=TIMES, n_genes=24, seed=0, prefix="s"):
    """Paired time course of counts: each subject seen at every time; gene means drift linearly with time."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 2.0, n_genes) + 1.0
    slope = np.linspace(-0.6, 1.5, n_genes) / max(times)  # some genes go down, most go up
    rows, obs = [], []
    for s in range(n_subjects):
        size = rng.gamma(20.0, 1 / 20.0)
        site = "A" if s % 2 == 0 else "B"
        for t in times:
            mu = base * np.clip(1.0 + slope * t, 0.1, None) * size * (1.3 if site == "B" else 1.0)
            rows.append(rng.poisson(mu))
            obs.append((f"{prefix}{s}", t, site))
    X = np.vstack(rows).astype(np.float32)
    X[:, 0] += 1  # no all-zero cell
    obs = pd.DataFrame(obs, columns=["subject", "hours", "site"], index=[f"{prefix}c{i}" for i in range(len(X))])
    adata = AnnData(X, obs=obs)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obs["day"] = adata.obs["hours"] / 24.0
    return adata


def _train(adata, epochs=3, model_kwargs=None, **setup):
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(adata, **setup)
    model = bj.BioJEPA(adata, **SMALL, **(model_kwargs or {}))
    model.train(max_epochs=epochs, batch_size=64, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def paired():
    adata = make_course()
    model = _train(
        adata, model_kwargs={"smoothness_weight": 0.1}, time_key="hours", sample_key="subject", batch_key="site"
    )
    return model, adata


def test_setup_errors():
    adata = make_course(n_subjects=3)
    with pytest.raises(KeyError, match="'hour'"):
        bj.BioJEPA.setup_anndata(adata, time_key="hour")
    with pytest.raises(KeyError, match="'patient'"):
        bj.BioJEPA.setup_anndata(adata, time_key="hours", sample_key="patient")
    with pytest.raises(ValueError, match="pass `time_key`"):
        bj.BioJEPA.setup_anndata(adata, sample_key="subject")
    adata.obs["stage"] = np.where(adata.obs["hours"] > 12, "late", "early")
    with pytest.raises(ValueError, match="'stage'"):
        bj.BioJEPA.setup_anndata(adata, time_key="stage", sample_key="subject")
    adata.obs.loc[adata.obs_names[4], "hours"] = np.nan
    with pytest.raises(ValueError, match="'hours'.*missing"):
        bj.BioJEPA.setup_anndata(adata, time_key="hours", sample_key="subject")


def test_training_logs_dynamic_losses(paired):
    model, _ = paired
    for key in (LOSS_KEYS.DYNAMIC, LOSS_KEYS.SMOOTHNESS, LOSS_KEYS.JEPA):
        values = model.history[f"{key}_train"].to_numpy(dtype=float)
        assert values.shape == (3, 1) and np.isfinite(values).all(), key
    assert (model.history[f"{LOSS_KEYS.DYNAMIC}_train"].to_numpy(dtype=float) > 0).all()
    assert (model.history[f"{LOSS_KEYS.SMOOTHNESS}_train"].to_numpy(dtype=float) > 0).all()  # weight 0.1: computed
    assert float(model.module.time_scale) == 12.0  # median gap between time points


def test_predict_paired_layout(paired):
    model, adata = paired
    pred = model.predict_trajectory(time_points=[48.0, 60.0])
    S, Q = 40, 2
    assert pred.shape == (S * Q, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert list(pred.obs.columns) == ["subject", "hours", "site", "anchor"]
    subjects = pd.unique(adata.obs["subject"])
    np.testing.assert_array_equal(pred.obs["subject"], np.repeat(subjects, Q))
    np.testing.assert_array_equal(pred.obs["hours"], np.tile([48.0, 60.0], S))
    site = adata.obs.groupby("subject", observed=True)["site"].first()
    np.testing.assert_array_equal(pred.obs["site"], site[pred.obs["subject"]].to_numpy())
    # the anchor is each subject's last observation
    last = adata.obs[adata.obs["hours"] == max(TIMES)].set_index("subject")
    anchors = pd.Series(adata.obs_names[adata.obs["hours"] == max(TIMES)], index=last.index)
    np.testing.assert_array_equal(pred.obs["anchor"], anchors[pred.obs["subject"]].to_numpy())
    assert pred.obs_names.is_unique
    assert np.isfinite(pred.X).all()  # non-negativity: test_counts_output_is_non_negative
    assert np.median(pred.X) > 1.0  # on the counts scale, not log1p-normalized (anchors have ~10 counts/gene)
    assert pred.obsm["X_biojepa"].shape == (S * Q, N_LATENT) and np.isfinite(pred.obsm["X_biojepa"]).all()
    z = pred.obsm["X_biojepa"].reshape(S, Q, N_LATENT)
    assert not np.allclose(z[:, 0], z[:, 1], atol=1e-4)  # the prediction depends on the requested time
    assert not np.allclose(z[0], z[1], atol=1e-4)  # and on the subject


def test_predict_paired_subset_and_order(paired):
    model, adata = paired
    full = model.predict_trajectory(time_points=[48.0, 24.0])
    rows = np.flatnonzero(adata.obs["subject"].isin(["s3", "s7"]).to_numpy())
    part = model.predict_trajectory(indices=rows[::-1], time_points=[48.0, 24.0])  # order of cells is irrelevant
    assert sorted(pd.unique(part.obs["subject"])) == ["s3", "s7"]
    # each subject is predicted from its own observations only
    ref = full[part.obs_names]
    np.testing.assert_allclose(part.obsm["X_biojepa"], ref.obsm["X_biojepa"], atol=1e-5)
    np.testing.assert_allclose(part.X, ref.X, rtol=1e-4, atol=1e-3)


def test_user_anndata_not_mutated_and_new_subjects(paired):
    model, adata = paired
    query = make_course(n_subjects=5, seed=1, prefix="new")
    query.layers["raw"] = query.X.copy()
    query.obsm["X_pca"] = np.zeros((query.n_obs, 2), dtype=np.float32)
    before = query.copy()
    pred = model.predict_trajectory(query, time_points=[48.0])
    assert pred.shape == (5, query.n_vars)
    assert list(pred.obs["subject"]) == [f"new{i}" for i in range(5)]
    assert set(pred.obs["anchor"]) == set(query.obs_names[query.obs["hours"] == max(TIMES)])
    assert np.isfinite(pred.X).all()
    pd.testing.assert_frame_equal(query.obs, before.obs)
    np.testing.assert_array_equal(query.X, before.X)
    assert list(query.obsm.keys()) == list(before.obsm.keys())
    assert list(query.layers.keys()) == list(before.layers.keys())
    assert list(query.uns.keys()) == list(before.uns.keys())
    # the training AnnData is not changed either
    obs_before = adata.obs.copy()
    model.predict_trajectory(time_points=[48.0])
    pd.testing.assert_frame_equal(adata.obs, obs_before)


def test_rollout(paired):
    model, _ = paired
    direct = model.predict_trajectory(time_points=[48.0, 60.0])
    rolled = model.predict_trajectory(time_points=[48.0, 60.0], rollout_step=12.0)
    assert rolled.shape == direct.shape
    pd.testing.assert_frame_equal(rolled.obs, direct.obs)
    z_direct = direct.obsm["X_biojepa"].reshape(40, 2, N_LATENT)
    z_rolled = rolled.obsm["X_biojepa"].reshape(40, 2, N_LATENT)
    # 48 is one step after the last observation: predicted from the observations alone, as directly
    np.testing.assert_allclose(z_rolled[:, 0], z_direct[:, 0], atol=1e-5)
    # 60 is predicted with the rolled-out point at 48 in the context
    assert not np.allclose(z_rolled[:, 1], z_direct[:, 1], atol=1e-4)
    assert np.isfinite(rolled.X).all()
    with pytest.raises(ValueError, match="rollout_step"):
        model.predict_trajectory(time_points=[48.0], rollout_step=0.0)


def test_counts_output_is_non_negative(paired):
    model, adata = paired
    pred = model.predict_trajectory(time_points=[48.0, 60.0])
    anchor_counts = np.repeat(adata[pd.unique(pred.obs["anchor"])].X, 2, axis=0)
    assert (anchor_counts == 0).any()  # the case that matters: genes not detected in the anchor cell
    assert (pred.X >= 0).all()


def test_save_load_same_predictions(paired, tmp_path):
    model, adata = paired
    pred = model.predict_trajectory(time_points=[48.0, 60.0])
    model.save(tmp_path / "model", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "model", adata=adata)
    again = loaded.predict_trajectory(time_points=[48.0, 60.0])
    pd.testing.assert_frame_equal(again.obs, pred.obs)
    np.testing.assert_array_equal(again.obsm["X_biojepa"], pred.obsm["X_biojepa"])
    np.testing.assert_array_equal(again.X, pred.X)


def test_time_points_errors(paired):
    model, adata = paired
    for bad in ([], None, [48.0, np.nan], [np.inf]):
        with pytest.raises(ValueError, match="time_points"):
            model.predict_trajectory(time_points=bad)
    query = adata[:8].copy()
    del query.obs["subject"]
    with pytest.raises(KeyError, match="'subject'"):
        model.predict_trajectory(query, time_points=[48.0])


def make_population(seed=0, n_genes=20):
    """Unpaired snapshots: batch b1 at 0, 1, 2 days and batch b2 at 0, 1, 2, 3 days; means drift with time."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 2.0, n_genes) + 1.0
    slope = np.linspace(-0.2, 0.6, n_genes)
    rows, obs = [], []
    for batch, times, n in (("b1", (0, 1, 2), 16), ("b2", (0, 1, 2, 3), 12)):
        for t in times:
            rows.append(rng.poisson(base * (1.0 + slope * t), size=(n, n_genes)))
            obs += [(batch, float(t))] * n
    X = np.vstack(rows).astype(np.float32)
    X[:, 0] += 1
    adata = AnnData(X, obs=pd.DataFrame(obs, columns=["batch", "day"], index=[f"p{i}" for i in range(len(X))]))
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    return adata


def test_population_mode():
    adata = make_population()
    model = _train(adata, epochs=2, time_key="day", batch_key="batch")
    assert f"{LOSS_KEYS.DYNAMIC}_train" in model.history
    pred = model.predict_trajectory(time_points=[4.0, 5.0], seed=0)
    latest = adata.obs.groupby("batch")["day"].transform("max")
    ends = adata.obs_names[(adata.obs["day"] == latest).to_numpy()]
    S = len(ends)  # one chain per cell of each batch's latest time point
    assert S == 16 + 12
    assert pred.shape == (2 * S, adata.n_vars)
    assert list(pred.obs.columns) == ["chain", "day", "batch", "anchor"]
    assert pred.obs["chain"].nunique() == S
    np.testing.assert_array_equal(pred.obs["day"], np.tile([4.0, 5.0], S))
    assert sorted(pd.unique(pred.obs["anchor"])) == sorted(ends)
    np.testing.assert_array_equal(pred.obs["batch"], adata.obs.loc[pred.obs["anchor"], "batch"].to_numpy())
    assert np.isfinite(pred.X).all()
    assert pred.obsm["X_biojepa"].shape == (2 * S, N_LATENT)
    # the coupling is seeded
    again = model.predict_trajectory(time_points=[4.0, 5.0], seed=0)
    np.testing.assert_array_equal(again.obsm["X_biojepa"], pred.obsm["X_biojepa"])


def test_static_model_has_no_time_course():
    adata = make_course(n_subjects=10)
    model = _train(adata, epochs=1)
    assert f"{LOSS_KEYS.JEPA}_train" in model.history
    assert f"{LOSS_KEYS.DYNAMIC}_train" not in model.history
    assert f"{LOSS_KEYS.SMOOTHNESS}_train" not in model.history
    with pytest.raises(ValueError, match="without a time course"):
        model.predict_trajectory(time_points=[48.0])


def test_log_scale_with_negative_values():
    """qPCR-like ΔCt: log scale, below zero; accepted when declared, rejected by detection."""
    rng = np.random.default_rng(0)
    adata = make_course(n_subjects=12, n_genes=16)
    adata.X = (np.log2(adata.X + 1) - 3.0 + 0.1 * rng.normal(size=adata.shape)).astype(np.float32)
    assert (adata.X < 0).any()
    with pytest.raises(ValueError, match="negative values"):
        bj.BioJEPA.setup_anndata(adata, time_key="day", sample_key="subject")
    model = _train(adata, epochs=1, input_scale="log", time_key="day", sample_key="subject")
    assert model.input_scale == "log"
    pred = model.predict_trajectory(time_points=[2.0])
    assert pred.shape == (12, 16) and np.isfinite(pred.X).all()
    assert (pred.X < 0).any()  # stays on the input (log) scale
    query = adata[:8].copy()
    assert model.predict_trajectory(query, time_points=[2.0]).shape == (2, 16)  # negative query accepted too


# ---------------------------------------------------------------------------------------------------------- backtest
def test_change_scale_moves_predictions_towards_the_anchor(paired):
    model, adata = paired
    ctx = np.flatnonzero(adata.obs["hours"].to_numpy() <= 24)
    full = model.predict_trajectory(adata, indices=ctx, time_points=[36.0], change_scale=1.0)
    half = model.predict_trajectory(adata, indices=ctx, time_points=[36.0], change_scale=0.5)
    still = model.predict_trajectory(adata, indices=ctx, time_points=[36.0], change_scale=0.0)
    anchors = adata[still.obs["anchor"]]
    np.testing.assert_allclose(still.X, anchors.X, rtol=1e-4, atol=1e-3)  # carried forward, on the count scale
    z_anchor = still.obsm["X_biojepa"]
    np.testing.assert_allclose(half.obsm["X_biojepa"], (z_anchor + full.obsm["X_biojepa"]) / 2, atol=1e-5)
    assert not np.allclose(full.obsm["X_biojepa"], z_anchor)
    with pytest.raises(ValueError, match=r"`change_scale` must lie in \[0, 1\], got 1.5"):
        model.predict_trajectory(adata, indices=ctx, time_points=[36.0], change_scale=1.5)


def test_backtest_holds_back_each_sequence_latest_third_and_sets_the_scale(paired, tmp_path):
    model, adata = paired
    before = adata.copy()
    held = model._held_back("hours", "subject")
    # 4 times per subject: the latest ceil(4 / 3) = 2 are held back, 2 stay as context
    np.testing.assert_array_equal(held, adata.obs["hours"].to_numpy() >= 24)
    table = model.backtest_trajectory(max_epochs=2)
    assert list(table.columns) == ["change_scale", "mse", "chosen"]
    assert len(table) == 21 and int(table["chosen"].sum()) == 1
    chosen = table.loc[table["chosen"], "change_scale"].item()
    assert model.trajectory_change_scale_ == chosen
    assert table.loc[table["chosen"], "mse"].item() == table["mse"].min()
    assert np.isfinite(table["mse"]).all() and (table["mse"] > 0).all()
    # at share 0 the error is that of carrying each subject's latest context observation forward, in log space
    log = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)
    obs = adata.obs
    carry = []
    for _, rows in obs.groupby("subject", observed=True).indices.items():
        t = obs["hours"].to_numpy()[rows]
        anchor = log[rows[t == 12.0]][0]
        carry += [np.mean((anchor - log[rows[t == tt]][0]) ** 2) for tt in (24.0, 36.0)]
    np.testing.assert_allclose(table["mse"].iloc[0], np.mean(carry), rtol=1e-4)
    # the stored share is what predict_trajectory uses by default, and it is saved with the model
    ctx = np.flatnonzero(adata.obs["hours"].to_numpy() <= 24)
    default = model.predict_trajectory(adata, indices=ctx, time_points=[36.0])
    explicit = model.predict_trajectory(adata, indices=ctx, time_points=[36.0], change_scale=chosen)
    np.testing.assert_array_equal(default.X, explicit.X)
    model.save(tmp_path / "m", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata)
    assert loaded.trajectory_change_scale_ == chosen
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    np.testing.assert_array_equal(adata.X, before.X)
    del model.trajectory_change_scale_  # the module-scoped model predicts as trained for the other tests


def test_backtest_of_populations_and_its_errors():
    adata = make_population()
    model = _train(adata, epochs=2, time_key="day", batch_key="batch")
    held = model._held_back("day", None)
    latest = adata.obs["day"].to_numpy() == adata.obs.groupby("batch")["day"].transform("max").to_numpy()
    np.testing.assert_array_equal(held, latest)  # both batches have >= 3 times
    table = model.backtest_trajectory(max_epochs=1)
    assert 0.0 <= model.trajectory_change_scale_ <= 1.0 and np.isfinite(table["mse"]).all()
    short = make_population()
    short = short[short.obs["day"] <= 1].copy()  # two times per batch: nothing to hold back
    two = _train(short, epochs=1, time_key="day", batch_key="batch")
    with pytest.raises(ValueError, match="three or more"):
        two.backtest_trajectory(max_epochs=1)
    static = _train(make_course(n_subjects=4), epochs=1)
    with pytest.raises(ValueError, match="needs a time course"):
        static.backtest_trajectory()
