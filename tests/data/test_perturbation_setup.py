import numpy as np
import pytest

from biojepa.data import check_perturbation_setup, ordered_genes, parse_dose, perturbation_tables


def test_ordered_genes_gears_and_control():
    assert ordered_genes("MEIS1+ctrl", "ctrl", "+") == ["MEIS1"]
    assert ordered_genes("ctrl", "ctrl", "+") == []
    assert ordered_genes("B+A", "control", "+") == ["B", "A"]
    with pytest.raises(ValueError, match="A\\+\\+B"):
        ordered_genes("A++B", "control", "+")


def test_parse_dose():
    assert parse_dose("1+2", 2, "+") == [1.0, 2.0]
    assert parse_dose(3, 2, "+") == [3.0, 3.0]
    with pytest.raises(ValueError, match="3 values for a perturbation of 2 genes"):
        parse_dose("1+1+1", 2, "+", "dose")
    with pytest.raises(ValueError, match="'high'"):
        parse_dose("high", 1, "+")
    with pytest.raises(ValueError, match=">= 0"):
        parse_dose(-1.0, 1, "+")


def test_tables_measured_extra_and_dose():
    t = perturbation_tables(["control", "g1+X", "g0"], "control", "+", ["g0", "g1"], dose_labels=["1", "1+2"])
    assert t.vocabulary == ["g0", "g1", "X"] and t.n_measured == 2
    assert t.condition_genes.tolist() == [[-1, -1], [1, 2], [0, -1]]
    assert t.condition_dose.shape == (3, 2, 2)
    np.testing.assert_array_equal(t.condition_dose[1, 1], [1.0, 2.0])  # g1 gets 1, X gets 2 (label order)
    np.testing.assert_array_equal(t.condition_dose[2, 0, :1], [1.0])
    assert t.index(["X", "g0"]) == [2, 0]
    with pytest.raises(ValueError, match="'Y'"):
        t.index(["Y"])


def test_check_setup_errors(screen_factory):
    adata = screen_factory()
    with pytest.raises(ValueError, match="'ctrl' not found"):
        check_perturbation_setup(adata, "condition", "ctrl", "+", None, None)
    with pytest.raises(ValueError, match="`control_value` is required"):
        check_perturbation_setup(adata, "condition", None, "+", None, None)
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    adata.obs.iloc[0, adata.obs.columns.get_loc("condition")] = "g0+"
    with pytest.raises(ValueError, match="'g0\\+'"):
        check_perturbation_setup(adata, "condition", "control", "+", None, None)
