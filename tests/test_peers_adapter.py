"""Format round trip of the peers' adapter (benchmarks/peers/_adapter.py) on a tiny AnnData, no peer installed."""

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks" / "peers"))
from _adapter import canonical, from_peer, from_peer_label, to_peer, to_peer_label, write_prediction


@pytest.fixture
def canon() -> ad.AnnData:
    labels = ["control"] * 4 + ["A"] * 3 + ["B"] * 3 + ["A+B"] * 2 + ["control"] * 2 + ["A"] * 2
    types = ["k562"] * 12 + ["hek"] * 4
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.random((16, 4)).astype(np.float32),
                       obs=pd.DataFrame({"condition": labels, "cell_type": types}, index=[f"c{i}" for i in range(16)]),
                       var=pd.DataFrame(index=["A", "G1", "G2", "G3"]))  # fmt: skip
    held_out = (adata.obs["condition"] == "A+B").to_numpy()
    return canonical(adata, ~held_out, [("A+B", "k562"), ("B", "hek"), ("C", "k562")])


@pytest.mark.parametrize(
    ("label", "peer", "native"),
    [("A", "gears", "A+ctrl"), ("A+B", "gears", "A+B"), ("control", "gears", "ctrl"), ("A", "cpa", "A"),
     ("control", "cpa", "ctrl"), ("A+B", "scgen", "A+B"), ("control", "biojepa", "control")],
)  # fmt: skip
def test_labels_round_trip(label, peer, native):
    assert to_peer_label(label, peer) == native
    assert from_peer_label(native, peer) == label


def test_gears_prediction_keys_and_ctrl_first():
    assert from_peer_label("A_B", "gears") == "A+B"
    assert from_peer_label("ctrl+A", "gears") == "A"


def test_canonical_keeps_training_cells_and_requests(canon):
    assert canon.n_obs == 14 and "A+B" not in set(canon.obs["condition"])
    assert list(canon.uns["requests"]["condition"]) == ["A+B", "B", "C"]


def test_gears_input(canon):
    gene2go = pd.DataFrame({"symbol": ["A", "A", "B"], "go_id": ["GO:1", "GO:2", "GO:1"]})
    gears = to_peer(canon, "gears", gene2go=gene2go)
    assert set(gears.obs["condition"]) == {"ctrl", "A+ctrl", "B+ctrl"}
    assert list(gears.var["gene_name"]) == ["A", "G1", "G2", "G3"]
    assert list(gears.uns["requests"]["condition"]) == ["A+B", "B+ctrl", "C+ctrl"]
    go = gears.uns["gene2go"]
    assert set(go.loc[go.symbol == "A", "go_id"]) == {"GO:1", "GO:2"}
    assert set(go.loc[go.symbol == "C", "go_id"]) == {"own:C"}  # no annotation: a term of its own
    assert hasattr(gears.X, "tocsr")


def test_cpa_input_adds_counterfactual_controls(canon):
    cpa = to_peer(canon, "cpa", seed=0)
    train = cpa[cpa.obs["split"] != "ood"]
    assert train.n_obs == canon.n_obs and set(train.obs["split"]) == {"train", "valid"}
    ood = cpa[cpa.obs["split"] == "ood"].obs
    # A+B in k562 (4 control cells) and B in hek (2); C was never perturbed in training, so CPA gets no cells
    assert ood.groupby(["condition", "cell_type"], observed=True).size().to_dict() == {("A+B", "k562"): 4,
                                                                                      ("B", "hek"): 2}  # fmt: skip
    assert set(cpa.obs.loc[cpa.obs["condition"] == "A+B", "dose"]) == {"1+1"}
    assert set(cpa.obs.loc[cpa.obs["condition"] == "ctrl", "dose"]) == {"1"}
    ctrl_k562 = canon[(canon.obs["condition"] == "control").to_numpy() & (canon.obs["cell_type"] == "k562").to_numpy()]
    np.testing.assert_array_equal(cpa[ood.index[ood["condition"] == "A+B"]].X, ctrl_k562.X)


def test_biolord_input_has_the_perturbed_genes_ontology(canon):
    gene2go = pd.DataFrame({"symbol": ["A", "B", "G1"], "go_id": ["GO:1", "GO:1", "GO:3"]})
    biolord = to_peer(canon, "biolord", seed=0, gene2go=gene2go)
    assert set(biolord.obs["split"]) == {"train", "valid", "ood"}
    go = biolord.uns["gene2go"]
    assert sorted(go["symbol"]) == ["A", "B", "C"]  # perturbed genes only, not every measured one
    assert set(go.loc[go.symbol == "C", "go_id"]) == {"own:C"}


def test_biolord_perturbation_vectors():
    from run_biolord import encode, gene_vectors

    pairs = pd.DataFrame({"symbol": ["A", "A", "B", "C", "D"], "go_id": ["GO:1", "GO:2", "GO:1", "GO:2", "GO:9"]})
    vectors = gene_vectors(["A", "B"], ["A", "B", "C", "D"], pairs)
    np.testing.assert_allclose(vectors["A"], [1.0, 0.5])  # itself, then Jaccard({1,2}, {1})
    np.testing.assert_allclose(vectors["C"], [0.5, 0.0])  # unseen gene: only its GO neighbours
    np.testing.assert_allclose(vectors["D"], [0.0, 0.0])  # no shared term: not predictable
    np.testing.assert_allclose(encode(["ctrl", "A+B"], vectors, 2), [[0.0, 0.0], [1.5, 1.5]])


def test_prediction_round_trip(canon, tmp_path):
    X = np.arange(8, dtype=np.float32).reshape(2, 4)
    spent = {"train_seconds": 2.0, "epochs": 4, "n_train_cells": 14, "cells_per_s": 28.0, "peak_rss_mib": 1}
    write_prediction(tmp_path / "pred.h5ad", ["A+B", "B+ctrl"], ["k562", "hek"], X, canon.var_names, spent)
    pred = from_peer(ad.read_h5ad(tmp_path / "pred.h5ad"), "gears", canon)
    assert list(pred.obs["condition"]) == ["A+B", "B"] and list(pred.obs["cell_type"]) == ["k562", "hek"]
    np.testing.assert_allclose(pred.X, X)
    Xc = np.asarray(canon.X, dtype=np.float64)
    ctrl_hek = Xc[(canon.obs["condition"] == "control").to_numpy() & (canon.obs["cell_type"] == "hek").to_numpy()]
    np.testing.assert_allclose(pred.layers["delta"][1], X[1] - ctrl_hek.mean(0), rtol=1e-5)
    assert pred.uns["cost"]["cells_per_s"] == 28.0


def test_prediction_of_an_unrequested_label_is_refused(canon, tmp_path):
    write_prediction(tmp_path / "pred.h5ad", ["A"], ["k562"], np.zeros((1, 4)), canon.var_names, {})
    with pytest.raises(KeyError, match="not requested"):
        from_peer(ad.read_h5ad(tmp_path / "pred.h5ad"), "cpa", canon)


def test_dosed_run_round_trip_through_cpa(tmp_path):
    """A compound screen: doses travel to CPA's input, counterfactual cells carry the request's dose, and back."""
    labels = ["control"] * 4 + ["d1"] * 4 + ["d1+d2"] * 2
    doses = ["0"] * 4 + ["1", "1", "10", "10"] + ["1+10"] * 2
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.random((10, 3)).astype(np.float32),
                       obs=pd.DataFrame({"condition": labels, "dose": doses, "line": ["a"] * 10},
                                        index=[f"c{i}" for i in range(10)]),
                       var=pd.DataFrame(index=["G1", "G2", "G3"]))  # fmt: skip
    canon = canonical(adata, np.ones(10, bool), [("d1", "a", "3"), ("d1+d2", "a", "10+1")], covariate="line",
                      dose="dose")  # fmt: skip
    assert list(canon.uns["requests"].columns) == ["condition", "cell_type", "dose"]
    cpa = to_peer(canon, "cpa", seed=0)
    train = cpa.obs[cpa.obs["split"] != "ood"]
    assert set(train.loc[train["condition"] == "ctrl", "dose"]) == {"1"}  # control: the unit dose
    assert list(train.loc[train["condition"] == "d1", "dose"]) == ["1", "1", "10", "10"]
    ood = cpa.obs[cpa.obs["split"] == "ood"]
    assert ood.groupby(["condition", "dose"]).size().to_dict() == {("d1", "3"): 4, ("d1+d2", "10+1"): 4}
    path = tmp_path / "pred.h5ad"
    write_prediction(path, ["d1", "d1+d2"], ["a", "a"], np.ones((2, 3)), canon.var_names, {"train_s": 1.0},
                     doses=["3", "10+1"])  # fmt: skip
    ours = from_peer(ad.read_h5ad(path), "cpa", canon)
    assert list(ours.obs["dose"]) == ["3", "10+1"] and list(ours.obs["condition"]) == ["d1", "d1+d2"]
    write_prediction(path, ["d1"], ["a"], np.ones((1, 3)), canon.var_names, {}, doses=["10"])
    with pytest.raises(KeyError, match="not requested"):
        from_peer(ad.read_h5ad(path), "cpa", canon)  # d1 at 10 was not asked for
