"""Contiguous-row loading: block-shuffled minibatches for backed AnnData, and streaming loaders for inference.

A backed (``read_h5ad(..., backed="r")``) CSR matrix reads a contiguous slice of rows several times faster than the
same number of scattered rows. :class:`BlockSampler` yields minibatches made of contiguous blocks of rows, drawn in
random order, with block boundaries shifting every epoch; on a file whose rows were shuffled once when it was
written (:func:`~biojepa.data.write_shuffled_h5ad`) each block is a random sample of cells. :class:`BlockDataset`
reads a minibatch as a few row slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

#: Above this many separate row runs in one minibatch, read it with one fancy index instead of slice by slice.
_MAX_SLICES = 32


def row_runs(rows: np.ndarray) -> list[slice]:
    """Maximal runs of consecutive integers of increasing ``rows``, as slices.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import row_runs
    >>> row_runs(np.array([3, 4, 5, 9, 10, 12]))
    [slice(3, 6, None), slice(9, 11, None), slice(12, 13, None)]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return [slice(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def _world() -> tuple[int, int]:
    """``(num_replicas, rank)`` of the running process group, ``(1, 0)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class BlockSampler(DistributedSampler):
    """Minibatches of contiguous blocks of positions, in random order, sharded over DDP ranks.

    Positions ``0 .. n_rows - 1``, taken as a circle, are cut into blocks of ``block_size`` (the last one shorter when
    ``n_rows`` is not a multiple); every epoch the cut points shift by a random offset (a block may wrap around the end)
    and the blocks are shuffled; ``batch_size // block_size`` consecutive blocks of that order make one minibatch, given
    as a list of ``(start, stop)`` position ranges. Under DDP every rank draws the same order (seeded by ``seed`` and
    the epoch, which Lightning sets through :meth:`set_epoch`) and takes every ``num_replicas``-th minibatch; the list
    is padded by repeating its first minibatches so that every rank runs the same number of steps. It subclasses
    :class:`~torch.utils.data.DistributedSampler` so that Lightning does not wrap it.

    Parameters
    ----------
    n_rows
        Number of positions (rows of the :class:`BlockDataset`).
    batch_size
        Rows per minibatch (the first and last block of an epoch may be shorter).
    block_size
        Rows per contiguous block; ``None`` uses ``batch_size`` (one read per minibatch). Smaller blocks mix cells
        more across epochs at the cost of more reads.
    shuffle
        Shuffle blocks and shift their boundaries every epoch; ``False`` gives consecutive minibatches in order.
    drop_last
        Drop the minibatch smaller than ``batch_size``, if any.
    seed
        Seed of the block order.
    num_replicas, rank
        DDP world size and this process's rank; ``None`` reads them from the running process group.

    Examples
    --------
    >>> from biojepa.data import BlockSampler
    >>> sampler = BlockSampler(10, batch_size=4, shuffle=False)
    >>> list(sampler)
    [[(0, 4)], [(4, 8)], [(8, 10)]]
    >>> sampler = BlockSampler(1000, batch_size=100, block_size=25, seed=0)
    >>> batches = list(sampler)
    >>> len(batches), len(batches[0])  # 4 blocks of 25 rows per minibatch
    (10, 4)
    """

    def __init__(
        self,
        n_rows: int,
        batch_size: int,
        *,
        block_size: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        block_size = batch_size if block_size is None else int(block_size)
        if batch_size < 1 or block_size < 1 or block_size > batch_size:
            raise ValueError(
                f"Need 1 <= block_size <= batch_size, got block_size={block_size}, batch_size={batch_size}."
            )
        world, this_rank = _world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = this_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"`rank` must be in [0, {self.num_replicas}), got {self.rank}.")
        self.n_rows, self.batch_size, self.block_size = int(n_rows), int(batch_size), block_size
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, int(seed), 0

    def _blocks(self, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
        """Blocks of a circular cut of the positions, each as one or two ``(start, stop)`` ranges."""
        n, size = self.n_rows, self.block_size
        offset = int(rng.integers(n)) if self.shuffle and n else 0
        blocks = []
        for start in range(0, n, size):
            lo, hi = (start + offset) % n, (start + offset) % n + min(size, n - start)
            blocks.append([(lo, hi)] if hi <= n else [(lo, n), (0, hi - n)])
        return blocks

    def _batches(self) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = self._blocks(rng)
        if self.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        per_batch = self.batch_size // self.block_size
        batches = [sum(blocks[i : i + per_batch], []) for i in range(0, len(blocks), per_batch)]
        if self.drop_last:
            batches = [b for b in batches if sum(stop - start for start, stop in b) == self.batch_size]
        if self.num_replicas > 1 and batches:
            total = -(-len(batches) // self.num_replicas) * self.num_replicas
            batches = (batches * (total // len(batches) + 1))[:total]
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class BlockDataset(Dataset):
    """Rows ``rows`` of a registered AnnData, read a minibatch of position blocks at a time as row slices.

    ``dataset[[(start, stop), ...]]`` returns the tensors of positions ``start:stop`` of each block, concatenated in
    that order (in position order when tensors are loaded sparse); positions index ``rows`` (AnnData row numbers, in any
    order, repeats allowed). The distinct rows of a minibatch are read in increasing order with one slice per run of
    consecutive rows (one per block when the rows are contiguous), or with one fancy index when there are more than 32
    runs or tensors are loaded sparse.

    Parameters
    ----------
    adata_manager
        :class:`scvi.data.AnnDataManager` of the AnnData.
    rows
        Row numbers of the AnnData to serve; ``None`` serves every row in order.
    load_sparse_tensor
        Passed to :meth:`scvi.data.AnnDataManager.create_torch_dataset`.

    Examples
    --------
    >>> import numpy as np, scvi, biojepa as bj
    >>> from biojepa.data import BlockDataset
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata)
    >>> manager = bj.BioJEPA._get_most_recent_anndata_manager(adata)
    >>> ds = BlockDataset(manager, rows=np.arange(100, 200))
    >>> batch = ds[[(50, 60), (0, 10)]]  # rows 150-159, then 100-109
    >>> batch["X"].shape
    (20, 100)
    >>> bool((batch["X"][10:] == adata.X[100:110]).all())
    True
    """

    def __init__(self, adata_manager, rows: np.ndarray | None = None, load_sparse_tensor: bool = False):
        n_obs = adata_manager.adata.n_obs
        rows = np.arange(n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n_obs)):
            raise ValueError(f"`rows` must be a 1-d array of row numbers in [0, {n_obs}).")
        self.rows, self.load_sparse_tensor = rows, load_sparse_tensor
        self.data = adata_manager.create_torch_dataset(load_sparse_tensor=load_sparse_tensor)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, blocks: Sequence[tuple[int, int]]) -> dict:
        if self.load_sparse_tensor:  # sparse tensors are not reordered: serve the blocks in position order
            blocks = sorted(blocks)
        requested = np.concatenate([self.rows[start:stop] for start, stop in blocks])
        rows, inverse = np.unique(requested, return_inverse=True)
        runs = row_runs(rows)
        if len(runs) > _MAX_SLICES or self.load_sparse_tensor:
            out = self.data[rows]
        else:
            parts = [self.data[run] for run in runs]
            out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        if len(rows) == len(requested) and np.all(inverse == np.arange(len(rows))):
            return out
        return {key: value[inverse] for key, value in out.items()}
