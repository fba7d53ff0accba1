import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scvi

import biojepa as bj


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_history_one_panel_per_loss_with_train_and_validation():
    adata = scvi.data.synthetic_iid(batch_size=60, n_genes=30)
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=16, predictor_dim=16)
    model.train(max_epochs=3, check_val_every_n_epoch=1, enable_progress_bar=False)
    fig = bj.pl.history(model)
    assert [ax.get_title() for ax in fig.axes] == [
        "jepa loss",
        "vicreg variance",
        "vicreg covariance",
        "effective rank",
    ]
    train_line = fig.axes[0].lines[0]
    np.testing.assert_allclose(train_line.get_ydata(), model.history["jepa_loss_train"].to_numpy(dtype=float).ravel())
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(KeyError, match="train the model first"):
        bj.pl.history(model, keys=["nope"])


def test_umap_leaves_adata_untouched():
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((80, 2)), obs={"g": np.repeat(["a", "b"], 40)})
    adata.obsm["X_biojepa"] = np.r_[rng.normal(0, 1, (40, 3)), rng.normal(8, 1, (40, 3))]
    fig = bj.pl.umap(adata, color="g")
    assert fig.axes and set(adata.obsm) == {"X_biojepa"} and "neighbors" not in adata.uns
    with pytest.raises(KeyError, match="get_latent_representation"):
        bj.pl.umap(adata, color="g", use_rep="X_other")


def _toy():
    obs = {"condition": ["control"] * 20 + ["A"] * 20 + ["B"] * 20}
    X = np.ones((60, 6))
    X[20:40] += np.arange(6)
    X[40:] -= 0.5
    return ad.AnnData(X, obs=obs)


def test_delta_scatter_points_are_observed_and_predicted_deltas():
    adata = _toy()
    pred = bj.baselines.Additive().fit(adata, "condition", "control").predict_perturbation(["A"])
    ax = bj.pl.delta_scatter(pred, adata, "A", "condition", "control")
    xy = ax.collections[0].get_offsets()
    np.testing.assert_allclose(xy[:, 0], np.arange(6))  # observed delta of A
    np.testing.assert_allclose(xy[:, 1], np.arange(6), atol=1e-5)  # additive of a seen single = observed
    assert "Pearson Δ = 1.00" in ax.get_title()
    with pytest.raises(KeyError, match="'C'"):
        bj.pl.delta_scatter(pred, adata, "C", "condition", "control")


def test_metric_bars_heights_are_means():
    df = pd.DataFrame({"method": ["x", "x", "y"], "l2": [1.0, 3.0, 5.0]})
    ax = bj.pl.metric_bars(df, "l2")
    assert [p.get_height() for p in ax.patches] == [2.0, 5.0]
    with pytest.raises(KeyError, match="'mse'"):
        bj.pl.metric_bars(df, "mse")


def test_perturbation_embedding_points_are_principal_components():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 5))
    emb = ad.AnnData(
        X, obs=pd.DataFrame({"condition": list("ABCDEFGH"), "line": ["x", "y"] * 4}, index=list("01234567"))
    )
    ax = bj.pl.perturbation_embedding(emb, color="line", n_labels=3)
    points = np.vstack([c.get_offsets() for c in ax.collections])
    centered = X - X.mean(0)
    pcs = centered @ np.linalg.svd(centered, full_matrices=False)[2][:2].T
    order = np.r_[np.arange(0, 8, 2), np.arange(1, 8, 2)]  # drawn by color group: x first, then y
    np.testing.assert_allclose(np.abs(points), np.abs(pcs[order]), atol=1e-8)
    assert len(ax.texts) == 3
    with pytest.raises(KeyError, match="donor"):
        bj.pl.perturbation_embedding(emb, color="donor")


def _time_course():
    obs = pd.DataFrame({"subject": ["a"] * 3 + ["b"] * 3, "hours": [12.0, 0.0, 24.0] * 2})
    X = np.array([[1.0, 5.0], [0.0, 4.0], [2.0, 6.0], [3.0, 1.0], [2.0, 0.0], [4.0, 3.0]])
    adata = ad.AnnData(X, obs=obs)
    adata.var_names = ["g0", "g1"]
    adata.obsm["X_biojepa"] = np.c_[X[:, 0], np.zeros(6)]
    pred = ad.AnnData(
        np.array([[9.0, 7.0], [8.0, 2.0]]),
        obs=pd.DataFrame({"subject": ["a", "b"], "hours": [36.0, 36.0]}, index=["a@36", "b@36"]),
    )
    pred.var_names = ["g0", "g1"]
    pred.obsm["X_biojepa"] = np.array([[9.0, 0.0], [8.0, 0.0]])
    return adata, pred


def test_trajectory_lines_are_time_sorted_observations_and_predictions():
    adata, pred = _time_course()
    ax = bj.pl.trajectory(adata, pred, time_key="hours", sample_key="subject", gene="g1")
    observed, predicted = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(observed.get_xdata(), [0.0, 12.0, 24.0])
    np.testing.assert_allclose(observed.get_ydata(), [4.0, 5.0, 6.0])  # subject a's g1, sorted by time
    np.testing.assert_allclose(predicted.get_ydata(), [7.0])
    assert observed.get_color() == predicted.get_color()
    assert len(ax.lines) == 4
    # latent: PC1 of obsm (here the first column, up to sign); predictions projected on the same axis
    ax = bj.pl.trajectory(adata, pred, time_key="hours", sample_key="subject")
    y = np.abs(ax.lines[0].get_ydata())
    np.testing.assert_allclose(y, np.abs(np.array([0.0, 1.0, 2.0]) - 2.0), atol=1e-8)
    with pytest.raises(KeyError, match="donor"):
        bj.pl.trajectory(adata, time_key="hours", sample_key="donor")
    with pytest.raises(KeyError, match="g9"):
        bj.pl.trajectory(adata, time_key="hours", gene="g9")


def test_trajectory_population_is_mean_per_time():
    adata, pred = _time_course()
    ax = bj.pl.trajectory(adata, pred, time_key="hours", gene="g0")
    observed, predicted = (c.lines[0] for c in ax.containers)  # errorbar data lines
    np.testing.assert_allclose(observed.get_ydata(), [1.0, 2.0, 3.0])  # (0 + 2) / 2, (1 + 3) / 2, (2 + 4) / 2
    np.testing.assert_allclose(predicted.get_ydata(), [8.5])
