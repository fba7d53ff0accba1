"""Transformer blocks and the cell encoder (tokenizer → transformer → pooled cell latent)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._tokenizer import GeneTokenizer

POOLINGS = ("mean", "cls", "both")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: rotate the two halves of ``x`` ``(B, H, N, Dh)`` as complex pairs by the angles in ``cos``/``sin``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block with PyTorch's fused scaled-dot-product attention.

    Parameters
    ----------
    dim
        Token width.
    n_heads
        Attention heads; must divide ``dim``.
    mlp_ratio
        Hidden width of the MLP as a multiple of ``dim``.
    dropout
        Dropout on the attention and MLP outputs.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import Block
    >>> Block(dim=8, n_heads=2)(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"`n_heads`={n_heads} must divide the token width {dim}.")
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rotary=None) -> torch.Tensor:
        """Attention then MLP on ``x`` ``(B, N, D)``; ``attn_mask``: SDPA's mask; ``rotary``: RoPE's (cos, sin)."""
        B, N, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, N, 3, self.n_heads, D // self.n_heads)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        if rotary is not None:
            cos, sin = rotary
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, Dh)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(B, N, D)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of :class:`Block` with a final layer norm.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import Transformer
    >>> Transformer(dim=8, depth=2, n_heads=2)(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim: int, depth: int, n_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, n_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run every block on ``x`` of shape ``(B, N, D)``."""
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.norm(x)


class CellEncoder(nn.Module):
    """Encode a cell: gene-module tokens → transformer → per-token states and a pooled cell latent ``z``.

    The same class serves as context encoder (sees only the visible modules) and, as an EMA copy, as
    target encoder (sees every module).

    Parameters
    ----------
    tokenizer
        The :class:`~biojepa.nn.GeneTokenizer`.
    n_latent
        Width of the cell latent ``z``.
    depth, n_heads, mlp_ratio, dropout
        Transformer settings; the token width is the tokenizer's.
    pooling
        Where ``z`` is read: ``"mean"`` of the module tokens, a learned ``"cls"`` token that attends to them,
        or ``"both"`` (the two concatenated before the projection to ``z``).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import CellEncoder, GeneTokenizer
    >>> tok = GeneTokenizer(torch.tensor([[0, 1], [2, 3]]), n_genes=4, n_embed=8)
    >>> tokens, z = CellEncoder(tok, n_latent=3, depth=1, n_heads=2)(torch.randn(5, 4))
    >>> tokens.shape, z.shape
    (torch.Size([5, 2, 8]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        tokenizer: GeneTokenizer,
        n_latent: int,
        depth: int,
        n_heads: int,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pooling: str = "mean",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
        n_embed = tokenizer.module_embedding.shape[1]
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.cls_token = nn.Parameter(torch.zeros(1, 1, n_embed)) if pooling != "mean" else None
        self.transformer = Transformer(n_embed, depth, n_heads, mlp_ratio, dropout)
        self.to_latent = nn.Linear(n_embed * (2 if pooling == "both" else 1), n_latent)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``x`` ``(B, G)``; ``keep`` ``(B, K)`` selects visible modules. Returns tokens and ``z``.

        ``token_mask`` ``(B, T)`` marks the modules a cell has (``False``: a modality not measured in that cell);
        absent modules are neither attended to nor pooled. A cell with no module left gets ``z`` from all of
        them (callers drop such rows).
        """
        tokens = self.tokenizer(x)  # (B, T, D)
        if keep is not None:
            tokens = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, K, D)
            if token_mask is not None:
                token_mask = token_mask.gather(1, keep)
        attn_mask = None
        if token_mask is not None and not bool(token_mask.all()):
            token_mask = token_mask | ~token_mask.any(1, keepdim=True)  # no all-masked row (SDPA gives NaN)
            attn_mask = token_mask[:, None, None, :]
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1)  # (B, 1 + K, D)
            if attn_mask is not None:
                attn_mask = torch.cat([attn_mask.new_ones(attn_mask.shape[:-1] + (1,)), attn_mask], -1)
        tokens = self.transformer(tokens, attn_mask)  # (B, [1 +] K, D)
        if self.cls_token is not None:
            cls, tokens = tokens[:, 0], tokens[:, 1:]  # (B, D), (B, K, D)
        if attn_mask is None:
            pooled = tokens.mean(1)
        else:
            w = token_mask[..., None].to(tokens.dtype)
            pooled = (tokens * w).sum(1) / w.sum(1)
        if self.pooling == "cls":
            pooled = cls
        elif self.pooling == "both":
            pooled = torch.cat([pooled, cls], -1)  # (B, 2D)
        z = self.to_latent(pooled)  # (B, n_latent)
        return tokens, z
