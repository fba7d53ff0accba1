import anndata as ad
import numpy as np
import pandas as pd
import pytest

from biojepa.data import PROTOCOLS, split_perturbations


def _screen():
    singles = [f"G{i}" for i in range(8)]
    doubles = [f"G{i}+G{j}" for i in range(8) for j in range(i + 1, 8) if (i + j) % 3 == 0]
    base = ["ctrl"] + singles + doubles
    labels = base * 8
    lines = ["L1"] * (len(labels) // 2) + ["L2"] * (len(labels) // 2)
    doses = [str(1 + (k // len(base)) % 4 * 10) if lab != "ctrl" else "0" for k, lab in enumerate(labels)]
    obs = pd.DataFrame({"p": labels, "line": lines, "dose": doses}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(np.zeros((len(labels), 1)), obs=obs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_split_protocols_are_disjoint_and_deterministic(protocol):
    adata = _screen()
    kwargs = {"context_key": "line", "dose_key": "dose", "fraction": 0.5 if protocol == "combo_seen0" else 0.25}
    a = split_perturbations(adata, "p", "ctrl", protocol, seed=1, **kwargs)
    b = split_perturbations(adata, "p", "ctrl", protocol, seed=1, **kwargs)
    np.testing.assert_array_equal(a.test, b.test)
    assert a.test.any() and not (a.train & a.test).any() and a.held_out == b.held_out
    labels = adata.obs["p"].to_numpy()
    if protocol != "unseen_context":
        assert a.train[labels == "ctrl"].all()
    train_genes = {g for lab in labels[a.train] if lab != "ctrl" for g in lab.split("+")}
    train_singles = {lab for lab in labels[a.train] if lab != "ctrl" and "+" not in lab}
    for lab in set(labels[a.test]):
        seen = sum(g in train_singles for g in lab.split("+"))
        if protocol.startswith("combo_seen"):
            assert "+" in lab and seen == int(protocol[-1])
        if protocol == "unseen_single":
            assert "+" not in lab and lab not in train_genes
    if protocol == "unseen_context":
        line = adata.obs["line"].to_numpy()
        assert set(line[a.test]) == set(line[a.reference]) and not a.train[line == line[a.test][0]].any()
        assert (labels[a.reference] == "ctrl").all()


def test_split_errors_name_the_value():
    adata = _screen()
    with pytest.raises(ValueError, match="'random'"):
        split_perturbations(adata, "p", "ctrl", "random")
    with pytest.raises(ValueError, match="context_key"):
        split_perturbations(adata, "p", "ctrl", "unseen_context")
