"""JEPA predictor: from a cell latent and condition, regress the target states of masked modules."""

from __future__ import annotations

import torch
from torch import nn

from ._encoder import Transformer


class MaskedModulePredictor(nn.Module):
    """Predict the target-encoder states of masked modules from the cell latent ``z``.

    The predictor's sequence is one cell token (``z`` plus the condition embedding) followed by one query
    per masked module (a shared mask token plus that module's position embedding). The cell latent is the
    predictor's only view of the cell, so everything needed to predict the hidden modules must pass
    through ``z``: that bottleneck is what makes ``z`` a cell state.

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

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import MaskedModulePredictor
    >>> pred = MaskedModulePredictor(n_latent=3, n_modules=4, n_target=8, dim=16, depth=1, n_heads=2)
    >>> pred(torch.randn(5, 3), torch.tensor([[0, 2]] * 5)).shape
    torch.Size([5, 2, 8])
    """

    def __init__(self, n_latent: int, n_modules: int, n_target: int, dim: int, depth: int, n_heads: int):
        super().__init__()
        self.from_latent = nn.Linear(n_latent, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(0.02 * torch.randn(n_modules, dim))
        self.transformer = Transformer(dim, depth, n_heads)
        self.to_target = nn.Linear(dim, n_target)

    def forward(self, z: torch.Tensor, masks_pred: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ``(B, M, D)`` target states for module indices ``masks_pred`` ``(B, M)``.

        ``condition`` ``(B, dim)`` is added to the cell token (covariates the latent need not encode).
        """
        cell = self.from_latent(z)[:, None]  # (B, 1, dim)
        if condition is not None:
            cell = cell + condition[:, None]
        queries = self.mask_token + self.position[masks_pred]  # (B, M, dim)
        out = self.transformer(torch.cat([cell, queries], dim=1))  # (B, 1 + M, dim)
        return self.to_target(out[:, 1:])  # (B, M, D)
