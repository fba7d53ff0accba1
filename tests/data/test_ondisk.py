import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from biojepa.data import _ondisk
from biojepa.data._ondisk import write_shuffled_h5ad


def make_adata(n_obs=1000, n_vars=30, seed=0):
    rng = np.random.default_rng(seed)
    X = sparse.random(n_obs, n_vars, density=0.2, format="csr", dtype=np.float32, random_state=seed)
    X = sparse.diags((np.arange(n_obs) % 7 != 0).astype(np.float32)) @ X  # some all-zero rows
    X.eliminate_zeros()
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n_obs)),
            "n_counts": rng.poisson(100, n_obs).astype(np.int64),
            "score": rng.standard_normal(n_obs),
            "is_ctrl": rng.random(n_obs) < 0.5,
            "donor": rng.choice(["d1", "d2"], n_obs).astype(object),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame({"gene_id": [f"ENSG{i}" for i in range(n_vars)], "mean": rng.random(n_vars)})
    var.index = [f"g{i}" for i in range(n_vars)]
    adata = ad.AnnData(X, obs=obs, var=var)
    adata.obsm["X_pca"] = rng.standard_normal((n_obs, 5)).astype(np.float32)
    adata.layers["counts"] = sparse.csr_matrix(rng.poisson(1.0, (n_obs, n_vars)).astype(np.float32))
    adata.varm["loadings"] = rng.standard_normal((n_vars, 3))
    adata.uns["note"] = "hello"
    adata.uns["params"] = {"k": 3}
    return adata


@pytest.fixture
def src(tmp_path):
    adata = make_adata()
    path = tmp_path / "src.h5ad"
    adata.write_h5ad(path)
    return adata, path


def test_round_trip_from_path(src, tmp_path):
    adata, path = src
    out = tmp_path / "out.h5ad"
    order = write_shuffled_h5ad(path, out, chunk_size=64, seed=3)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(adata.n_obs))
    assert not np.array_equal(order, np.arange(adata.n_obs))

    backed = ad.read_h5ad(out, backed="r")
    assert isinstance(backed.X, ad.abc.CSRDataset)
    backed.file.close()

    res = ad.read_h5ad(out)
    assert sparse.issparse(res.X) and res.X.format == "csr" and res.X.dtype == np.float32
    # one index dtype, else scipy copies all indices on every row selection of the loaded matrix
    assert res.X.indptr.dtype == res.X.indices.dtype == np.int32
    assert res.layers["counts"].indptr.dtype == res.layers["counts"].indices.dtype == np.int32
    assert np.array_equal(res.X.toarray(), adata.X.toarray()[order])
    assert sparse.issparse(res.layers["counts"]) and res.layers["counts"].format == "csr"
    assert np.array_equal(res.layers["counts"].toarray(), adata.layers["counts"].toarray()[order])
    pd.testing.assert_frame_equal(res.obs, adata.obs.iloc[order])
    assert res.obs["cell_type"].dtype == "category"
    assert np.array_equal(res.obsm["X_pca"], adata.obsm["X_pca"][order])
    pd.testing.assert_frame_equal(res.var, adata.var)
    assert np.array_equal(res.varm["loadings"], adata.varm["loadings"])
    assert res.uns["note"] == "hello" and res.uns["params"]["k"] == 3
    assert res.uns["biojepa_shuffle"]["seed"] == 3
    # nothing left next to the output but the source and the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad", "src.h5ad"]


def test_seed_determines_order(src, tmp_path):
    _, path = src
    a = write_shuffled_h5ad(path, tmp_path / "a.h5ad", chunk_size=100, seed=1)
    b = write_shuffled_h5ad(path, tmp_path / "b.h5ad", chunk_size=100, seed=1)
    c = write_shuffled_h5ad(path, tmp_path / "c.h5ad", chunk_size=100, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_backed_and_in_memory_sources_match_path(src, tmp_path):
    adata, path = src
    from_path = write_shuffled_h5ad(path, tmp_path / "p.h5ad", chunk_size=128, seed=5)
    backed = ad.read_h5ad(path, backed="r")
    from_backed = write_shuffled_h5ad(backed, tmp_path / "b.h5ad", chunk_size=128, seed=5)
    assert backed.isbacked and backed.file.is_open  # the caller's handle is left open
    backed.file.close()
    from_memory = write_shuffled_h5ad(adata, tmp_path / "m.h5ad", chunk_size=128, seed=5)
    dense = adata.copy()
    dense.X = dense.X.toarray()
    from_dense = write_shuffled_h5ad(dense, tmp_path / "d.h5ad", chunk_size=128, seed=5)
    dense.write_h5ad(tmp_path / "dense.h5ad")
    from_dense_file = write_shuffled_h5ad(tmp_path / "dense.h5ad", tmp_path / "f.h5ad", chunk_size=128, seed=5)
    dense_backed = ad.read_h5ad(tmp_path / "dense.h5ad", backed="r")
    from_dense_backed = write_shuffled_h5ad(dense_backed, tmp_path / "db.h5ad", chunk_size=128, seed=5)
    dense_backed.file.close()
    assert np.array_equal(from_path, from_backed)
    assert np.array_equal(from_path, from_memory)
    assert np.array_equal(from_path, from_dense)
    assert np.array_equal(from_path, from_dense_file)
    assert np.array_equal(from_path, from_dense_backed)
    expected = ad.read_h5ad(tmp_path / "p.h5ad")
    for name in ["b", "m", "d", "f", "db"]:
        res = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        assert sparse.issparse(res.X) and res.X.format == "csr"
        assert np.array_equal(res.X.toarray(), expected.X.toarray())
        assert np.array_equal(res.layers["counts"].toarray(), expected.layers["counts"].toarray())
        pd.testing.assert_frame_equal(res.obs, expected.obs)


def test_order_is_uniform_enough(tmp_path):
    n = 2000
    adata = ad.AnnData(sparse.random(n, 5, density=0.5, format="csr", dtype=np.float32, random_state=0))
    order = write_shuffled_h5ad(adata, tmp_path / "out.h5ad", chunk_size=100, seed=0)
    displacement = np.abs(order - np.arange(n)).mean()
    assert abs(displacement - n / 3) < 0.15 * n / 3
    assert len(np.unique(order[:100] // 100)) > 10


def test_edge_cases_chunk_size_one_and_single_bucket(tmp_path):
    adata = make_adata(n_obs=40, n_vars=6)
    one_row = write_shuffled_h5ad(adata, tmp_path / "one.h5ad", chunk_size=1, seed=0)
    res = ad.read_h5ad(tmp_path / "one.h5ad")
    assert np.array_equal(res.X.toarray(), adata.X.toarray()[one_row])
    assert np.array_equal(res.layers["counts"].toarray(), adata.layers["counts"].toarray()[one_row])
    one_bucket = write_shuffled_h5ad(adata, tmp_path / "single.h5ad", chunk_size=7, n_buckets=1, seed=0)
    res = ad.read_h5ad(tmp_path / "single.h5ad")
    assert np.array_equal(np.sort(one_bucket), np.arange(40)) and not np.array_equal(one_bucket, np.arange(40))
    assert np.array_equal(res.X.toarray(), adata.X.toarray()[one_bucket])
    pd.testing.assert_frame_equal(res.obs, adata.obs.iloc[one_bucket])
    single_row = adata[:1].copy()
    assert np.array_equal(write_shuffled_h5ad(single_row, tmp_path / "row.h5ad"), [0])
    assert np.array_equal(ad.read_h5ad(tmp_path / "row.h5ad").X.toarray(), single_row.X.toarray())


def test_obsp_is_permuted(tmp_path):
    adata = make_adata(n_obs=50, n_vars=4)
    adata.obsp["connectivities"] = sparse.random(50, 50, density=0.1, format="csr", random_state=1)
    order = write_shuffled_h5ad(adata, tmp_path / "out.h5ad", chunk_size=10, seed=0)
    res = ad.read_h5ad(tmp_path / "out.h5ad")
    expected = adata.obsp["connectivities"].toarray()[np.ix_(order, order)]
    assert np.array_equal(res.obsp["connectivities"].toarray(), expected)


def test_errors_leave_source_unchanged_and_no_output(src, tmp_path):
    adata, path = src
    before = ad.read_h5ad(path)
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"existing")
    with pytest.raises(FileExistsError, match="out.h5ad.*overwrite=True"):
        write_shuffled_h5ad(path, out)
    assert out.read_bytes() == b"existing"
    out.unlink()
    with pytest.raises(ValueError, match="is the source file"):
        write_shuffled_h5ad(path, path, overwrite=True)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        write_shuffled_h5ad(path, out, chunk_size=0)
    with pytest.raises(ValueError, match="n_buckets must be at least 1"):
        write_shuffled_h5ad(path, out, n_buckets=0)
    with pytest.raises(ValueError, match="0 rows"):
        write_shuffled_h5ad(adata[:0].copy(), out)

    csc = adata.copy()
    csc.X = csc.X.tocsc()
    with pytest.raises(ValueError, match="X is stored as a 'csc'.*Convert it to CSR"):
        write_shuffled_h5ad(csc, out)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(ValueError, match="X is stored as a 'csc'"):
        write_shuffled_h5ad(tmp_path / "csc.h5ad", out)

    with_raw = adata.copy()
    with_raw.raw = with_raw
    with pytest.raises(ValueError, match=r"raw.*del adata\.raw"):
        write_shuffled_h5ad(with_raw, out)
    with_raw.write_h5ad(tmp_path / "raw.h5ad")
    with pytest.raises(ValueError, match=r"raw.*del adata\.raw"):
        write_shuffled_h5ad(tmp_path / "raw.h5ad", out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csc.h5ad", "raw.h5ad", "src.h5ad"]

    after = ad.read_h5ad(path)
    assert np.array_equal(after.X.toarray(), before.X.toarray())
    pd.testing.assert_frame_equal(after.obs, before.obs)
    assert np.array_equal(adata.X.toarray(), before.X.toarray())  # the in-memory AnnData too
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert "biojepa_shuffle" not in adata.uns and "biojepa_shuffle" not in after.uns


def test_crash_while_writing_leaves_no_partial_output(src, tmp_path, monkeypatch):
    _, path = src
    out = tmp_path / "out.h5ad"
    real_write_elem = _ondisk.write_elem

    def failing_write_elem(store, key, value, **kwargs):
        if key == "obs":  # after X and the layers were written
            raise RuntimeError("disk full")
        return real_write_elem(store, key, value, **kwargs)

    monkeypatch.setattr(_ondisk, "write_elem", failing_write_elem)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shuffled_h5ad(path, out, chunk_size=64)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.h5ad"]


def test_source_is_read_in_contiguous_chunks_of_at_most_chunk_size(src, tmp_path, monkeypatch):
    _, path = src
    reads = []
    real_row_reader = _ondisk._row_reader

    def recording_row_reader(name, mat):
        read, dtype = real_row_reader(name, mat)

        def wrapped(start, stop):
            reads.append((name, start, stop))
            return read(start, stop)

        return wrapped, dtype

    monkeypatch.setattr(_ondisk, "_row_reader", recording_row_reader)
    write_shuffled_h5ad(path, tmp_path / "out.h5ad", chunk_size=300)
    expected = [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert [(start, stop) for name, start, stop in reads if name == "X"] == expected
    assert [(start, stop) for name, start, stop in reads if name == "layers/counts"] == expected
    assert len(reads) == 8
