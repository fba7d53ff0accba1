import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.stats import energy_distance as scipy_energy_distance

from biojepa.baselines import Additive, NoChange
from biojepa.metrics import (
    direction_error,
    discrimination_score,
    energy_distance,
    evaluate,
    l2_top_expressed,
    mse_top_de,
    pearson_delta,
    top_de_genes,
    top_expressed_genes,
)
from biojepa.metrics._perturbation import _mean_pairwise_distance

COLUMNS = [
    "pearson_delta",
    "pearson_delta_top20",
    "mse_top20",
    "direction_error_top20",
    "l2_top1000",
    "discrimination",
    "energy_distance",
]


def test_pearson_delta_hand_computed():
    # deltas (1, 2, 4) and (1, 3, 5): centered (-4/3, -1/3, 5/3) and (-2, 0, 2) -> 6 / sqrt(42 / 9 * 8)
    assert pearson_delta([2.0, 3.0, 5.0], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]) == pytest.approx(6 / np.sqrt(42 / 9 * 8))
    assert pearson_delta([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert pearson_delta([3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(-1.0)
    # gene subsets by index and by mask: genes 0 and 2 -> deltas (1, 4), (1, 5): r = 1
    assert pearson_delta([2.0, 3.0, 5.0], [2.0, 9.0, 6.0], [1.0, 1.0, 1.0], genes=[0, 2]) == pytest.approx(1.0)
    mask = np.array([True, False, True])
    assert pearson_delta([2.0, 3.0, 5.0], [2.0, 9.0, 6.0], [1.0, 1.0, 1.0], genes=mask) == pytest.approx(1.0)
    assert np.isnan(pearson_delta([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [1.0, 1.0, 1.0]))  # zero predicted delta
    with pytest.raises(ValueError, match="at least 2 genes"):
        pearson_delta([1.0, 2.0], [1.0, 2.0], [0.0, 0.0], genes=[0])
    with pytest.raises(ValueError, match="mask has length 2"):
        pearson_delta([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], genes=[True, False])


def test_top_de_genes_abs_diff_and_welch():
    # gene 0: diff 4, Welch se = sqrt(32 / 2) = 4 -> t = 1; gene 1: diff 1, se = sqrt(.01 + .01) -> t = 7.07
    pert = np.array([[0.0, 2.0, 1.0], [8.0, 2.2, 1.0]])
    ctrl = np.array([[0.0, 1.0, 1.0], [0.0, 1.2, 1.0]])
    assert top_de_genes(pert, ctrl, n=3).tolist() == [0, 1, 2]
    assert top_de_genes(pert, ctrl, n=3, method="t-test").tolist() == [1, 0, 2]
    assert top_de_genes(sparse.csr_matrix(pert), sparse.csr_matrix(ctrl), n=2, method="t-test").tolist() == [1, 0]
    assert top_de_genes(pert, ctrl, n=50).size == 3
    # zero variance with a difference ranks first under the t-test
    assert top_de_genes(np.array([[0.0, 5.0], [4.0, 5.0]]), np.array([[0.0, 1.0], [0.0, 1.0]]), 1, "t-test")[0] == 1
    with pytest.raises(ValueError, match="Unknown DE method"):
        top_de_genes(pert, ctrl, method="wilcoxon")


def test_mse_direction_l2_hand_computed():
    assert mse_top_de([1.0, 2.0, 3.0], [1.0, 4.0, 4.0], [1, 2]) == pytest.approx(2.5)
    assert mse_top_de([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0, 1, 2]) == 0.0
    # signs of deltas: pred (+, -, 0), true (+, +, +): 2 of 3 wrong
    assert direction_error([1.0, -1.0, 0.0], [2.0, 1.0, 3.0], [0.0, 0.0, 0.0], [0, 1, 2]) == pytest.approx(2 / 3)
    assert direction_error([1.0, -1.0, 0.0], [2.0, 1.0, 3.0], [0.0, 0.0, 0.0], [0]) == 0.0
    assert l2_top_expressed([0.0, 3.0, 9.0], [4.0, 0.0, 0.0], [0, 1]) == pytest.approx(5.0)
    assert top_expressed_genes(np.array([[0.0, 3.0, 1.0], [0.0, 1.0, 2.0]]), n=2).tolist() == [1, 2]
    assert top_expressed_genes(sparse.csr_matrix([[0.0, 3.0, 1.0], [0.0, 1.0, 2.0]]), n=10).tolist() == [1, 2, 0]


def test_discrimination_score_follows_cell_eval():
    true = {"A": np.array([0.0, 0.0]), "B": np.array([1.0, 0.0]), "C": np.array([5.0, 5.0])}
    assert discrimination_score(true, true) == {"A": 0.0, "B": 0.0, "C": 0.0}  # perfect
    scores = discrimination_score({"A": np.array([0.9, 0.0]), "C": np.array([0.0, 0.1])}, true)
    assert scores == {"A": pytest.approx(1 / 3), "C": pytest.approx(2 / 3)}  # C: worst = (N - 1) / N
    # leaving out gene 0 (e.g. the target gene) makes A and B tie on A's prediction: ties favour A
    assert discrimination_score({"A": np.array([0.9, 0.0])}, true, exclude={"A": [0]}) == {"A": 0.0}
    # l1 vs l2: |.6| < .4 + .3 but .6 > sqrt(.16 + .09)
    pair = {"A": np.array([0.0, 0.0]), "B": np.array([1.0, 0.3])}
    assert discrimination_score({"A": np.array([0.6, 0.0])}, pair, metric="l1") == {"A": 0.0}
    assert discrimination_score({"A": np.array([0.6, 0.0])}, pair, metric="l2") == {"A": 0.5}
    with pytest.raises(KeyError, match="'D'"):
        discrimination_score({"D": np.zeros(2)}, true)
    with pytest.raises(ValueError, match="Unknown metric"):
        discrimination_score(true, true, metric="cosine")


def test_energy_distance_hand_computed():
    assert energy_distance(np.array([[0.0], [1.0]]), np.array([[3.0]])) == pytest.approx(4.5)
    # E|X-Y| = (0 + 5) / 2, E|X-X'| = (0 + 5 + 5 + 0) / 4, E|Y-Y'| = 0 -> 2.5
    assert energy_distance(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])) == pytest.approx(2.5)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 4)), rng.normal(1.0, size=(20, 4))
    assert energy_distance(X, X) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(X, Y) == pytest.approx(energy_distance(Y, X))
    assert energy_distance(sparse.csr_matrix(X), Y) == pytest.approx(energy_distance(X, Y))
    # chunking changes nothing
    assert _mean_pairwise_distance(X, Y, chunk_elements=7) == pytest.approx(_mean_pairwise_distance(X, Y))
    # in 1-D, scipy's energy distance is the square root of ours
    assert energy_distance(X[:, :1], Y[:, :1]) == pytest.approx(scipy_energy_distance(X[:, 0], Y[:, 0]) ** 2)
    with pytest.raises(ValueError, match="different numbers of genes"):
        energy_distance(X, Y[:, :2])


@pytest.fixture
def observed():
    rng = np.random.default_rng(0)
    deltas = {"control": np.zeros(5), "A": np.array([2.0, 0, 0, -1, 0]), "B": np.array([0, 1.5, 0, 0, 1.0])}
    deltas["A+B"] = deltas["A"] + deltas["B"] + np.array([0, 0, 1.0, 0, 0])
    labels = [label for label in deltas for _ in range(12)]
    X = 3.0 + np.vstack([deltas[label] for label in labels]) + rng.normal(0, 0.3, (len(labels), 5))
    obs = pd.DataFrame({"condition": labels, "cell_type": "k562"}, index=[f"cell{i}" for i in range(len(labels))])
    adata = ad.AnnData(X.astype(np.float32), obs=obs)
    adata.var_names = [f"g{i}" for i in range(5)]
    return adata


def _observed_means(adata, labels, observed_labels=None):
    observed_labels = observed_labels or labels
    X = np.vstack([adata.X[(adata.obs["condition"] == label).to_numpy()].mean(0) for label in observed_labels])
    return ad.AnnData(X, obs=pd.DataFrame({"condition": labels, "cell_type": "k562"}, index=labels), var=adata.var)


def test_evaluate_perfect_prediction(observed):
    before = copy.deepcopy(observed)
    pred = _observed_means(observed, ["A", "B+A"], ["A", "A+B"])  # gene order in labels does not matter
    res = evaluate(pred, observed, "condition", "control", covariate_keys=["cell_type"], n_de=3)
    assert list(res.columns) == [
        "condition",
        "cell_type",
        "n_cells",
        "pearson_delta",
        "pearson_delta_top3",
        "mse_top3",
        "direction_error_top3",
        "l2_top1000",
        "discrimination",
        "energy_distance",
    ]
    assert list(res.index) == ["A", "B+A"] and res["n_cells"].tolist() == [12, 12]
    np.testing.assert_allclose(res[["pearson_delta", "pearson_delta_top3"]], 1.0, atol=1e-6)
    np.testing.assert_allclose(res[["mse_top3", "direction_error_top3", "l2_top1000", "discrimination"]], 0, atol=1e-6)
    cells = observed.X[(observed.obs["condition"] == "A").to_numpy()]
    assert res.loc["A", "energy_distance"] == pytest.approx(energy_distance(cells, pred.X[:1]), rel=1e-6)
    np.testing.assert_array_equal(observed.X, before.X)
    pd.testing.assert_frame_equal(observed.obs, before.obs)


def test_evaluate_baselines_on_synthetic(observed):
    train = observed[observed.obs["condition"] != "A+B"].copy()
    additive = Additive().fit(train, "condition", "control").predict_perturbation(["A+B"])
    nochange = NoChange().fit(train, "condition", "control").predict_perturbation(["A+B"])
    res_add = evaluate(additive, observed, "condition", "control")
    res_no = evaluate(nochange, observed, "condition", "control")
    assert list(res_add.columns) == ["condition", "n_cells", *COLUMNS]
    assert res_add["pearson_delta"].iloc[0] > 0.8
    assert np.isnan(res_no["pearson_delta"].iloc[0]) and res_no["direction_error_top20"].iloc[0] == 1.0
    assert res_add["l2_top1000"].iloc[0] < res_no["l2_top1000"].iloc[0]
    # var order of pred is aligned by name
    res_perm = evaluate(additive[:, ::-1].copy(), observed, "condition", "control")
    np.testing.assert_allclose(res_perm[COLUMNS].to_numpy(float), res_add[COLUMNS].to_numpy(float))


def test_evaluate_errors(observed):
    pred = _observed_means(observed, ["A"])
    with pytest.raises(KeyError, match="Perturbation 'A' has no cells"):
        evaluate(pred, observed[observed.obs["condition"] != "A"], "condition", "control")
    with pytest.raises(KeyError, match="'batch' not found in pred.obs"):
        evaluate(pred, observed, "condition", "control", covariate_keys=["batch"])
    bad = pred.copy()
    bad.obs["cell_type"] = "hepg2"
    with pytest.raises(KeyError, match="hepg2"):
        evaluate(bad, observed, "condition", "control", covariate_keys=["cell_type"])
    with pytest.raises(ValueError, match="control"):
        evaluate(_observed_means(observed, ["control"]), observed, "condition", "control")
    renamed = pred.copy()
    renamed.var_names = [f"x{i}" for i in range(5)]
    with pytest.raises(ValueError, match="not in adata.var_names"):
        evaluate(renamed, observed, "condition", "control")


def test_evaluate_additive_on_norman():
    import biojepa as bj

    try:
        adata = bj.datasets.norman2019_perturbench()
    except FileNotFoundError as err:  # pragma: no cover - data not available
        pytest.skip(str(err))
    held_out = "KLF1+MAP2K6"
    train = adata[adata.obs["condition"] != held_out].copy()
    pred = Additive().fit(train, "condition", "control", covariate_keys=["cell_type"]).predict_perturbation(held_out)
    res = evaluate(pred, adata, "condition", "control", covariate_keys=["cell_type"])
    assert res.shape[0] == 1 and list(res.columns) == ["condition", "cell_type", "n_cells", *COLUMNS]
    assert np.isfinite(res[COLUMNS].to_numpy(float)).all()
    assert res["pearson_delta_top20"].iloc[0] > 0.5
    assert 0 <= res["discrimination"].iloc[0] < 1
