"""EMA targets and the momentum schedule against the formulas."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medssl.ssl.momentum import cosine_momentum, ema_update, frozen_copy


def test_cosine_schedule_end_points_and_shape() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99, 0.999) == pytest.approx(0.999 - 0.009 * (math.cos(math.pi / 2) + 1) / 2)
    assert cosine_momentum(500, 100, 0.9) == pytest.approx(1.0)  # clamped past the end
    values = [cosine_momentum(s, 10, 0.9) for s in range(11)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        cosine_momentum(0, 10, 1.5)


def test_ema_update_matches_formula_and_keeps_target_buffers() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))  # moves the online BN running statistics
    target_stats = [b.clone() for b in target.buffers()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    for t, b in zip(target.buffers(), target_stats):
        assert torch.equal(t, b)  # the target keeps the statistics of its own forward passes
    ema_update(target, online, 0.0)
    for t, o in zip(target.parameters(), online.parameters()):
        assert torch.allclose(t, o)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)), 0.5)
