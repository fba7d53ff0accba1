"""Exponential moving average of the context encoder into the target encoder."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """Return a frozen deep copy of ``online`` to serve as the EMA target (no gradient, still saved).

    Examples
    --------
    >>> from torch import nn
    >>> from biojepa.nn import make_target
    >>> target = make_target(nn.Linear(2, 2))
    >>> any(p.requires_grad for p in target.parameters())
    False
    """
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``target <- momentum * target + (1 - momentum) * online`` for every parameter.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from biojepa.nn import ema_update, make_target
    >>> online = nn.Linear(1, 1, bias=False)
    >>> target = make_target(online)
    >>> with torch.no_grad():
    ...     _ = target.weight.fill_(0.0), online.weight.fill_(1.0)
    >>> ema_update(target, online, momentum=0.9)
    >>> round(target.weight.item(), 3)
    0.1
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}.")
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)


def momentum_schedule(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear momentum ramp from ``start`` to ``end`` over ``total_steps`` (I-JEPA's schedule).

    Examples
    --------
    >>> from biojepa.nn import momentum_schedule
    >>> momentum_schedule(0, 100), momentum_schedule(50, 100), momentum_schedule(100, 100)
    (0.996, 0.998, 1.0)
    """
    if total_steps <= 0:
        return end
    frac = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * frac
