import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from biojepa.metrics import energy_distance, energy_score, interval_coverage, mmd, sinkhorn_divergence


@pytest.mark.parametrize("distance", [sinkhorn_divergence, mmd, energy_distance])
def test_distances_are_zero_on_identical_samples_and_grow_with_a_shift(distance):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    values = [distance(X, X + d) for d in (0.0, 0.5, 2.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert values[0] < values[1] < values[2]


def test_distances_name_mismatched_genes():
    with pytest.raises(ValueError, match="3 and 4"):
        sinkhorn_divergence(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="two or more"):
        mmd(np.zeros((1, 3)), np.zeros((5, 3)))


def test_interval_coverage_matches_by_covariates_and_levels():
    obs = pd.DataFrame({"p": ["A", "A", "A", "A"], "line": ["x", "x", "y", "y"]}, index=list("abcd"))
    adata = AnnData(np.array([[0.0, 0.0], [2.0, 2.0], [10.0, 10.0], [10.0, 10.0]]), obs=obs)
    pred = AnnData(np.array([[1.0, 5.0], [10.0, 10.0]]), obs=pd.DataFrame({"p": ["A", "A"], "line": ["x", "y"]}))
    pred.layers["lower_50"], pred.layers["upper_50"] = pred.X - 0.5, pred.X + 0.5
    pred.layers["lower_95"], pred.layers["upper_95"] = pred.X - 5.0, pred.X + 5.0
    table = interval_coverage(pred, adata, "p", ["line"])
    assert table[["line", "nominal", "coverage"]].values.tolist() == [
        ["x", 0.5, 0.5],
        ["x", 0.95, 1.0],
        ["y", 0.5, 1.0],
        ["y", 0.95, 1.0],
    ]
    del pred.layers["lower_50"], pred.layers["lower_95"]
    with pytest.raises(ValueError, match="no interval layers"):
        interval_coverage(pred, adata, "p")
    with pytest.raises(KeyError, match="cell_type"):
        interval_coverage(pred, adata, "p", ["cell_type"])


def test_energy_score_rewards_each_cells_own_distribution():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=(300, 2)) * 3.0
    y = centre + rng.normal(size=(300, 2))
    # a point is scored by its distance to the observation
    assert energy_score(centre[:, None, :], y) == pytest.approx(np.linalg.norm(centre - y, axis=1).mean())
    right = centre[:, None, :] + rng.normal(size=(300, 40, 2))
    shuffled = right[rng.permutation(300)]  # the same population of samples, given to the wrong cells
    wide = centre[:, None, :] + 3.0 * rng.normal(size=(300, 40, 2))
    assert energy_score(right, y) < energy_score(wide, y) and energy_score(right, y) < energy_score(shuffled, y)
    assert energy_score(right, y) < energy_score(centre[:, None, :], y)
    with pytest.raises(ValueError, match="cells, samples, features"):
        energy_score(right[:, 0], y)
    with pytest.raises(ValueError, match="cells, samples, features"):
        energy_score(right[:10], y)
