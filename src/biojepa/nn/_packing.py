"""Patch n' Pack: variable-length samples packed into rows with block-diagonal attention and per-sample RoPE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._encoder import Block, _rotate


@dataclass
class Segment:
    """Samples of one kind, their tokens concatenated.

    Parameters
    ----------
    tokens
        ``(N, dim)`` tokens of every sample, sample after sample.
    lengths
        ``(S,)`` number of tokens of each sample (``lengths.sum() == N``).
    positions
        ``(N,)`` position of each token within its sample (time or order; RoPE reads it), starting at 0 in
        each sample. ``None``: every token at position 0 (a set, no order).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import Segment
    >>> seg = Segment(torch.randn(5, 8), torch.tensor([2, 3]), torch.tensor([0.0, 1.0, 0.0, 0.5, 2.0]))
    >>> int(seg.lengths.sum()) == seg.tokens.shape[0]
    True
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    positions: torch.Tensor | None = None


@dataclass
class PackedLayout:
    """Where each sample's tokens sit once packed into ``rows`` rows of ``capacity`` slots.

    Parameters
    ----------
    rows, capacity
        Shape of the packed sequence.
    slot
        ``(N,)`` flat slot (``row * capacity + column``) of each token, in the input order.
    sample_id
        ``(rows, capacity)`` sample of each slot, ``-1`` for the unused tail of a row.
    single
        True when every row holds exactly one sample and no slot is empty (plain batching; no mask needed).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import pack
    >>> layout = pack(torch.tensor([2, 1]), capacity=3)
    >>> layout.attention_mask()[0, 0].int().tolist()  # samples 0 and 1 share the row, never each other
    [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """

    rows: int
    capacity: int
    slot: torch.Tensor
    sample_id: torch.Tensor
    single: bool

    def attention_mask(self) -> torch.Tensor | None:
        """SDPA boolean mask ``(rows, 1, capacity, capacity)``: ``True`` where query and key share a sample.

        Empty slots attend only to each other, so no row of the mask is all ``False``; real tokens never see
        them. ``None`` for plain batching.
        """
        if self.single:
            return None
        sid = self.sample_id
        return (sid[:, :, None] == sid[:, None, :])[:, None]


def pack(lengths: torch.Tensor, capacity: int | None = None) -> PackedLayout:
    """Pack samples of the given lengths into rows, first-fit decreasing.

    Parameters
    ----------
    lengths
        ``(S,)`` token counts.
    capacity
        Row length; default the longest sample (equal lengths then give plain batching).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import pack
    >>> layout = pack(torch.tensor([3, 1, 2, 2]))
    >>> layout.rows, layout.capacity
    (3, 3)
    >>> layout.sample_id.tolist()
    [[0, 0, 0], [2, 2, 1], [3, 3, -1]]
    """
    sizes = [int(n) for n in lengths.tolist()]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Every sample needs at least one token; got lengths {sizes[:10]}.")
    capacity = max(sizes) if capacity is None else int(capacity)
    if max(sizes) > capacity:
        raise ValueError(f"A sample of {max(sizes)} tokens does not fit rows of `capacity`={capacity}.")
    free: list[int] = []
    row_of, offset_of = [0] * len(sizes), [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        row = next((r for r, f in enumerate(free) if f >= sizes[i]), None)
        if row is None:
            free.append(capacity)
            row = len(free) - 1
        row_of[i], offset_of[i] = row, capacity - free[row]
        free[row] -= sizes[i]
    device = lengths.device
    sample = torch.repeat_interleave(torch.arange(len(sizes), device=device), lengths.to(device))
    starts = torch.cumsum(lengths.to(device), 0) - lengths.to(device)
    within = torch.arange(sample.numel(), device=device) - starts[sample]
    row_t = torch.tensor(row_of, device=device)
    off_t = torch.tensor(offset_of, device=device)
    slot = row_t[sample] * capacity + off_t[sample] + within
    sample_id = torch.full((len(free) * capacity,), -1, dtype=torch.long, device=device)
    sample_id[slot] = sample
    single = len(free) == len(sizes) and all(f == 0 for f in free)
    return PackedLayout(len(free), capacity, slot, sample_id.view(len(free), capacity), single)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over continuous positions (time points or order within a sample).

    Rotating queries and keys by angles proportional to their positions makes attention depend on position
    differences only; positions are reset to 0 at each sample's start when packing.

    Parameters
    ----------
    head_dim
        Width of one attention head (even).
    base
        Longest wavelength scale, in position units.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import RotaryEmbedding
    >>> rope = RotaryEmbedding(head_dim=4)
    >>> cos, sin = rope(torch.tensor([[0.0, 1.5]]))
    >>> q = torch.randn(1, 2, 2, 4)  # (rows, heads, tokens, head_dim)
    >>> rope.rotate(q, cos, sin).shape
    torch.Size([1, 2, 2, 4])
    """

    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head width, got {head_dim}.")
        self.register_buffer("inv_freq", base ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos``/``sin`` of shape ``(rows, 1, capacity, head_dim / 2)`` for positions ``(rows, capacity)``."""
        angles = positions.float()[..., None] * self.inv_freq  # (R, C, Dh/2)
        return angles.cos()[:, None], angles.sin()[:, None]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(rows, heads, capacity, head_dim)`` by the angles in ``cos``/``sin``."""
        return _rotate(x, cos, sin)


def run_packed(
    transformer: nn.Module, rope: RotaryEmbedding | None, segments: list[Segment], capacity: int | None = None
) -> list[torch.Tensor]:
    """Run ``transformer`` once over every sample of every segment, packed; return each segment's outputs.

    Samples never attend to each other (block-diagonal mask); RoPE positions restart in each sample; no
    token is computed twice and the only padding is the unused tail of rows.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import PackedTransformer, RotaryEmbedding, Segment, run_packed
    >>> net = PackedTransformer(dim=8, depth=1, n_heads=2)
    >>> a = Segment(torch.randn(5, 8), torch.tensor([2, 3]), torch.tensor([0.0, 1.0, 0.0, 2.0, 3.0]))
    >>> b = Segment(torch.randn(4, 8), torch.tensor([1, 1, 1, 1]))
    >>> [out.shape for out in run_packed(net, net.rope, [a, b])]
    [torch.Size([5, 8]), torch.Size([4, 8])]
    """
    tokens = torch.cat([s.tokens for s in segments])
    lengths = torch.cat([s.lengths.to(tokens.device) for s in segments])
    layout = pack(lengths, capacity)
    dim = tokens.shape[-1]
    x = tokens.new_zeros(layout.rows * layout.capacity, dim).index_copy(0, layout.slot, tokens)
    rotary = None
    if rope is not None and any(s.positions is not None for s in segments):
        pos = torch.cat(
            [s.positions if s.positions is not None else s.tokens.new_zeros(s.tokens.shape[0]) for s in segments]
        )
        packed_pos = pos.new_zeros(layout.rows * layout.capacity).index_copy(0, layout.slot, pos.float())
        rotary = rope(packed_pos.view(layout.rows, layout.capacity))
    out = transformer(x.view(layout.rows, layout.capacity, dim), layout.attention_mask(), rotary)
    out = out.reshape(-1, dim)[layout.slot]
    return list(out.split([s.tokens.shape[0] for s in segments]))


class PackedTransformer(nn.Module):
    """Transformer over packed rows: pre-norm blocks with SDPA, an optional block mask and RoPE.

    Parameters
    ----------
    dim, depth, n_heads, mlp_ratio, dropout
        Transformer settings.
    rope_base
        RoPE wavelength scale (``None``: no positions).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import PackedTransformer
    >>> PackedTransformer(dim=8, depth=1, n_heads=2)(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        n_heads: int,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        rope_base: float | None = 100.0,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, n_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.rope = RotaryEmbedding(dim // n_heads, rope_base) if rope_base is not None else None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rotary=None) -> torch.Tensor:
        """Run every block on ``x`` ``(rows, capacity, dim)`` with SDPA's ``attn_mask`` and RoPE ``(cos, sin)``."""
        for block in self.blocks:
            x = block(x, attn_mask, rotary)
        return self.norm(x)
