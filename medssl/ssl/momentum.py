"""Momentum (EMA) targets: BYOL's target network, MoCo's key encoder, DINO's teacher.

``target <- m * target + (1 - m) * online`` for every parameter after each optimizer step, with ``m`` following
BYOL's cosine schedule from ``base`` to ``final`` over training. Buffers (BatchNorm running statistics) are *not*
touched: the target keeps the statistics of its own forward passes, as in the BYOL / MoCo v3 / DINO reference code
(copying the online network's would normalise the exported DINO teacher with another network's statistics).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["cosine_momentum", "ema_update", "frozen_copy"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (the EMA target starts equal to the online
    network, as in BYOL / MoCo / DINO)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """``final - (final - base) * (cos(pi * step / total) + 1) / 2``: ``base`` at step 0, ``final`` at the end."""
    if not 0.0 <= base <= 1.0 or not 0.0 <= final <= 1.0:
        raise ValueError(f"momentum values must be in [0, 1], got base={base}, final={final}")
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In-place ``target = momentum * target + (1 - momentum) * online`` for the parameters (buffers untouched)."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameter lists")
    for t, o in zip(t_params, o_params):
        t.lerp_(o.detach(), 1.0 - momentum)
