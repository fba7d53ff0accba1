import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from biojepa.data import (
    Modality,
    check_modalities,
    check_modality,
    modality_priors,
    normalize_modality,
    present_rows,
)

MODS = {"rna_layer": "rna", "protein_layer": "adt"}


def _mdata(n=12, n_genes=5, n_prot=3, prot_obs=None):
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(n)]
    rna = ad.AnnData(rng.poisson(3.0, (n, n_genes)).astype(np.float32) + 1, obs=pd.DataFrame(index=names))
    adt = ad.AnnData(rng.poisson(20.0, (n, n_prot)).astype(np.float32) + 1, obs=pd.DataFrame(index=prot_obs or names))
    rna.var_names = [f"g{i}" for i in range(n_genes)]
    adt.var_names = [f"p{i}" for i in range(n_prot)]
    return md.MuData({"rna": rna, "adt": adt})


# ---------------------------------------------------------------------------------------------- check_modalities
def test_check_modalities_returns_only_data_modalities():
    mdata = _mdata()
    assert check_modalities(mdata, MODS) == MODS
    assert check_modalities(mdata, {"rna_layer": "rna"}) == {"rna_layer": "rna"}
    # covariate keys may name the modality holding the column; they are not data modalities
    assert check_modalities(mdata, {**MODS, "batch_key": "rna"}) == MODS


@pytest.mark.parametrize("modalities", [None, {}, {"protein_layer": "adt"}, ["rna", "adt"]])
def test_check_modalities_needs_rna(modalities):
    with pytest.raises(ValueError, match="rna_layer"):
        check_modalities(_mdata(), modalities)


def test_check_modalities_unknown_key_and_modality():
    mdata = _mdata()
    with pytest.raises(ValueError, match="Unknown.*'adt_layer'"):
        check_modalities(mdata, {"rna_layer": "rna", "adt_layer": "adt"})
    with pytest.raises(KeyError, match="'prot'"):
        check_modalities(mdata, {"rna_layer": "rna", "protein_layer": "prot"})
    with pytest.raises(KeyError, match="'RNA'"):
        check_modalities(mdata, {"rna_layer": "RNA"})


def test_check_modalities_empty_and_misaligned():
    mdata = _mdata()
    empty = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][:, []].copy()})
    with pytest.raises(ValueError, match="'adt' has no features"):
        check_modalities(empty, MODS)
    fewer = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][:8].copy()})
    with pytest.raises(ValueError, match="'adt'.*aligned"):
        check_modalities(fewer, MODS)
    reordered = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][::-1].copy()})
    with pytest.raises(ValueError, match="aligned"):
        check_modalities(reordered, MODS)


# ---------------------------------------------------------------------------------------------- present_rows
def test_present_rows_dense():
    X = np.array([[1.0, 0.0, 2.0], [np.nan] * 3, [np.nan, 1.0, np.nan], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(present_rows(X), [True, False, True, True])
    np.testing.assert_array_equal(present_rows(X.astype(np.float32)), [True, False, True, True])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_present_rows_sparse(fmt):
    dense = np.array(
        [
            [1.0, 0.0, 2.0, 0.0],
            [np.nan] * 4,  # no measurement: every column stored as NaN
            [0.0, 0.0, 0.0, 0.0],  # measured, nothing detected (no stored entries)
            [np.nan, np.nan, np.nan, 0.0],  # partial NaN: measured
            [np.nan] * 4,
        ]
    )
    X = sparse.csr_matrix(dense) if fmt == "csr" else sparse.csc_matrix(dense)
    np.testing.assert_array_equal(present_rows(X), [True, False, True, True, False])


# ---------------------------------------------------------------------------------------------- check_modality
def test_check_modality_scale_and_missing_rows():
    counts = np.array([[1, 2, 0], [np.nan] * 3, [3, 0, 5]], dtype=np.float32)
    assert check_modality(ad.AnnData(counts), None, "adt") == "counts"
    assert check_modality(ad.AnnData(sparse.csr_matrix(counts)), None, "adt") == "counts"
    logs = np.array([[0.5, 1.2, 0.0], [np.nan] * 3, [2.0, 0.0, 0.1]], dtype=np.float32)
    assert check_modality(ad.AnnData(logs), None, "adt") == "log"
    a = ad.AnnData(np.ones((3, 3), dtype=np.float32), layers={"counts": counts})
    a.X[0, 0] = np.nan  # X is not read when the layer is named
    assert check_modality(a, "counts", "adt") == "counts"
    with pytest.raises(ValueError, match="non-integer"):
        check_modality(ad.AnnData(logs), None, "adt", input_scale="counts")


def test_check_modality_rejects_partial_and_full_nan():
    partial = np.array([[1, np.nan, 0], [np.nan] * 3, [3, 0, 5]], dtype=np.float32)
    with pytest.raises(ValueError, match="'adt'.*NaN in cells where it was measured"):
        check_modality(ad.AnnData(partial), None, "adt")
    with pytest.raises(ValueError, match="NaN in cells where it was measured"):
        check_modality(ad.AnnData(sparse.csr_matrix(partial)), None, "adt")
    with pytest.raises(ValueError, match="'adt' is NaN in every cell"):
        check_modality(ad.AnnData(np.full((3, 2), np.nan, dtype=np.float32)), None, "adt")


# ---------------------------------------------------------------------------------------------- normalize_modality
def test_normalize_modality_protein_clr_hand_computed():
    X = np.array([[0.0, 3.0, 7.0], [1.0, 1.0, 1.0], [0.0, 0.0, 15.0]])
    # row 0: log1p = [0, ln 4, ln 8], mean ln(32)/3
    m0 = np.log(32.0) / 3
    m2 = np.log(16.0) / 3
    expected = np.array(
        [
            [-m0, np.log(4.0) - m0, np.log(8.0) - m0],
            [0.0, 0.0, 0.0],
            [-m2, -m2, np.log(16.0) - m2],
        ]
    )
    out = normalize_modality(X, "protein", "counts")
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out.sum(1), 0.0, atol=1e-6)  # CLR rows sum to 0
    np.testing.assert_allclose(normalize_modality(sparse.csr_matrix(X), "protein", "counts"), expected, atol=1e-6)


def test_normalize_modality_rna_atac_and_log():
    X = np.array([[1.0, 3.0], [5.0, 0.0]])
    expected = np.log1p(np.array([[2500.0, 7500.0], [10000.0, 0.0]]))
    np.testing.assert_allclose(normalize_modality(X, "rna", "counts"), expected, rtol=1e-6)
    np.testing.assert_allclose(normalize_modality(X, "atac", "counts"), expected, rtol=1e-6)
    logs = np.array([[0.5, -1.0], [2.0, 0.0]])  # already normalized protein (e.g. CLR): kept as is
    np.testing.assert_allclose(normalize_modality(logs, "protein", "log"), logs, rtol=1e-6)
    np.testing.assert_allclose(normalize_modality(logs, "rna", "log"), logs, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- modality_priors
def _priors_inputs(n=60, n_genes=30, n_prot=8, n_missing=10, seed=0):
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(n, 2))
    rna = rng.poisson(np.exp(1.0 + L @ rng.normal(size=(2, n_genes)) * 0.7)).astype(np.float32) + 1
    prot = rng.poisson(np.exp(3.0 + L @ rng.normal(size=(2, n_prot)) * 0.7)).astype(np.float32)
    prot[:n_missing] = np.nan
    mods = [Modality("rna", "counts", n_genes), Modality("protein", "counts", n_prot)]
    return rna, prot, mods


def test_modality_priors_modules_never_mix_modalities():
    rna, prot, mods = _priors_inputs()
    total = rna.shape[1] + prot.shape[1]
    p = modality_priors([rna, prot], mods, n_embed=8, n_modules=4, seed=0)
    assert p.gene_mean.shape == (total,) and p.gene_std.shape == (total,)
    assert p.loadings.shape == (total, 8)
    assert np.isfinite(p.gene_mean).all() and np.isfinite(p.gene_std).all() and np.isfinite(p.loadings).all()
    index = np.asarray(p.module_index)
    assert index.min() >= 0 and index.max() == total  # padding = the total feature count
    offsets = [0, rna.shape[1], total]
    kinds = []
    for row in index:
        real = row[row < total]
        assert real.size > 0
        inside = [(real >= lo).all() and (real < hi).all() for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
        assert sum(inside) == 1, row  # every module inside exactly one modality
        kinds.append(inside.index(True))
    # every feature is tokenized exactly once
    real = index[index < total]
    np.testing.assert_array_equal(np.sort(real), np.arange(total))
    assert 1 <= kinds.count(0) <= 4  # n_modules for RNA
    assert 1 <= kinds.count(1) <= 2  # min(8, max(2, 8 // 6)) for protein
    assert kinds == sorted(kinds)  # RNA modules first


def test_modality_priors_statistics_per_modality_on_measured_cells():
    rna, prot, mods = _priors_inputs()
    p = modality_priors([rna, prot], mods, n_embed=8, n_modules=4, seed=0)
    n_genes = rna.shape[1]
    rna_log = normalize_modality(rna, "rna", "counts")
    np.testing.assert_allclose(p.gene_mean[:n_genes], rna_log.mean(0), rtol=1e-4, atol=1e-5)
    clr = normalize_modality(prot[10:], "protein", "counts")  # the NaN rows are not measured cells
    np.testing.assert_allclose(p.gene_mean[n_genes:], clr.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.gene_std[n_genes:], np.maximum(clr.std(0), 1e-2), rtol=1e-4, atol=1e-5)
