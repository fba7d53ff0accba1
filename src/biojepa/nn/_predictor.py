"""The JEPA predictor: one transformer for masked modules, time series and perturbation sets, on packed samples."""

from __future__ import annotations

import torch
from torch import nn

from ._packing import PackedTransformer, Segment, run_packed

#: Sample kinds the predictor reads (index into its kind embedding).
KINDS = ("module", "time", "perturbation")
#: Row length of packed mixed-length samples (``benchmarks/packing.py``: 64 beat the longest sample's length).
PACK_CAPACITY = 64


class Predictor(nn.Module):
    """Predict target representations for every task from one packed sequence (Patch n' Pack).

    Each task is a kind of variable-length sample; samples of all kinds are packed together into rows with a
    block-diagonal attention mask and RoPE positions restarting in each sample (:func:`~biojepa.nn.run_packed`),
    so one step can mix them:

    * **masked module** (``1 + M`` tokens): the cell token (``z`` plus the condition) and one query per masked
      module (a mask token plus the module's position embedding) → the target-encoder states of those modules.
      The cell latent is the predictor's only view of the cell, so everything needed to predict the hidden
      modules must pass through ``z``: that bottleneck is what makes ``z`` a cell state.
    * **time series** (``L`` tokens): observed time points (their latents) and queried time points (a query
      token); RoPE over time makes attention depend on time differences Δt → the target latents at the queries.
    * **perturbation set** (``1 + k`` tokens): the context and the perturbation tokens → their interaction.

    Parameters
    ----------
    n_latent
        Width of ``z``.
    n_modules
        Number of gene modules ``T``.
    n_target
        Width of the target tokens ``D``.
    dim
        Predictor width.
    depth, n_heads
        Transformer settings.
    perturbation_dim
        Width of perturbation tokens (``None``: no perturbation samples).
    rope_base
        RoPE wavelength scale, in time steps.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import Predictor
    >>> pred = Predictor(n_latent=3, n_modules=4, n_target=8, dim=16, depth=1, n_heads=2)
    >>> pred.predict_modules(torch.randn(5, 3), torch.tensor([[0, 2]] * 5)).shape
    torch.Size([5, 2, 8])
    """

    def __init__(
        self,
        n_latent: int,
        n_modules: int,
        n_target: int,
        dim: int,
        depth: int,
        n_heads: int,
        perturbation_dim: int | None = None,
        rope_base: float = 100.0,
    ):
        super().__init__()
        self.from_latent = nn.Linear(n_latent, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(0.02 * torch.randn(n_modules, dim))
        self.kind = nn.Parameter(0.02 * torch.randn(len(KINDS), dim))
        self.time_query = nn.Parameter(torch.zeros(1, dim))
        self.from_perturbation = nn.Linear(perturbation_dim, dim) if perturbation_dim else None
        self.transformer = PackedTransformer(dim, depth, n_heads, rope_base=rope_base)
        self.to_target = nn.Linear(dim, n_target)
        self.to_latent = nn.Linear(dim, n_latent)
        self.to_interaction = nn.Linear(dim, n_latent)
        nn.init.zeros_(self.to_interaction.weight)  # interactions start at zero: additive composition
        nn.init.zeros_(self.to_interaction.bias)

    def forward(self, segments: list[Segment]) -> list[torch.Tensor]:
        """Run the transformer once over every sample of every segment; return each segment's output tokens."""
        return run_packed(self.transformer, self.transformer.rope, segments)

    # ------------------------------------------------------------------ masked modules
    def module_segment(
        self, z: torch.Tensor, masks_pred: torch.Tensor, condition: torch.Tensor | None = None
    ) -> Segment:
        """Samples ``[cell, query_1 … query_M]`` for ``z`` ``(B, n_latent)`` and module indices ``(B, M)``."""
        cell = self.from_latent(z)[:, None] + self.kind[0]  # (B, 1, dim)
        if condition is not None:
            cell = cell + condition[:, None]
        queries = self.mask_token + self.position[masks_pred] + self.kind[0]  # (B, M, dim)
        B, M = masks_pred.shape
        tokens = torch.cat([cell, queries], 1).reshape(B * (1 + M), -1)
        return Segment(tokens, torch.full((B,), 1 + M, dtype=torch.long, device=z.device))

    def module_output(self, out: torch.Tensor, masks_pred: torch.Tensor) -> torch.Tensor:
        """``(B, M, n_target)`` predicted target states from a module segment's outputs."""
        B, M = masks_pred.shape
        return self.to_target(out.view(B, 1 + M, -1)[:, 1:])

    def predict_modules(self, z, masks_pred, condition=None) -> torch.Tensor:
        """Predict ``(B, M, n_target)`` target states of the modules ``masks_pred`` ``(B, M)`` from ``z``."""
        return self.module_output(self([self.module_segment(z, masks_pred, condition)])[0], masks_pred)

    # ------------------------------------------------------------------ time series
    def time_segment(
        self,
        z: torch.Tensor,
        query: torch.Tensor,
        lengths: torch.Tensor,
        positions: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> Segment:
        """Time-series samples from per-token latents ``z`` ``(N, n_latent)`` (ignored at queries).

        ``query`` ``(N,)`` marks the time points to predict, ``lengths`` ``(S,)`` the points per sample (tokens
        sample after sample), ``positions`` ``(N,)`` each token's time since its sample's first point, in steps.
        """
        tokens = torch.where(query[:, None], self.time_query, self.from_latent(z)) + self.kind[1]
        if condition is not None:
            tokens = tokens + condition
        return Segment(tokens, lengths, positions)

    # ------------------------------------------------------------------ perturbation sets
    def perturbation_segment(self, context: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor) -> Segment:
        """Samples ``[context, token_1 … token_k]`` of perturbation sets (``valid`` ``(B, K)`` drops padding)."""
        seq = torch.cat([context[:, None], tokens], 1)  # (B, 1 + K, p)
        keep = torch.cat([valid.new_ones(valid.shape[0], 1), valid], 1)
        flat = self.from_perturbation(seq[keep]) + self.kind[2]
        return Segment(flat, keep.sum(1))

    def interaction_output(self, out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, n_latent)`` interaction read at each perturbation sample's context token."""
        starts = torch.cumsum(lengths, 0) - lengths
        return self.to_interaction(out[starts])
