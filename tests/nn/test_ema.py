import pytest
import torch
from torch import nn

from biojepa.nn import ema_update, make_target, momentum_schedule


def test_target_is_frozen_copy():
    online = nn.Linear(4, 3)
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert torch.equal(online.weight, target.weight)
    target(torch.randn(2, 4)).sum()  # no grad graph for the target
    assert target.weight.grad is None


def test_ema_moves_weights_towards_online():
    online = nn.Linear(4, 3)
    target = make_target(online)
    with torch.no_grad():
        online.weight.add_(1.0)
    before = (target.weight - online.weight).abs().sum().item()
    ema_update(target, online, momentum=0.9)
    after = (target.weight - online.weight).abs().sum().item()
    assert after == pytest.approx(0.9 * before, rel=1e-5)


def test_momentum_one_freezes_and_zero_copies():
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    w = target.weight.clone()
    ema_update(target, online, 1.0)
    assert torch.equal(target.weight, w)
    ema_update(target, online, 0.0)
    assert torch.equal(target.weight, online.weight)


def test_bad_momentum_raises():
    with pytest.raises(ValueError, match="momentum"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2), 1.5)


def test_schedule_ramps_linearly():
    assert momentum_schedule(0, 100) == pytest.approx(0.996)
    assert momentum_schedule(50, 100) == pytest.approx(0.998)
    assert momentum_schedule(100, 100) == pytest.approx(1.0)
    assert momentum_schedule(500, 100) == pytest.approx(1.0)
