"""Optimiser settings shared by every method: AdamW with decoupled weight decay and a warmup + cosine schedule.

:class:`OptimConfig` is a plain dataclass so YAML configs can set ``model.optim.lr`` etc.; the LightningModule
stores it as a dict in its hyper-parameters (checkpoints stay loadable with ``weights_only=True``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

#: Parameter names (substrings) excluded from weight decay besides biases and norm weights (all 1-D parameters).
NO_DECAY_NAMES = ("pos_embed", "position_embeddings", "mask_token", "cls_token")


@dataclass
class OptimConfig:
    """AdamW + linear warmup + cosine decay to ``min_lr_ratio * lr``.

    ``warmup`` is a fraction of all optimizer steps when < 1, else a number of steps. ``lr`` is the rate for the
    global batch you run; scale it yourself when you change the batch (MAE: ``1.5e-4 * batch / 256``).
    """

    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: float = 0.05
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup < 0:
            raise ValueError(f"invalid optimiser settings: {self}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and 1-D parameters / embeddings / tokens without decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or any(k in name for k in NO_DECAY_NAMES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup: float, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear from ~0 to 1 over the warmup steps, then cosine to ``min_ratio`` at ``total_steps``."""
    total = max(1, int(total_steps))
    n_warm = min(total - 1, int(round(warmup * total)) if warmup < 1 else int(warmup))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / (n_warm + 1)
        progress = min(1.0, (step - n_warm) / max(1, total - n_warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, cfg: OptimConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, cfg.warmup, cfg.min_lr_ratio))

