import copy
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from biojepa.baselines import Additive, Linear, NoChange, PerturbationBaseline, TrainMean
from biojepa.metrics import pearson_delta

GENES = [f"g{i}" for i in range(6)]
CTRL = {"a": np.full(6, 5.0), "b": np.full(6, 3.0)}
DELTA = {
    "A": np.array([1.0, 0.0, -1.0, 0.0, 2.0, 0.0]),
    "B": np.array([0.0, 2.0, 0.0, -1.0, 0.0, 1.0]),
    "C": np.array([0.5, 0.5, 0.5, 0.0, 0.0, -0.5]),
}
NOISE = np.array([[0.2, -0.1, 0.3, 0.1, -0.2, 0.1], [-0.2, 0.1, -0.3, -0.1, 0.2, -0.1]])  # zero-mean pair


def _make(conditions):
    """Cells of (cell_type, label) pairs whose means are exactly ctrl + sum of single deltas."""
    rows, obs = [], []
    for cell_type, label in conditions:
        genes = [] if label == "control" else label.split("+")
        mean = CTRL[cell_type] + sum((DELTA[g] for g in genes), np.zeros(6))
        for noise in np.r_[NOISE, NOISE]:
            rows.append(mean + noise)
            obs.append({"condition": label, "cell_type": cell_type})
    adata = ad.AnnData(
        np.array(rows, dtype=np.float32), obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(len(obs))])
    )
    adata.var_names = GENES
    adata.obs["condition"] = adata.obs["condition"].astype("category")
    return adata


@pytest.fixture
def train():
    conds = [("a", "control"), ("a", "A"), ("a", "B"), ("a", "C"), ("b", "control"), ("b", "A"), ("b", "B")]
    return _make(conds)


def _fit(cls, adata, **kwargs):
    return cls(**kwargs).fit(adata, "condition", "control", covariate_keys=["cell_type"])


def test_additive_recovers_exact_double(train):
    pred = _fit(Additive, train).predict_perturbation(["B+A", "A"])
    assert pred.obs["cell_type"].tolist() == ["a", "a", "b", "b"]
    for row, cell_type in enumerate(["a", "b"]):
        np.testing.assert_allclose(pred.X[2 * row], CTRL[cell_type] + DELTA["A"] + DELTA["B"], atol=1e-5)
        np.testing.assert_allclose(pred.layers["delta"][2 * row + 1], DELTA["A"], atol=1e-5)


def test_additive_fallbacks(train):
    base = _fit(Additive, train)
    # C was only observed in cell type "a": group "b" uses its delta from "a"
    pred = base.predict_perturbation("C", covariates={"cell_type": "b"})
    np.testing.assert_allclose(pred.layers["delta"][0], DELTA["C"], atol=1e-5)
    with pytest.warns(UserWarning, match=r"\['D'\].*taken as 0"):
        pred = base.predict_perturbation("A+D", covariates={"cell_type": "a"})
    np.testing.assert_allclose(pred.layers["delta"][0], DELTA["A"], atol=1e-5)


def test_nochange_and_trainmean(train):
    pred = _fit(NoChange, train).predict_perturbation(["A", "A+B"])
    assert np.all(pred.layers["delta"] == 0)
    np.testing.assert_allclose(pred.X[pred.obs["cell_type"] == "b"], np.tile(CTRL["b"], (2, 1)), atol=1e-5)
    pred = _fit(TrainMean, train).predict_perturbation(["X"])
    np.testing.assert_allclose(pred.layers["delta"][0], (DELTA["A"] + DELTA["B"] + DELTA["C"]) / 3, atol=1e-5)
    np.testing.assert_allclose(pred.layers["delta"][1], (DELTA["A"] + DELTA["B"]) / 2, atol=1e-5)


@pytest.mark.parametrize("cls", [NoChange, TrainMean, Additive, Linear])
def test_prediction_format_and_no_mutation(train, cls):
    train.X = sparse.csr_matrix(train.X)
    before = copy.deepcopy(train)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Linear: .* not measured")  # A, B, C are not genes
        base = cls().fit(train, "condition", "control", covariate_keys=["cell_type"])
    pred = base.predict_perturbation(["g0", "g1+g2", "control"] if cls is Linear else ["A", "A+B", "control"])
    assert isinstance(base, PerturbationBaseline)
    assert list(pred.obs.columns) == ["condition", "cell_type"]
    assert pred.shape == (6, 6) and pred.X.dtype == np.float32 and isinstance(pred.X, np.ndarray)
    assert list(pred.var_names) == GENES and pred.obs_names.is_unique
    ctrl = np.vstack([np.tile(CTRL[c], (3, 1)) for c in ("a", "b")])
    np.testing.assert_allclose(pred.layers["delta"], pred.X - ctrl, atol=1e-5)
    assert np.all(pred.layers["delta"][pred.obs["condition"] == "control"] == 0)
    np.testing.assert_array_equal(train.X.toarray(), before.X.toarray())
    pd.testing.assert_frame_equal(train.obs, before.obs)
    pd.testing.assert_frame_equal(train.var, before.var)
    assert train.uns.keys() == before.uns.keys() and train.layers.keys() == before.layers.keys()
    assert train.obsm.keys() == before.obsm.keys()


def test_covariate_selection_and_errors(train):
    base = _fit(NoChange, train)
    assert base.predict_perturbation("A", covariates={"cell_type": ["b"]}).obs["cell_type"].tolist() == ["b"]
    with pytest.raises(KeyError, match=r"'k562'.*known values: \['a', 'b'\]"):
        base.predict_perturbation("A", covariates={"cell_type": "k562"})
    with pytest.raises(KeyError, match="'batch'"):
        base.predict_perturbation("A", covariates={"batch": "1"})
    with pytest.raises(ValueError, match="'A\\+\\+B'"):
        base.predict_perturbation("A++B")
    # without covariates: one group, no covariate columns
    pred = NoChange().fit(train, "condition", "control").predict_perturbation("A")
    assert list(pred.obs.columns) == ["condition"]
    np.testing.assert_allclose(pred.X[0], (CTRL["a"] + CTRL["b"]) / 2, atol=1e-5)


def test_fit_errors(train):
    with pytest.raises(RuntimeError, match="not fitted"):
        Additive().predict_perturbation("A")
    with pytest.raises(KeyError, match="'perturbation'"):
        Additive().fit(train, "perturbation", "control")
    with pytest.raises(KeyError, match="'donor'"):
        Additive().fit(train, "condition", "control", covariate_keys=["donor"])
    with pytest.raises(ValueError, match="'ctrl' not found.*present values include"):
        Additive().fit(train, "condition", "ctrl")
    with pytest.raises(KeyError, match="'counts'"):
        Additive().fit(train, "condition", "control", layer="counts")


def test_group_without_control_warns(train):
    adata = train.copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.loc[adata.obs_names[4:8], "cell_type"] = "c"  # the "A" cells of group "a" alone
    with pytest.warns(UserWarning, match=r"\('c',\).*no 'control' cells"):
        base = _fit(Additive, adata)
    assert base.groups_ == [("a",), ("b",)]


def test_linear_recovers_linear_truth():
    rng = np.random.default_rng(0)
    n_genes = 40
    genes = [f"g{i}" for i in range(n_genes)]
    L = rng.normal(size=(n_genes, 3))  # latent gene factors
    A = rng.normal(size=(3, 3))
    ctrl = 5 + rng.normal(size=n_genes)
    perturbed = list(range(25))
    means = [ctrl] + [ctrl + L @ A @ L[g] for g in perturbed]
    labels = ["control"] + [genes[g] for g in perturbed]
    X = np.repeat(np.vstack(means), 3, axis=0) + rng.normal(0, 0.01, (3 * len(means), n_genes))
    adata = ad.AnnData(X, obs=pd.DataFrame({"condition": np.repeat(labels, 3)}, index=[str(i) for i in range(len(X))]))
    adata.var_names = genes
    base = Linear(n_components=4, ridge=0.01).fit(adata, "condition", "control")
    for held_out in (30, 35):
        pred = base.predict_perturbation(genes[held_out])
        r = pearson_delta(pred.X[0], ctrl + L @ A @ L[held_out], ctrl)
        assert r > 0.9, (held_out, r)
    # combination = sum of the member embeddings: the linear truth is additive too
    pred = base.predict_perturbation("g30+g35")
    assert pearson_delta(pred.X[0], ctrl + L @ A @ (L[30] + L[35]), ctrl) > 0.9
    with pytest.raises(ValueError, match=r"\['XYZ'\].*not in var_names"):
        base.predict_perturbation("g1+XYZ")


def test_linear_skips_unmeasured_training_genes(train):
    with pytest.warns(UserWarning, match="not measured"):
        base = _fit(Linear, train, n_components=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = base.predict_perturbation(["g0", "g0+g3"])
    assert np.isfinite(pred.X).all()


def test_invalid_linear_params():
    with pytest.raises(ValueError, match="n_components"):
        Linear(n_components=0)
    with pytest.raises(ValueError, match="ridge"):
        Linear(ridge=-1.0)


def test_dose_baselines_interpolate_and_pick_nearest():
    from biojepa.baselines import LogDoseLinear, NearestDose

    doses = [0, 1, 10, 100]
    X = np.array([[0.0, 1.0]] + [[np.log1p(d), 1.0] for d in doses[1:]] + [[5.0, 0.0]])
    obs = pd.DataFrame({"condition": ["control", "A", "A", "A", "B+C"], "dose": [*doses, "1+2"]})
    obs.index = [f"c{i}" for i in range(len(obs))]
    adata = ad.AnnData(X, obs=obs)
    line = LogDoseLinear().fit(adata, "condition", "control", dose_key="dose")
    near = NearestDose().fit(adata, "condition", "control", dose_key="dose")
    for d in (3, 30, 1000):  # between and beyond the training doses
        assert line.predict_perturbation("A", dose=d).layers["delta"][0, 0] == pytest.approx(np.log1p(d))
    assert near.predict_perturbation("A", dose=30).layers["delta"][0, 0] == pytest.approx(np.log1p(10))
    assert near.predict_perturbation("A", dose=1000).layers["delta"][0, 0] == pytest.approx(np.log1p(100))
    np.testing.assert_allclose(near.predict_perturbation("D", dose=3).layers["delta"], 0.0)  # unseen: no change
    pred = near.predict_perturbation("C+B", dose="2+1")  # doses follow their genes
    assert pred.layers["delta"][0, 0] == pytest.approx(5.0) and pred.obs["dose"].tolist() == ["2+1"]
    with pytest.raises(KeyError, match="'amount'"):
        NearestDose().fit(adata, "condition", "control", dose_key="amount")
