import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biojepa import datasets
from biojepa.data import go_features
from biojepa.datasets import _registry
from biojepa.perturbation import PerturbationFeatures

ROWS = [  # symbol, go_id, evidence, ontology
    ("A", "T1", "IDA", "BP"), ("B", "T1", "IMP", "BP"),  # T1: 2 genes, kept
    ("A", "T2", "IEA", "BP"), ("B", "T2", "IEA", "BP"), ("C", "T2", "IEA", "BP"), ("D", "T2", "IEA", "BP"),  # 4/6
    ("C", "T3", "IDA", "BP"),  # 1 gene: below min_genes
    ("D", "T4", "IDA", "BP"), ("E", "T4", "IDA", "BP"),  # kept
    ("E", "GO:0008150", "ND", "BP"),  # "no data": ignored
    ("F", "M1", "IDA", "MF"), ("A", "M1", "IDA", "MF"),  # F has no BP annotation
]  # fmt: skip


@pytest.fixture
def table(tmp_path: Path) -> Path:
    frame = pd.DataFrame(ROWS, columns=["symbol", "go_id", "evidence", "ontology"]).assign(entrez_id="0", term="t")
    path = tmp_path / "go.tsv"
    frame.to_csv(path, sep="\t", index=False)
    return path


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_terms_filtered_and_shared_annotations_give_shared_rows(table, caplog):
    genes = ["A", "B", "C", "D", "E", "F", "A"]
    with caplog.at_level(logging.WARNING, logger="biojepa.data._go"):
        out = go_features(genes, min_genes=2, max_fraction=0.5, n_components=4, path=table)
    assert list(out.index) == ["A", "B", "C", "D", "E", "F"]  # duplicates dropped, order kept
    assert list(out.columns) == ["GO_BP_0", "GO_BP_1", "GO_BP_2", "GO_BP_3"]
    x = out.to_numpy()
    np.testing.assert_allclose(x[0], x[1], atol=1e-8)  # A and B: only T1 is kept (T2 on 4 of 6 genes is too broad)
    np.testing.assert_allclose(x[3], x[4], atol=1e-8)  # D and E: only T4 (E's ND root annotation is ignored)
    assert abs(_unit(x[0]) @ _unit(x[3])) < 1e-8  # no kept term in common
    assert np.abs(x[[2, 5]]).sum() == 0  # C: only filtered terms; F: no BP annotation
    assert np.abs(x[:, 2:]).sum() == 0  # two kept terms: the columns that cannot be fitted are zero
    assert "2 of 6 genes get a row of zeros" in caplog.text
    assert "(F)" in caplog.text and "(C)" in caplog.text
    assert "only 2 of 4 components" in caplog.text


def test_max_fraction_and_ontology_change_the_terms(table):
    wide = go_features(["A", "B", "C", "D"], max_fraction=1.0, n_components=3, path=table)
    assert np.abs(wide.loc["C"]).sum() > 0  # T2 kept now
    mf = go_features(["A", "F"], ontology="MF", n_components=1, path=table)
    assert list(mf.columns) == ["GO_MF_0"]
    assert np.abs(mf.to_numpy()).sum() == 0  # M1 is on both genes: too broad for max_fraction=0.5
    everything = go_features(["A", "F"], ontology="all", max_fraction=1.0, n_components=1, path=table)
    assert everything.shape == (2, 1)


def test_background_chooses_terms_without_rows(table):
    out = go_features(["C"], background=["A", "B", "D"], min_genes=2, max_fraction=1.0, n_components=2, path=table)
    assert list(out.index) == ["C"]
    assert np.abs(out.to_numpy()).sum() > 0  # T2 is shared with the background
    with pytest.raises(ValueError, match="background"):
        go_features(["C"], background="some", path=table)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"genes": []}, ValueError, "empty"),
        ({"genes": "KLF1"}, TypeError, "wrap it in a list"),
        ({"ontology": "XX"}, ValueError, "'BP', 'MF', 'CC', 'all'"),
        ({"min_genes": 0}, ValueError, "min_genes"),
        ({"max_fraction": 0.0}, ValueError, "max_fraction"),
        ({"n_components": 0}, ValueError, "n_components"),
    ],
)
def test_argument_errors(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        go_features(**({"genes": ["A"], "path": table} | kwargs))


def test_missing_or_malformed_table(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOJEPA_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="BIOJEPA_DATA_DIR") as excinfo:
        go_features(["KLF1"])
    assert str(tmp_path / _registry.GO_TABLE) in str(excinfo.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        go_features(["KLF1"], path=tmp_path / "nope.tsv")
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"gene": ["A"], "go_id": ["T1"]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match="lacks the columns"):
        go_features(["A"], path=bad)


def test_registered_table_is_verified(tmp_path):
    real = datasets.data_path(_registry.GO_TABLE)
    copy = tmp_path / _registry.GO_TABLE
    copy.parent.mkdir(parents=True)
    shutil.copy(real, copy)
    with copy.open("ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="Checksum mismatch"):
        go_features(["KLF1"], path=tmp_path)


def test_real_table_groups_related_genes(caplog):
    genes = ["MAP2K3", "MAP2K6", "MAP4K3", "MAP4K5", "KLF1", "CEBPE", "IER5L"]
    with caplog.at_level(logging.WARNING, logger="biojepa.data._go"):
        out = go_features(genes, n_components=8)
    assert out.shape == (7, 8)
    assert np.isfinite(out.to_numpy()).all()
    assert np.abs(out.loc["IER5L"]).sum() == 0 and "IER5L" in caplog.text  # no BP annotation in org.Hs.eg.db 3.16
    x = {g: _unit(out.loc[g].to_numpy()) for g in genes[:-1]}
    assert x["MAP2K3"] @ x["MAP2K6"] > x["MAP2K3"] @ x["KLF1"] + 0.3  # MAP kinase kinases share processes
    assert x["KLF1"] @ x["CEBPE"] > x["KLF1"] @ x["MAP4K5"]  # both transcription factors of myeloid/erythroid fates
    pd.testing.assert_frame_equal(out, go_features(genes, n_components=8))  # deterministic


def test_output_is_a_perturbation_feature_table(table):
    out = go_features(["A", "B", "D", "F"], n_components=3, path=table)
    features = PerturbationFeatures.from_frame(out)  # the check BioJEPA(perturbation_features=...) runs
    values, known = features.lookup(["D", "F", "Z"])
    assert features.n_features == 3 and known.tolist() == [True, True, False]
    np.testing.assert_array_equal(values[0], out.loc["D"].to_numpy(np.float32))
    assert np.abs(values[1:]).sum() == 0  # F (no BP annotation) and Z (absent) both give zeros
