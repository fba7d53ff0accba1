"""Tests of benchmarks/simulate_screen.py (sergio-rs simulated knockout screen) on a tiny network."""

import importlib.util
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("sergio_rs")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "simulate_screen.py"
TINY = {"n_genes": 60, "n_singles": 6, "n_doubles": 4, "cells_per_condition": 30, "n_control": 100, "seed": 0}
TINY_ARGS = ["--n-genes", "60", "--n-singles", "6", "--n-doubles", "4", "--cells-per-condition", "30"]
TINY_ARGS += ["--n-control", "100"]


def _load_script():
    spec = importlib.util.spec_from_file_location("simulate_screen_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim = _load_script()


@pytest.fixture(scope="module")
def screen():
    return sim.simulate_screen(**TINY)


def _parse(label):
    return () if label == "control" else tuple(label.split("+"))


def test_shape_and_integer_counts(screen):
    n_conditions = 1 + TINY["n_singles"] + TINY["n_doubles"]
    assert screen.shape == (TINY["n_control"] + (n_conditions - 1) * TINY["cells_per_condition"], TINY["n_genes"])
    assert list(screen.var_names) == [f"G{i}" for i in range(TINY["n_genes"])]
    assert sp.issparse(screen.X) and screen.X.format == "csr"
    data = screen.X.data
    assert data.size > 0 and np.all(data >= 0) and np.all(data == np.round(data))
    clean = screen.layers["clean_expression"]
    assert clean.shape == screen.shape and np.all(clean >= 0)


def test_labels_and_design(screen):
    obs = screen.obs
    genes = set(screen.var_names)
    pattern = re.compile(r"^G\d+(\+G\d+)?$")
    for label in obs["perturbation"].cat.categories:
        if label == "control":
            continue
        assert pattern.match(label), label
        members = _parse(label)
        assert list(members) == sorted(members) and len(set(members)) == len(members)
        assert set(members) <= genes
    n_targets = obs["perturbation"].astype(str).map(lambda lab: len(_parse(lab)))
    assert (n_targets.to_numpy() == obs["n_targets"].to_numpy()).all()
    counts = obs["perturbation"].value_counts()
    assert counts["control"] == TINY["n_control"]
    assert (counts.drop("control") == TINY["cells_per_condition"]).all()
    singles = {lab for lab in counts.index if obs.loc[obs["perturbation"] == lab, "n_targets"].iloc[0] == 1}
    doubles = [lab for lab in counts.index if "+" in lab]
    assert len(singles) == TINY["n_singles"] and len(doubles) == TINY["n_doubles"]
    for label in doubles:  # an additive baseline is defined for every double
        assert set(_parse(label)) <= singles


def test_grn_edges_and_metadata(screen):
    edges = pd.DataFrame(screen.uns["grn_edges"])
    assert {"regulator", "target", "k", "h"} <= set(edges.columns) and len(edges) > 0
    assert set(edges["regulator"]) | set(edges["target"]) <= set(screen.var_names)
    level = screen.var["level"]
    assert (level[edges["target"]].to_numpy() > level[edges["regulator"]].to_numpy()).all()  # a DAG
    assert (edges["h"] > 0).all() and (edges["k"] != 0).all()
    for label in screen.obs["perturbation"].cat.categories:  # knockouts target regulators
        for gene in _parse(label):
            assert gene in set(edges["regulator"])
    simulation = screen.uns["simulation"]
    for key, value in TINY.items():
        assert simulation[key] == value
    assert screen.uns["steady_state"]["mean"].shape == (1 + TINY["n_singles"] + TINY["n_doubles"], TINY["n_genes"])


def test_knocked_out_gene_is_silenced(screen):
    obs = screen.obs
    control = (obs["perturbation"] == "control").to_numpy()
    X = screen.X.toarray()
    clean = screen.layers["clean_expression"]
    for label in obs["perturbation"].cat.categories:
        cells = (obs["perturbation"] == label).to_numpy()
        for gene in _parse(label):
            j = screen.var_names.get_loc(gene)
            assert clean[control, j].mean() > 0
            assert np.all(clean[cells, j] == 0)
            assert X[cells, j].mean() <= 0.05 * X[control, j].mean()


def test_direct_targets_move_more_than_other_genes(screen):
    stats = screen.uns["sanity_stats"]
    assert stats["single_mean_abs_delta_direct_targets"] > stats["single_mean_abs_delta_other_genes"]
    assert 0 < stats["fraction_nonzero"] < 1 and stats["mean_library_size"] > 0


def test_same_seed_same_counts(screen):
    again = sim.simulate_screen(**TINY)
    assert (again.X != screen.X).nnz == 0
    np.testing.assert_array_equal(again.layers["clean_expression"], screen.layers["clean_expression"])
    other = sim.simulate_screen(**{**TINY, "seed": 1}, clean_layer=False)
    assert "clean_expression" not in other.layers
    assert other.shape == screen.shape and (other.X != screen.X).nnz > 0


def test_parallel_matches_serial(screen):
    parallel = sim.simulate_screen(**TINY, n_jobs=2)
    assert (parallel.X != screen.X).nnz == 0


def test_too_many_doubles():
    with pytest.raises(ValueError, match="pairs of singles"):
        sim.simulate_screen(**{**TINY, "n_doubles": 16})


def test_main_writes_and_reuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIOJEPA_CACHE_DIR", str(tmp_path / "cache"))
    out = sim.main(TINY_ARGS)
    assert out == tmp_path / "cache" / "sergio_screen_60genes_seed0.h5ad" and out.is_file()
    written = capsys.readouterr().out
    assert "Wrote" in written and "sanity statistics" in written
    adata = ad.read_h5ad(out)
    assert adata.shape == (400, 60) and isinstance(adata.uns["grn_edges"], pd.DataFrame)
    assert adata.uns["simulation"]["seed"] == 0
    mtime = out.stat().st_mtime_ns
    assert sim.main(TINY_ARGS) == out
    assert "Reusing" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    sim.main([*TINY_ARGS, "--n-doubles", "3"])  # other parameters: regenerated
    assert "other parameters" in capsys.readouterr().out
    assert ad.read_h5ad(out).obs["n_targets"].eq(2).sum() == 3 * 30
