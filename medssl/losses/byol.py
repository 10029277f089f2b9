"""Non-contrastive prediction losses of BYOL and SimSiam, pure torch.

Both compare an online prediction ``p`` with a target projection ``z`` of the *other* view by cosine similarity,
with a stop-gradient on the target:

* :func:`normalized_mse` -- BYOL: ``|| p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``, mean over the batch. ``z`` comes
  from the momentum (target) network; it is detached here anyway.
* :func:`negative_cosine` -- SimSiam: ``-cos(p, stopgrad(z))``, mean over the batch; here ``z`` comes from the same
  network, so the stop-gradient inside is what prevents collapse.

Each function scores one view order. The method symmetrises: BYOL sums ``loss(p1, z2) + loss(p2, z1)``, SimSiam
averages ``(loss(p1, z2) + loss(p2, z1)) / 2``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["negative_cosine", "normalized_mse"]


def _cosine_to_target(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Row-wise ``cos(p, stopgrad(z))`` of two (N, D) tensors, (N,)."""
    if p.ndim != 2 or p.shape != z.shape or p.shape[0] == 0:
        raise ValueError(f"p and z must be non-empty (N, D) of equal shape; got {tuple(p.shape)}, {tuple(z.shape)}")
    return (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1)


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL loss ``mean_i (2 - 2 cos(p_i, z_i))``, no gradient into ``z``.

    Args:
        p: online predictions (N, D).
        z: target projections of the other view (N, D).
    """
    return (2 - 2 * _cosine_to_target(p, z)).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam loss ``-mean_i cos(p_i, stopgrad(z_i))``.

    Args:
        p: predictor outputs (N, D).
        z: projections of the other view (N, D); detached here.
    """
    return -_cosine_to_target(p, z).mean()
