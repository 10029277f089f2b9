"""Fine-tuning optimiser: AdamW groups by layer-wise LR decay and weight decay, with warmup + cosine per step.

Shared by :class:`~medssl.finetune.classification.ClassificationFinetuner` and
:class:`~medssl.finetune.segmentation.SegmentationFinetuner`; each passes its own trainable parameters and its own
``layer_id`` (which transformer block a parameter belongs to: 0 for the embeddings, ``i + 1`` for block ``i``,
``depth + 1`` for everything after the encoder). With ``layer_decay`` < 1 (BEiT / MAE fine-tuning) a parameter of
layer ``l`` trains at ``lr * layer_decay ** (depth + 1 - l)``. Biases, norm weights and position tables get no
weight decay (:data:`medssl.training.optim.NO_DECAY_NAMES`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from medssl.training.optim import NO_DECAY_NAMES, OptimConfig, warmup_cosine

__all__ = ["adamw_warmup_cosine", "layer_decay_groups"]


def layer_decay_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], *, lr: float, weight_decay: float,
                       layer_decay: float, depth: int, layer_id: Callable[[str, int], int],
                       lr_scale: Callable[[str], float] | None = None) -> list[dict[str, Any]]:
    """One AdamW group per (LR scale, decayed or not); each group records its ``lr_scale``.

    ``lr_scale(name)``: a further factor per parameter (e.g. a smaller LR for a pretrained encoder than for a new
    head), multiplied into the layer-decay scale.
    """
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, p in named_params:
        scale = layer_decay ** (depth + 1 - layer_id(name, depth)) if layer_decay != 1.0 else 1.0
        scale *= lr_scale(name) if lr_scale is not None else 1.0
        decay = not (p.ndim <= 1 or any(k in name for k in NO_DECAY_NAMES))
        group = groups.setdefault((scale, decay), {"params": [], "lr": lr * scale, "lr_scale": scale,
                                                   "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(p)
    return list(groups.values())


def adamw_warmup_cosine(groups: list[dict[str, Any]], optim: OptimConfig, total_steps: float) -> dict[str, Any]:
    """``configure_optimizers`` output: AdamW over ``groups`` and a per-step warmup + cosine schedule."""
    if not math.isfinite(total_steps):
        raise ValueError("the LR schedule needs a finite number of steps: set max_epochs")
    opt = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(total_steps), optim.warmup, optim.min_lr_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
