"""Data splitter of BioJEPA: scvi-tools' :class:`~scvi.dataloaders.DataSplitter`, with block-shuffled loading."""

from __future__ import annotations

import numpy as np
from scvi import settings
from scvi.dataloaders import DataSplitter
from torch.utils.data import DataLoader

from ..data import BlockDataset, BlockSampler


class BioJEPADataSplitter(DataSplitter):
    """Train/validation/test split and loaders; with ``block_shuffle=True``, minibatches of contiguous rows.

    Without ``block_shuffle`` this is :class:`scvi.dataloaders.DataSplitter`. With it, each split's rows are served in
    increasing order by a :class:`~biojepa.data.BlockDataset`, and the training loader draws minibatches of contiguous
    blocks in random order (:class:`~biojepa.data.BlockSampler`, sharded over DDP ranks by itself). Pair it with
    ``shuffle_set_split=False`` (what :meth:`biojepa.BioJEPA.train` does with ``block_shuffle=True``): on a
    row-shuffled file (see :func:`~biojepa.data.write_shuffled_h5ad`) the first rows are already a random validation
    set, and the training rows stay one contiguous range.

    Parameters
    ----------
    adata_manager
        :class:`scvi.data.AnnDataManager` of the training data.
    block_shuffle
        Load contiguous blocks of rows in random order (fast on backed AnnData).
    block_size
        Rows per block; ``None`` uses the batch size (one read per minibatch).
    **kwargs
        Keyword arguments of :class:`scvi.dataloaders.DataSplitter` (``train_size``, ``batch_size``, ...).

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> from biojepa.train import BioJEPADataSplitter
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata)
    >>> manager = bj.BioJEPA._get_most_recent_anndata_manager(adata)
    >>> splitter = BioJEPADataSplitter(
    ...     manager, block_shuffle=True, shuffle_set_split=False, train_size=0.9, batch_size=64
    ... )
    >>> splitter.setup()
    >>> splitter.train_idx[:3], len(splitter.val_idx)  # contiguous rows, the first 40 are validation
    (array([40, 41, 42]), 40)
    >>> batch = next(iter(splitter.train_dataloader()))
    >>> batch["X"].shape
    torch.Size([64, 100])
    """

    def __init__(self, adata_manager, *, block_shuffle: bool = False, block_size: int | None = None, **kwargs):
        if block_shuffle:
            kwargs.pop("distributed_sampler", None)  # the block sampler shards itself
        elif block_size is not None:
            raise ValueError("`block_size` is used with `block_shuffle=True`; pass both or neither.")
        super().__init__(adata_manager, **kwargs)
        self.block_shuffle, self.block_size = block_shuffle, block_size

    def _block_loader(self, indices, shuffle: bool) -> DataLoader:
        rows = np.sort(np.asarray(indices, dtype=np.int64))
        kwargs = dict(self.data_loader_kwargs)
        batch_size = kwargs.pop("batch_size", None) or settings.batch_size
        sampler = BlockSampler(
            len(rows),
            batch_size,
            block_size=self.block_size if shuffle else None,
            shuffle=shuffle,
            drop_last=self.drop_last if shuffle else False,
            seed=settings.seed or 0,
        )
        kwargs.setdefault("num_workers", settings.dl_num_workers)
        kwargs.setdefault("persistent_workers", settings.dl_persistent_workers and kwargs["num_workers"] > 0)
        return DataLoader(
            BlockDataset(self.adata_manager, rows, load_sparse_tensor=self.load_sparse_tensor),
            sampler=sampler,
            batch_size=None,
            pin_memory=self.pin_memory,
            **kwargs,
        )

    def train_dataloader(self):
        """Training loader (block-shuffled with ``block_shuffle=True``)."""
        if not self.block_shuffle:
            return super().train_dataloader()
        return self._block_loader(self.train_idx, shuffle=True)

    def val_dataloader(self):
        """Validation loader, if there is a validation set."""
        if not self.block_shuffle:
            return super().val_dataloader()
        if len(self.val_idx) > 0:
            return self._block_loader(self.val_idx, shuffle=False)

    def test_dataloader(self):
        """Test loader, if there is a test set."""
        if not self.block_shuffle:
            return super().test_dataloader()
        if len(self.test_idx) > 0:
            return self._block_loader(self.test_idx, shuffle=False)
