import numpy as np
import pytest
from anndata import AnnData
from scipy import sparse

from biojepa.data import check_expression, coexpression_modules, gene_loadings, module_index_from_labels


def test_detects_counts_and_log_dense_and_sparse():
    counts = np.random.default_rng(0).poisson(2.0, (30, 8)).astype(np.float32) + 1
    assert check_expression(AnnData(counts), None) == "counts"
    assert check_expression(AnnData(sparse.csr_matrix(counts)), None) == "counts"
    assert check_expression(AnnData(np.log1p(counts)), None) == "log"


def test_coexpression_modules_group_correlated_genes_in_equal_sizes():
    rng = np.random.default_rng(0)
    programs = rng.standard_normal((500, 4))  # 4 programs, 6 genes each
    X = np.repeat(programs, 6, axis=1) + 0.3 * rng.standard_normal((500, 24))
    X = (X - X.mean(0)) / X.std(0)
    labels = coexpression_modules(gene_loadings(X, 8, seed=0), 4, seed=0)
    assert np.bincount(labels).tolist() == [6, 6, 6, 6]
    for block in range(4):
        assert len(set(labels[block * 6 : (block + 1) * 6])) == 1


def test_loadings_shape_with_fewer_components_than_requested():
    X = np.random.default_rng(0).standard_normal((5, 30))
    loadings = gene_loadings(X, 16, seed=0)
    assert loadings.shape == (30, 16) and np.isfinite(loadings).all()


def test_module_labels_errors():
    with pytest.raises(ValueError, match="3 entries but the data have 4 genes"):
        module_index_from_labels([0, 1, 1], 4)
    with pytest.raises(ValueError, match="missing"):
        module_index_from_labels([0, 1, None, 1], 4)
