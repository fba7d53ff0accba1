import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from biojepa.perturbation import canonical_label, condition_frame, group_codes, parse_perturbation, pseudobulk


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("control", ()),
        ("KLF1", ("KLF1",)),
        ("MAP2K6+KLF1", ("KLF1", "MAP2K6")),
        ("KLF1+KLF1", ("KLF1",)),
        ("MEIS1+ctrl", ("MEIS1",)),
        ("ctrl+MEIS1", ("MEIS1",)),
        ("ctrl", ()),
        ("control+A", ("A",)),
        (" A + B ", ("A", "B")),
    ],
)
def test_parse_perturbation(label, expected):
    assert parse_perturbation(label, control_value="control").genes == expected


def test_parse_other_delimiter():
    assert parse_perturbation("B_A", "NT", delimiter="_").genes == ("A", "B")
    assert parse_perturbation("A+B", "NT", delimiter="_").genes == ("A+B",)


@pytest.mark.parametrize("label", ["", "A++B", "+A", "A+", "A+ +B", "   "])
def test_parse_malformed_names_label(label):
    with pytest.raises(ValueError, match="Malformed perturbation label") as err:
        parse_perturbation(label, control_value="control")
    assert repr(label) in str(err.value)


def test_parse_rejects_non_string_and_bad_delimiter():
    with pytest.raises(ValueError, match="not a string"):
        parse_perturbation(float("nan"), control_value="control")
    with pytest.raises(ValueError, match="delimiter"):
        parse_perturbation("A", control_value="control", delimiter="")


def test_canonical_label():
    assert canonical_label(["MAP2K6", "KLF1"]) == "KLF1+MAP2K6"
    assert canonical_label(("B", "A", "B"), delimiter="_") == "A_B"
    assert canonical_label("KLF1") == "KLF1"
    assert canonical_label([], control_value="ctrl") == "ctrl"
    assert canonical_label([]) == "control"
    # round trip through the parser
    assert canonical_label(parse_perturbation("SET+KLF1", "control").genes) == "KLF1+SET"


@pytest.mark.parametrize("genes", [["A", ""], ["A+B"], [" "]])
def test_canonical_label_rejects_bad_genes(genes):
    with pytest.raises(ValueError, match="Invalid gene name"):
        canonical_label(genes)


def test_condition_frame_and_pseudobulk():
    obs = pd.DataFrame(
        {"condition": pd.Categorical(["B+A", "ctrl", "A+B", "A", "ctrl"]), "batch": [1, 1, 2, 2, 2]},
        index=list("abcde"),
    )
    frame = condition_frame(obs, "condition", "ctrl", ["batch"])
    assert frame["_perturbation"].tolist() == ["A+B", "ctrl", "A+B", "A", "ctrl"]
    assert frame["batch"].tolist() == ["1", "1", "2", "2", "2"]
    X = sparse.csr_matrix(np.arange(10, dtype=float).reshape(5, 2))
    groups, means, n = pseudobulk(X, frame)
    assert groups.to_dict("list") == {"_perturbation": ["A", "A+B", "A+B", "ctrl", "ctrl"], "batch": list("21212")}
    np.testing.assert_allclose(means, [[6, 7], [0, 1], [4, 5], [2, 3], [8, 9]])
    assert n.tolist() == [1, 1, 1, 1, 1]
    assert group_codes(frame).tolist() == [1, 3, 2, 0, 4]


def test_condition_frame_errors():
    obs = pd.DataFrame({"condition": ["A", None]})
    with pytest.raises(KeyError, match="'perturbation'"):
        condition_frame(obs, "perturbation", "ctrl")
    with pytest.raises(ValueError, match="missing labels"):
        condition_frame(obs, "condition", "ctrl")
    with pytest.raises(ValueError, match="'A\\+\\+B'"):
        condition_frame(pd.DataFrame({"condition": ["A++B"]}), "condition", "ctrl")
