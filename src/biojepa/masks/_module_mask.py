"""Module-mask sampler: which gene modules the context encoder sees and which the predictor must predict."""

from __future__ import annotations

import math

import torch


class ModuleMaskSampler:
    """Sample disjoint (context, target) sets of gene modules per cell.

    Every cell of a batch hides the same number of modules (so the batch stays rectangular), chosen
    anew for each batch uniformly from ``mask_ratio``; which modules are hidden differs per cell.
    Whole modules are dropped, never single genes.

    With ``n_blocks`` the hidden modules are ``n_blocks`` runs of consecutive module indices (multi-block
    masking, as I-JEPA hides blocks of neighbouring patches rather than scattered ones). The model's
    co-expression modules are numbered in co-expression order (see
    :func:`~biojepa.data.coexpression_modules`), so a run is a group of co-expressed modules: hiding it
    removes the redundant neighbours a scattered mask leaves visible. The runs do not overlap and their
    sizes differ by at most one; where they fall differs per cell.

    Parameters
    ----------
    n_modules
        Number of gene modules ``T``.
    mask_ratio
        ``(low, high)`` fraction of modules to hide; at least one module stays visible and one hidden.
    n_blocks
        ``None`` (default): hidden modules scattered uniformly at random. An integer ``k >= 1``: hidden
        modules form ``k`` runs of consecutive modules (fewer when fewer modules are hidden).

    Examples
    --------
    >>> import torch
    >>> from biojepa.masks import ModuleMaskSampler
    >>> sampler = ModuleMaskSampler(16, (0.25, 0.5))
    >>> masks_enc, masks_pred = sampler(4, generator=torch.Generator().manual_seed(0))
    >>> masks_enc.shape[1] + masks_pred.shape[1]
    16
    >>> blocks = ModuleMaskSampler(16, (0.5, 0.5), n_blocks=1)  # one run of 8 consecutive modules
    >>> _, hidden = blocks(2, generator=torch.Generator().manual_seed(0))
    >>> [bool((row.diff() == 1).all()) for row in hidden]
    [True, True]
    """

    def __init__(self, n_modules: int, mask_ratio: tuple[float, float] = (0.25, 0.5), n_blocks: int | None = None):
        low, high = mask_ratio
        if n_modules < 2:
            raise ValueError(f"Masked-module prediction needs at least 2 gene modules, got n_modules={n_modules}.")
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"`mask_ratio` must satisfy 0 < low <= high < 1, got {mask_ratio}.")
        if n_blocks is not None and (isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1):
            raise ValueError(
                f"`n_blocks` (the model's `mask_blocks`) must be None or a positive integer, got {n_blocks!r}."
            )
        self.n_blocks = n_blocks
        self.n_modules = n_modules
        self.min_masked = min(max(1, math.ceil(low * n_modules)), n_modules - 1)
        self.max_masked = max(self.min_masked, min(n_modules - 1, math.floor(high * n_modules)))

    def __call__(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``masks_enc`` ``(B, T - M)`` and ``masks_pred`` ``(B, M)``: sorted, disjoint module indices."""
        n_masked = int(torch.randint(self.min_masked, self.max_masked + 1, (1,), generator=generator))
        if self.n_blocks is None:
            order = torch.rand(batch_size, self.n_modules, generator=generator).argsort(dim=1)  # (B, T)
        else:
            order = self._block_order(batch_size, n_masked, generator)
        masks_pred = order[:, :n_masked].sort(dim=1).values
        masks_enc = order[:, n_masked:].sort(dim=1).values
        return masks_enc.to(device), masks_pred.to(device)

    def _block_order(self, batch_size: int, n_masked: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(B, T)`` module order whose first ``n_masked`` entries are ``k`` non-overlapping runs.

        Stars and bars: the ``T - M`` visible modules (stars) and the ``k`` runs (bars) are laid out in a
        random order per cell; a run placed after ``s`` stars and runs of total size ``c`` starts at ``s + c``.
        """
        k = min(self.n_blocks, n_masked)
        sizes = torch.full((k,), n_masked // k, dtype=torch.long)
        sizes[: n_masked % k] += 1
        n_visible = self.n_modules - n_masked
        slots = torch.rand(batch_size, n_visible + k, generator=generator).argsort(dim=1)[:, :k].sort(dim=1).values
        stars_before = slots - torch.arange(k)  # (B, k): visible modules before each run
        starts = stars_before + torch.cumsum(sizes, 0) - sizes  # (B, k)
        offsets = torch.cat([torch.arange(int(n)) for n in sizes])  # (M,)
        run = torch.repeat_interleave(torch.arange(k), sizes)  # (M,): which run each hidden slot belongs to
        hidden = starts[:, run] + offsets  # (B, M)
        is_hidden = torch.zeros(batch_size, self.n_modules, dtype=torch.bool).scatter_(1, hidden, True)
        return torch.cat([hidden, (~is_hidden).nonzero()[:, 1].view(batch_size, n_visible)], dim=1)
