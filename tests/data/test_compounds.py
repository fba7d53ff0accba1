"""Compound features from SMILES (RDKit)."""

import numpy as np
import pytest

import biojepa as bj


def test_fingerprints_are_deterministic_and_differ_between_compounds():
    smiles = {"aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O", "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"}
    table = bj.data.compound_features(smiles, n_bits=256)
    again = bj.data.compound_features(smiles, n_bits=256)
    np.testing.assert_array_equal(table.to_numpy(), again.to_numpy())
    assert table.index.tolist() == ["aspirin", "caffeine"] and set(np.unique(table.to_numpy())) <= {0.0, 1.0}
    assert not np.array_equal(table.loc["aspirin"], table.loc["caffeine"])
    counts = bj.data.compound_features(smiles, n_bits=256, counts=True)
    assert counts.to_numpy().max() > 1


def test_unparsable_smiles_are_named():
    with pytest.raises(ValueError, match=r"2 SMILES do not parse: .*broken: 'C\(C'.*empty: ''"):
        bj.data.compound_features({"ok": "CCO", "broken": "C(C", "empty": ""})
