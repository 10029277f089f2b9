"""Optimiser settings shared by every method: AdamW (default), LARS or SGD, and a warmup + cosine schedule.

AdamW with decoupled weight decay suits masked image modelling (MAE, SimMIM); LARS
(:class:`medssl.training.lars.LARS`) is the large-batch optimiser of SimCLR / BYOL / Barlow Twins; SGD with
momentum is the plain baseline. All three use the same two parameter groups (:func:`param_groups`: biases, norm
weights and embeddings/tokens get no weight decay and, with LARS, no trust-ratio adaptation) and the same schedule.

:class:`OptimConfig` is a plain dataclass so YAML configs can set ``model.optim.lr`` etc.; the LightningModule
stores it as a dict in its hyper-parameters (checkpoints stay loadable with ``weights_only=True``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medssl.training.lars import LARS

#: Optimisers :func:`build_optimizer` can build (``OptimConfig.name``).
OPTIMIZERS = ("adamw", "lars", "sgd")
#: Parameter names (substrings) excluded from weight decay besides biases and norm weights (all 1-D parameters).
NO_DECAY_NAMES = ("pos_embed", "position_embeddings", "mask_token", "cls_token")


@dataclass
class OptimConfig:
    """Optimiser ``name`` + linear warmup + cosine decay to ``min_lr_ratio * lr``.

    ``warmup`` is a fraction of all optimizer steps when < 1, else a number of steps. ``lr`` is the rate for the
    global batch you run; scale it yourself when you change the batch (MAE with AdamW: ``1.5e-4 * batch / 256``;
    SimCLR with LARS: ``0.3 * batch / 256``; BYOL: ``0.2 * batch / 256``). ``betas`` apply to AdamW only,
    ``momentum`` to LARS and SGD, ``trust_coefficient`` to LARS only.
    """

    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: float = 0.05
    min_lr_ratio: float = 0.0
    name: str = "adamw"
    momentum: float = 0.9
    trust_coefficient: float = 0.001

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimiser name must be one of {OPTIMIZERS}, got {self.name!r}")
        if (self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup < 0
                or not 0 <= self.momentum < 1 or self.trust_coefficient <= 0):
            raise ValueError(f"invalid optimiser settings: {self}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and 1-D parameters / embeddings / tokens without decay."""
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
    """The optimiser ``cfg.name`` over :func:`param_groups` and its per-step warmup + cosine scheduler.

    With LARS the no-decay group (biases, norm weights, embeddings) is also excluded from the trust ratio
    (``lars_adaptation=False``): plain SGD with momentum, as in SimCLR / BYOL.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "lars":
        groups[0]["lars_adaptation"], groups[1]["lars_adaptation"] = True, False
        opt: torch.optim.Optimizer = LARS(groups, lr=cfg.lr, momentum=cfg.momentum,
                                          trust_coefficient=cfg.trust_coefficient)
    elif cfg.name == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, cfg.warmup, cfg.min_lr_ratio))

