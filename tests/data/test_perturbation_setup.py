import numpy as np
import pytest

import biojepa as bj
from biojepa.perturbation import PerturbationSetup, check_perturbation_setup, parse_dose, parse_perturbation


def test_parse_gears_and_control():
    assert parse_perturbation("MEIS1+ctrl", "ctrl").genes == ("MEIS1",)
    assert parse_perturbation("ctrl", "ctrl").is_control
    assert parse_perturbation("B+A", "control").genes == ("A", "B")
    with pytest.raises(ValueError, match="A\\+\\+B"):
        parse_perturbation("A++B", "control")


def test_parse_dose():
    assert parse_dose("1+2", 2, "+") == [1.0, 2.0]
    assert parse_dose(3, 2, "+") == [3.0, 3.0]
    with pytest.raises(ValueError, match="3 values for a perturbation of 2 genes"):
        parse_dose("1+1+1", 2, "+", "dose")
    with pytest.raises(ValueError, match="'high'"):
        parse_dose("high", 1, "+")
    with pytest.raises(ValueError, match=">= 0"):
        parse_dose(-1.0, 1, "+")


def test_setup_tables_measured_extra_and_dose():
    setup = PerturbationSetup(
        "condition",
        "control",
        labels=("control", "g1+X", "g0"),
        doses=("1", "1+2"),
        vocabulary=("g0", "g1", "X"),
        n_measured=2,
    )
    assert setup.condition_genes().tolist() == [[-1, -1], [2, 1], [0, -1]]  # sorted genes: "X" < "g1"
    dose = setup.condition_dose()
    assert dose.shape == (3, 2, 2)
    np.testing.assert_array_equal(dose[1, 1], [2.0, 1.0])  # written "g1+X" with "1+2": X gets 2, g1 gets 1
    np.testing.assert_array_equal(dose[2, 0, :1], [1.0])
    assert setup.index(["X", "g0"]) == [2, 0]
    with pytest.raises(ValueError, match="'Y'"):
        setup.index(["Y"])


def test_setup_dose_follows_its_gene_when_the_label_is_written_unsorted():
    setup = PerturbationSetup(
        "condition", "control", labels=("control", "g1+g0"), doses=("10+1",), vocabulary=("g0", "g1"), n_measured=2
    )
    genes, dose = setup.condition_genes()[1], setup.condition_dose()[1, 0]
    assert dict(zip([setup.vocabulary[i] for i in genes], dose.tolist(), strict=True)) == {"g1": 10.0, "g0": 1.0}


def test_setup_from_registry(screen_factory):
    adata = screen_factory()
    bj.BioJEPA.setup_anndata(
        adata, perturbation_key="condition", control_value="control", categorical_covariate_keys=["line"]
    )
    model = bj.BioJEPA(adata, n_latent=4)
    setup = model.perturbation_setup_
    assert setup.perturbation_key == "condition" and setup.covariate_keys == ("line",)
    assert set(setup.labels) == {"control", "g0", "g1", "g2", "g0+g1"}
    assert setup.vocabulary[: setup.n_measured] == tuple(adata.var_names)
    assert setup.holdout == ()  # one combination: too few to validate the interaction on
    with pytest.raises(AttributeError):
        setup.control_value = "x"  # frozen


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


def test_validation_pairs_hold_out_singles_seen_in_several_groups_of_one_type():
    from biojepa.perturbation import validation_pairs

    observed = [(f"s{i}", line, "KO") for i in range(6) for line in ("L1", "L2")]
    observed += [(f"only{i}", "L1", "KO") for i in range(10)]  # in one group: never a candidate
    observed += [("a", "L1", "KO"), ("a", "L2", "CRISPRa")]  # one group per type: not a candidate either
    held = validation_pairs(observed, seed=3)
    assert held == validation_pairs(observed, seed=3)  # deterministic from the seed
    assert len(held) == round(0.2 * 12) and {label for label, _ in held} <= {f"s{i}" for i in range(6)}
    assert len({label for label, _ in held}) == len(held)  # one group per single: it stays trained in the other
    assert validation_pairs(observed[:6], seed=3) == ()  # 6 candidate pairs: too few to hold some out
