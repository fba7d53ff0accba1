"""Gene-module tokenizer: expression → one token per gene module."""

from __future__ import annotations

import torch
from torch import nn


class GeneTokenizer(nn.Module):
    """Turn a cell's expression vector into one token per gene module.

    A module's token is the expression-weighted sum of learned gene-identity embeddings ``E_g`` over the
    module's genes, plus a learned module embedding, followed by a layer norm:
    ``token_t = LN(sum_{g in t} x_g E_g + M_t)``.

    Parameters
    ----------
    module_index
        ``(T, S)`` long tensor: the gene indices of each of the ``T`` modules, padded with ``n_genes``
        (a padding slot whose embedding is fixed at zero).
    n_genes
        Number of genes ``G``.
    n_embed
        Token width ``D``.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import GeneTokenizer
    >>> tok = GeneTokenizer(torch.tensor([[0, 1], [2, 3]]), n_genes=4, n_embed=8)
    >>> tok(torch.randn(5, 4)).shape
    torch.Size([5, 2, 8])
    """

    def __init__(self, module_index: torch.Tensor, n_genes: int, n_embed: int):
        super().__init__()
        if module_index.ndim != 2:
            raise ValueError(
                f"`module_index` must be 2-D (n_modules, module_size), got shape {tuple(module_index.shape)}."
            )
        self.n_genes = n_genes
        self.register_buffer("module_index", module_index.long())
        module_size = (module_index < n_genes).sum(1).clamp(min=1).float()
        self.register_buffer("inv_sqrt_size", module_size.rsqrt()[:, None])  # (T, 1)
        self.gene_embedding = nn.Parameter(torch.randn(n_genes, n_embed))  # E_g, (G, D)
        self.module_embedding = nn.Parameter(torch.zeros(module_index.shape[0], n_embed))  # M_t, (T, D)
        self.norm = nn.LayerNorm(n_embed)

    @property
    def n_modules(self) -> int:
        """Number of tokens ``T``."""
        return self.module_index.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokenize standardized expression ``x`` of shape ``(B, G)`` into ``(B, T, D)``."""
        T, S = self.module_index.shape
        flat = self.module_index.view(-1)
        x_pad = nn.functional.pad(x, (0, 1))  # (B, G + 1); last column is the padding slot
        x_mod = x_pad.index_select(1, flat).view(-1, T, S)  # (B, T, S)
        emb = nn.functional.pad(self.gene_embedding, (0, 0, 0, 1)).index_select(0, flat).view(T, S, -1)  # (T, S, D)
        tokens = torch.einsum("bts,tsd->btd", x_mod, emb) * self.inv_sqrt_size  # (B, T, D)
        return self.norm(tokens + self.module_embedding)
