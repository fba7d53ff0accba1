"""Conditional flow matching in latent space: a velocity field, minibatch OT pairing, the loss and an ODE sampler."""

from __future__ import annotations

import math

import ot
import torch
from torch import nn


class VelocityField(nn.Module):
    r"""Velocity :math:`v(x_t, t \mid c) = s + f(x_t, t, c)` of a conditional rectified flow in latent space.

    ``s`` is the predicted mean shift of the population (the first ``n_latent`` entries of the condition) and
    ``f`` a small MLP whose last layer starts at zero, so an untrained field moves every cell by the predicted
    shift and training learns only how cells depart from that translation.

    Parameters
    ----------
    n_latent
        Width of the latent.
    n_condition
        Width of the condition; its first ``n_latent`` entries are the shift ``s``.
    n_hidden, n_layers
        Width and depth of the MLP.
    n_frequencies
        Sine/cosine frequencies of the time embedding.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import VelocityField
    >>> field = VelocityField(n_latent=4, n_condition=8)
    >>> x, c = torch.randn(5, 4), torch.randn(5, 8)
    >>> v = field(x, torch.rand(5), c)
    >>> v.shape, torch.allclose(v, c[:, :4])  # untrained: the shift
    (torch.Size([5, 4]), True)
    """

    def __init__(self, n_latent: int, n_condition: int, n_hidden: int = 128, n_layers: int = 2, n_frequencies: int = 8):
        super().__init__()
        if n_condition < n_latent:
            raise ValueError(f"n_condition={n_condition} must hold the shift (n_latent={n_latent}) first.")
        self.n_latent = n_latent
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(n_frequencies, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_latent + n_condition + 2 * n_frequencies
        for _ in range(n_layers):
            layers += [nn.Linear(width, n_hidden), nn.SiLU()]
            width = n_hidden
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, n_latent)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Velocity ``(B, n_latent)`` at points ``x`` ``(B, n_latent)``, times ``t`` ``(B,)``, conditions ``(B, C)``."""
        angles = t.view(-1, 1) * self.frequencies  # (B, F)
        h = torch.cat([x, condition, angles.sin(), angles.cos()], dim=1)  # (B, n_latent + C + 2F)
        return condition[:, : self.n_latent] + self.out(self.mlp(h))


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index into ``x1`` of each row of ``x0`` under the exact OT plan of squared distances (POT's ``ot.emd``).

    Minibatch optimal-transport pairing of flow matching :cite:p:`tong2024otcfm`: each source row is paired
    with a target row drawn from the plan's row (for equal sizes the plan is a permutation).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import ot_pairing
    >>> ot_pairing(torch.tensor([[0.0], [5.0]]), torch.tensor([[5.1], [0.1]])).tolist()
    [1, 0]
    """
    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()  # (n0, n1)
    plan = ot.emd(ot.unif(len(x0)), ot.unif(len(x1)), cost)  # (n0, n1), rows sum to 1 / n0
    probs = torch.as_tensor(plan * len(x0)).clamp(min=0)
    probs = probs + (probs.sum(1, keepdim=True) == 0)  # an empty row (numerical): uniform
    return torch.multinomial(probs, 1, generator=generator).view(-1).to(x0.device)


def flow_matching_loss(
    field: VelocityField,
    x0: torch.Tensor,
    x1: torch.Tensor,
    condition: torch.Tensor,
    sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Flow-matching loss on straight paths between paired points :cite:p:`lipman2023flow,liu2023rectified`.

    With :math:`t \sim U(0, 1)` and :math:`x_t = (1 - t) x_0 + t x_1 + \sigma \epsilon`, the loss is
    :math:`\lVert v(x_t, t \mid c) - (x_1 - x_0) \rVert^2` averaged over rows (pair ``x0`` and ``x1`` first,
    e.g. with :func:`ot_pairing`).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import VelocityField, flow_matching_loss
    >>> field = VelocityField(2, 2)
    >>> x0 = torch.zeros(4, 2)
    >>> flow_matching_loss(field, x0, x0 + 1.0, torch.ones(4, 2)).item()  # untrained field moves by the shift
    0.0
    """
    t = torch.rand(len(x0), 1, generator=generator).to(x0)  # (B, 1)
    noise = torch.randn(x0.shape, generator=generator).to(x0) if sigma > 0 else 0.0
    xt = (1 - t) * x0 + t * x1 + sigma * noise  # (B, d)
    return (field(xt, t.view(-1), condition) - (x1 - x0)).pow(2).sum(1).mean()


@torch.no_grad()
def integrate(field: VelocityField, x0: torch.Tensor, condition: torch.Tensor, n_steps: int = 10) -> torch.Tensor:
    """Solve the flow's ODE from ``x0`` at ``t = 0`` to ``t = 1`` with ``n_steps`` midpoint steps.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import VelocityField, integrate
    >>> field = VelocityField(2, 2)
    >>> integrate(field, torch.zeros(3, 2), torch.ones(3, 2)).round(decimals=4).tolist()[0]  # untrained: x0 + shift
    [1.0, 1.0]
    """
    if n_steps < 1:
        raise ValueError(f"`n_steps` must be a positive integer, got {n_steps!r}.")
    x, h = x0, 1.0 / n_steps
    for k in range(n_steps):
        t = torch.full((len(x),), k * h, device=x.device, dtype=x.dtype)
        mid = x + 0.5 * h * field(x, t, condition)
        x = x + h * field(mid, t + 0.5 * h, condition)
    return x
