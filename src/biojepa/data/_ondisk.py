"""Shuffle the rows of an ``.h5ad`` file on disk, for training on data larger than memory.

Reading a contiguous block of rows from a backed CSR matrix is much faster than reading scattered rows, so
training on a backed AnnData reads contiguous blocks in random order. That only gives random minibatches when
the rows of the file are in random order, which :func:`write_shuffled_h5ad` arranges once, with an external
(bucket) shuffle whose memory use is bounded by about one chunk of rows.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

try:
    from anndata.io import read_elem, sparse_dataset, write_elem
except ImportError:  # pragma: no cover - anndata < 0.11
    from anndata.experimental import read_elem, sparse_dataset, write_elem

logger = logging.getLogger(__name__)

_RowReader = Callable[[int, int], sparse.csr_matrix]


def _row_reader(name: str, mat) -> tuple[_RowReader, np.dtype]:
    """Return a function reading rows ``start:stop`` of ``mat`` as CSR, and the dtype of ``mat``."""
    fmt = getattr(mat, "format", None)
    if fmt is not None and fmt != "csr":
        raise ValueError(
            f"{name} is stored as a {fmt!r} sparse matrix; rows can only be read in chunks from CSR. Convert it "
            f"to CSR first (e.g. `adata.{name} = adata.{name}.tocsr()` in memory, then write the file again)."
        )
    dtype = np.dtype(mat.dtype)

    def read(start: int, stop: int) -> sparse.csr_matrix:
        piece = mat[start:stop]
        piece = sparse.csr_matrix(piece) if sparse.issparse(piece) else sparse.csr_matrix(np.asarray(piece))
        return piece.astype(dtype, copy=False)

    return read, dtype


def _append(group: h5py.Group, name: str, values: np.ndarray) -> None:
    """Append ``values`` to the resizable 1-D dataset ``group[name]``, creating it if needed."""
    if name not in group:
        chunks = (int(np.clip(8 * len(values), 256, 1 << 16)),)
        group.create_dataset(name, data=values, maxshape=(None,), chunks=chunks)
        return
    ds = group[name]
    n = ds.shape[0]
    ds.resize((n + len(values),))
    ds[n:] = values


def _permute_obs_aligned(value, order: np.ndarray):
    return value.iloc[order] if isinstance(value, pd.DataFrame) else value[order]


def _read_source(source: AnnData | h5py.File) -> tuple:
    """Return the row matrices (lazily where on disk) and the other, in-memory elements of ``source``."""
    raw_fix = "drop it (`del adata.raw`) or move it to a layer (`adata.layers['raw'] = adata.raw.X`) first"
    if isinstance(source, AnnData):
        if source.raw is not None:
            raise ValueError(f"The source AnnData has `raw`, which cannot be shuffled on disk; {raw_fix}.")
        matrices = {} if source.X is None else {"X": source.X}
        matrices.update({f"layers/{k}": v for k, v in source.layers.items()})
        maps = (dict(m) for m in (source.obsm, source.varm, source.obsp, source.varp))
        return matrices, source.obs, source.var, dict(source.uns), *maps
    if "raw" in source:
        raise ValueError(f"{source.filename!r} has `raw`, which cannot be shuffled on disk; {raw_fix}.")

    def element(key: str, default=None):
        if key not in source:
            return default
        node = source[key]
        if isinstance(node, h5py.Dataset):
            return node  # dense array, read in row slices
        if node.attrs.get("encoding-type", "") in ("csr_matrix", "csc_matrix"):
            return sparse_dataset(node)
        return read_elem(node)

    matrices = {} if "X" not in source else {"X": element("X")}
    matrices.update({f"layers/{k}": element(f"layers/{k}") for k in source.get("layers", {})})
    maps = (element(k, {}) for k in ("obsm", "varm", "obsp", "varp"))
    return matrices, read_elem(source["obs"]), read_elem(source["var"]), element("uns", {}), *maps


def write_shuffled_h5ad(
    source: str | os.PathLike | AnnData,
    output: str | os.PathLike,
    *,
    seed: int = 0,
    chunk_size: int = 100_000,
    n_buckets: int | None = None,
    tmp_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Write a copy of an AnnData with its rows in uniformly random order, in chunks.

    Pass 1 reads the matrices (``X`` and every layer) in contiguous blocks of ``chunk_size`` rows and sends each
    row to a uniformly random bucket in a temporary HDF5 file; pass 2 loads one bucket at a time, shuffles its
    rows and appends them to the output. Memory use is about one chunk (or bucket) of rows plus the per-row
    tables (``obs``, ``obsm``, ``obsp``), so the input may be larger than memory. The output ``X`` and layers
    are CSR, so that ``anndata.read_h5ad(output, backed="r")`` can read contiguous row blocks quickly.

    Parameters
    ----------
    source
        Path to an ``.h5ad`` file, or an AnnData (in memory or opened with ``backed="r"``). A file is read
        through h5py without loading ``X`` or the layers; the source is never modified.
    output
        Path of the ``.h5ad`` file to write. It is written in a hidden temporary directory next to it and
        renamed at the end, so an error never leaves a partial file here.
    seed
        Seed of the random permutation; recorded in ``uns["biojepa_shuffle"]`` of the output.
    chunk_size
        Number of rows read from the source at once.
    n_buckets
        Number of buckets of the external shuffle; by default ``ceil(n_obs / chunk_size)``, so a bucket holds
        about ``chunk_size`` rows.
    tmp_dir
        Directory for the temporary bucket file (about the size of the matrices); by default the system's.
    overwrite
        Whether to replace an existing ``output``.

    Returns
    -------
    The permutation ``order`` (int64, length ``n_obs``): row ``i`` of the output is row ``order[i]`` of the
    source.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import anndata as ad
    >>> import numpy as np
    >>> from scipy import sparse
    >>> counts = sparse.random(500, 20, density=0.1, format="csr", dtype=np.float32, random_state=0)
    >>> adata = ad.AnnData(counts)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     adata.write_h5ad(pathlib.Path(tmp) / "cells.h5ad")
    ...     order = write_shuffled_h5ad(pathlib.Path(tmp) / "cells.h5ad", pathlib.Path(tmp) / "shuffled.h5ad",
    ...                                 chunk_size=100)
    ...     shuffled = ad.read_h5ad(pathlib.Path(tmp) / "shuffled.h5ad", backed="r")
    ...     print(shuffled.obs_names[0] == adata.obs_names[order[0]], shuffled.shape)
    ...     shuffled.file.close()
    True (500, 20)
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    if n_buckets is not None and n_buckets < 1:
        raise ValueError(f"n_buckets must be at least 1 (or None for the default), got {n_buckets}.")
    output = Path(output)
    if isinstance(source, AnnData):
        source_path = Path(source.filename) if source.isbacked else None
    else:
        source_path = Path(source)
    if source_path is not None and output.resolve() == source_path.resolve():
        raise ValueError(f"output {str(output)!r} is the source file; write the shuffled copy to another path.")
    if output.exists() and not overwrite:
        raise FileExistsError(f"Output file {str(output)!r} already exists; pass overwrite=True to replace it.")

    h5 = None if isinstance(source, AnnData) else h5py.File(source_path, "r")
    try:
        matrices, obs, var, uns, obsm, varm, obsp, varp = _read_source(source if h5 is None else h5)
        readers = {key: _row_reader(key, mat) for key, mat in matrices.items()}
        n_obs, n_vars = len(obs), len(var)
        if n_obs == 0:
            raise ValueError("The source has 0 rows (n_obs == 0); there is nothing to shuffle.")
        if n_buckets is None:
            n_buckets = max(1, math.ceil(n_obs / chunk_size))
        logger.info("Shuffling %d rows of %s in %d buckets.", n_obs, list(readers) or "obs only", n_buckets)

        rng = np.random.default_rng(seed)
        order = np.empty(n_obs, dtype=np.int64)
        total_nnz = [0] * len(readers)
        # The output is written inside a fresh hidden directory next to it, then renamed into place.
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
        tmp_output = staging / output.name
        try:
            with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp, h5py.File(Path(tmp) / "buckets.h5", "w") as bf:
                # Pass 1: contiguous chunks of rows -> random buckets (rows kept in source order within a bucket).
                for start in range(0, n_obs, chunk_size):
                    stop = min(start + chunk_size, n_obs)
                    bucket = rng.integers(n_buckets, size=stop - start)
                    by_bucket = np.argsort(bucket, kind="stable")
                    bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=n_buckets))])
                    filled = np.flatnonzero(np.diff(bounds))
                    for b in filled:
                        _append(bf.require_group(f"rows/{b}"), "ids", start + by_bucket[bounds[b] : bounds[b + 1]])
                    for j, (read, _) in enumerate(readers.values()):
                        chunk = read(start, stop)
                        total_nnz[j] += chunk.nnz
                        for b in filled:
                            piece = chunk[by_bucket[bounds[b] : bounds[b + 1]]]
                            group = bf.require_group(f"m{j}/{b}")
                            _append(group, "data", piece.data)
                            _append(group, "indices", piece.indices)
                            _append(group, "nnz", np.diff(piece.indptr))

                # Pass 2: each bucket in turn, its rows in random order, appended to the output.
                with h5py.File(tmp_output, "w") as out:
                    out.attrs["encoding-type"], out.attrs["encoding-version"] = "anndata", "0.1.0"
                    write_elem(out, "layers", {})
                    pos = 0
                    for b in range(n_buckets):
                        if f"rows/{b}" not in bf:
                            continue
                        ids = bf[f"rows/{b}/ids"][:]
                        perm = rng.permutation(len(ids))
                        order[pos : pos + len(ids)] = ids[perm]
                        pos += len(ids)
                        for j, (key, (_, dtype)) in enumerate(readers.items()):
                            # One index dtype for indptr and indices (int32 while it fits), as scipy wants it:
                            # with mixed dtypes, every row selection of the loaded matrix copies all its indices.
                            index_dtype = np.int32 if max(total_nnz[j], n_vars) < np.iinfo(np.int32).max else np.int64
                            group = bf[f"m{j}/{b}"]
                            indptr = np.concatenate([[0], np.cumsum(group["nnz"][:], dtype=np.int64)])
                            mat = sparse.csr_matrix(
                                (
                                    group["data"][:].astype(dtype, copy=False),
                                    group["indices"][:].astype(index_dtype, copy=False),
                                    indptr.astype(index_dtype),
                                ),
                                shape=(len(ids), n_vars),
                            )[perm]
                            if key in out:
                                sparse_dataset(out[key]).append(mat)
                            else:
                                write_elem(out, key, mat, dataset_kwargs={"indptr_dtype": index_dtype})

                    uns = {**uns, "biojepa_shuffle": {"seed": seed}}
                    obsm = {k: _permute_obs_aligned(v, order) for k, v in obsm.items()}
                    obsp = {
                        k: (v[order][:, order] if sparse.issparse(v) else np.asarray(v)[np.ix_(order, order)])
                        for k, v in obsp.items()
                    }
                    elements = {"obs": obs.iloc[order], "var": var, "obsm": obsm, "varm": varm}
                    for key, value in {**elements, "obsp": obsp, "varp": varp, "uns": uns}.items():
                        write_elem(out, key, value)
            os.replace(tmp_output, output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if h5 is not None:
            h5.close()
    return order
