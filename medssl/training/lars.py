"""LARS: SGD with momentum and a layer-wise trust ratio (You et al., 2017), the optimiser of SimCLR, BYOL, Barlow
Twins and VICReg for large-batch contrastive / distillation pretraining.

One step, per parameter ``p`` with gradient ``grad`` in a group with ``lr``, ``momentum`` ``m``,
``weight_decay`` ``wd``, ``trust_coefficient`` ``eta`` and ``eps``::

    d = grad + wd * p
    if group["lars_adaptation"]:                      # default True; False for biases and norm weights
        trust = eta * ||p|| / (||d|| + eps)   if ||p|| > 0 and ||d|| > 0   else 1
        d = trust * d
    v = m * v + d                                     # momentum buffer, starts at 0
    p = p - lr * v

This is the PyTorch formulation of the Barlow Twins / VICReg reference code (learning rate applied outside the
momentum buffer). The TensorFlow / JAX code of SimCLR and BYOL keeps the learning rate inside the buffer
(``v = m * v + lr * trust * d; p = p - v``): identical while the learning rate is constant, and only marginally
different under a warmup/cosine schedule. Groups with ``lars_adaptation=False`` get plain SGD with momentum (and
their own weight decay, usually 0), as in those codebases where biases and normalisation weights are excluded.
No ``.item()`` calls: the trust ratio stays on the device (no host synchronisation per parameter).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (see module docstring for the exact update).

    Args:
        params: parameters or parameter groups; a group may set ``lars_adaptation`` (default True) and any of
            the other arguments.
        lr: learning rate (SimCLR: ``0.3 * batch / 256``; BYOL: ``0.2 * batch / 256``).
        momentum: momentum of the buffer ``v`` (0 disables it).
        weight_decay: added to the gradient as ``wd * p`` before the trust ratio.
        trust_coefficient: ``eta`` of the trust ratio.
        eps: added to ``||d||`` in the trust ratio's denominator.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0 or eps < 0:
            raise ValueError(f"invalid LARS settings: lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coefficient={trust_coefficient}, eps={eps}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "eps": eps, "lars_adaptation": True}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["lars_adaptation"]:
                    p_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    trust = torch.where((p_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * p_norm / (d_norm + group["eps"]),
                                        torch.ones_like(p_norm))
                    d.mul_(trust)
                if group["momentum"]:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    d = state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(d, alpha=-group["lr"])
        return loss
