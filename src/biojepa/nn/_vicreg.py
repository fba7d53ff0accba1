"""VICReg variance / covariance terms and the effective rank of a batch of latents."""

from __future__ import annotations

import torch


def vicreg_variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension standard deviation: ``mean_j relu(gamma - sqrt(var(z_j) + eps))``.

    Zero when every latent dimension has standard deviation at least ``gamma`` over the batch; grows as
    dimensions collapse :cite:p:`bardes2022vicreg`.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import vicreg_variance
    >>> vicreg_variance(torch.zeros(8, 4)).item() > 0.9  # collapsed latent: maximal penalty
    True
    """
    std = torch.sqrt(z.var(dim=0) + eps)  # (n_latent,)
    return torch.relu(gamma - std).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by the latent width ``d``.

    Zero for decorrelated dimensions :cite:p:`bardes2022vicreg`.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import vicreg_covariance
    >>> z = torch.randn(16, 1).repeat(1, 2)  # two identical dimensions
    >>> vicreg_covariance(z).item() > 0
    True
    """
    n, d = z.shape
    zc = z - z.mean(0)
    cov = (zc.T @ zc) / max(n - 1, 1)  # (d, d)
    off = cov - torch.diag(torch.diag(cov))
    return off.pow(2).sum() / d


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Effective rank ``exp(H(p))`` with ``p`` the normalized singular values of centered ``z``.

    Ranges from 1 (all variance on one direction) to ``min(n, d)`` (isotropic) :cite:p:`roy2007effective`.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import effective_rank
    >>> round(effective_rank(torch.randn(1000, 1) @ torch.ones(1, 8)).item(), 2)  # rank-one latent
    1.0
    """
    s = torch.linalg.svdvals((z - z.mean(0)).float())
    p = s / s.sum().clamp(min=eps)
    entropy = -(p * torch.log(p.clamp(min=eps))).sum()
    return torch.exp(entropy)
