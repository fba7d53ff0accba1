"""Module-mask sampler: which gene modules the context encoder sees and which the predictor must predict."""

from __future__ import annotations

import math

import torch


class ModuleMaskSampler:
    """Sample disjoint (context, target) sets of gene modules per cell.

    Every cell of a batch hides the same number of modules (so the batch stays rectangular), chosen
    anew for each batch uniformly from ``mask_ratio``; which modules are hidden differs per cell.
    Whole modules are dropped, never single genes.

    Parameters
    ----------
    n_modules
        Number of gene modules ``T``.
    mask_ratio
        ``(low, high)`` fraction of modules to hide; at least one module stays visible and one hidden.

    Examples
    --------
    >>> import torch
    >>> from biojepa.masks import ModuleMaskSampler
    >>> sampler = ModuleMaskSampler(16, (0.25, 0.5))
    >>> masks_enc, masks_pred = sampler(4, generator=torch.Generator().manual_seed(0))
    >>> masks_enc.shape[1] + masks_pred.shape[1]
    16
    """

    def __init__(self, n_modules: int, mask_ratio: tuple[float, float] = (0.25, 0.5)):
        low, high = mask_ratio
        if n_modules < 2:
            raise ValueError(f"Masked-module prediction needs at least 2 gene modules, got n_modules={n_modules}.")
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"`mask_ratio` must satisfy 0 < low <= high < 1, got {mask_ratio}.")
        self.n_modules = n_modules
        self.min_masked = min(max(1, math.ceil(low * n_modules)), n_modules - 1)
        self.max_masked = max(self.min_masked, min(n_modules - 1, math.floor(high * n_modules)))

    def __call__(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``masks_enc`` ``(B, T - M)`` and ``masks_pred`` ``(B, M)``: sorted, disjoint module indices."""
        n_masked = int(torch.randint(self.min_masked, self.max_masked + 1, (1,), generator=generator))
        order = torch.rand(batch_size, self.n_modules, generator=generator).argsort(dim=1)  # (B, T)
        masks_pred = order[:, :n_masked].sort(dim=1).values
        masks_enc = order[:, n_masked:].sort(dim=1).values
        return masks_enc.to(device), masks_pred.to(device)
