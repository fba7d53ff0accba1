import pytest

from biojepa.perturbation import Perturbation, interaction_scale, parse_perturbation, validation_labels


def test_doses_follow_their_genes_when_sorted():
    a = parse_perturbation("SET+KLF1", "control", dose="1+2")
    b = parse_perturbation("KLF1+SET", "control", dose="2+1")
    assert a == b == Perturbation(("KLF1", "SET"), (2.0, 1.0))
    assert a.dose_of("SET") == 1.0 and a.dose_label() == "2+1"
    assert parse_perturbation("B+A", "control", dose=3).doses == (3.0, 3.0)
    assert parse_perturbation("A+A", "control", dose="1+2").doses == (1.0,)  # a duplicated gene keeps its first dose


def test_dose_count_must_match_genes():
    with pytest.raises(ValueError, match="'1\\+2\\+3'.*3 values for a perturbation of 2 genes"):
        parse_perturbation("A+B", "control", dose="1+2+3")


def test_perturbation_value_checks():
    with pytest.raises(ValueError, match="sorted and distinct"):
        Perturbation(("B", "A"))
    with pytest.raises(ValueError, match="1 doses for 2 genes"):
        Perturbation(("A", "B"), (1.0,))
    assert Perturbation(()).label(control_value="ctrl") == "ctrl"


def test_validation_labels_deterministic_and_canonical():
    labels = ["ctrl", *"ABCDEFG", "B+A", "B+C", "C+D", "D+E", "E+F", "F+G", "A+Z"]
    held = validation_labels(labels, "ctrl", "+", seed=1)
    assert held == validation_labels(labels, "ctrl", "+", seed=1)
    assert len(held) == 2 and all("Z" not in h for h in held)  # only combinations of registered singles
    assert all(h == "+".join(sorted(h.split("+"))) for h in held)
    assert validation_labels(labels[:10], "ctrl", "+") == ()


def test_interaction_scale_least_squares_and_clip():
    import numpy as np

    inter = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert interaction_scale(0.7 * inter, inter) == pytest.approx(0.7)
    assert interaction_scale(10 * inter, inter) == 2.0
    assert interaction_scale(-inter, inter) == 0.0
    assert interaction_scale(inter, 0 * inter) == 0.0
