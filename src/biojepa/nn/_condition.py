"""Condition embedding: batch, categorical and continuous covariates as one vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConditionEmbedding(nn.Module):
    """Sum of embeddings of the batch, the categorical covariates and a projection of continuous ones.

    Parameters
    ----------
    dim
        Output width.
    n_batch
        Number of batches (no batch embedding when 1 or less).
    n_cats_per_cov
        Number of categories of each categorical covariate.
    n_continuous_cov
        Number of continuous covariates.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import ConditionEmbedding
    >>> cond = ConditionEmbedding(dim=4, n_batch=2, n_cats_per_cov=[3], n_continuous_cov=0)
    >>> cond(torch.tensor([[0], [1]]), torch.tensor([[2], [0]]), None).shape
    torch.Size([2, 4])
    """

    def __init__(self, dim: int, n_batch: int, n_cats_per_cov: Sequence[int], n_continuous_cov: int):
        super().__init__()
        self.batch = nn.Embedding(n_batch, dim) if n_batch > 1 else None
        self.cats = nn.ModuleList(nn.Embedding(n, dim) for n in n_cats_per_cov)
        self.cont = nn.Linear(n_continuous_cov, dim, bias=False) if n_continuous_cov > 0 else None

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to condition on."""
        return self.batch is None and len(self.cats) == 0 and self.cont is None

    def forward(self, batch_index, cat_covs, cont_covs) -> torch.Tensor | None:
        """Return ``(B, dim)`` or ``None`` when there is nothing to condition on."""
        if self.is_empty:
            return None
        out = 0.0
        if self.batch is not None:
            out = out + self.batch(batch_index.long().view(-1))
        for i, emb in enumerate(self.cats):
            out = out + emb(cat_covs[:, i].long())
        if self.cont is not None:
            out = out + self.cont(cont_covs.float())
        return out
