"""Position embeddings on a different patch grid: N-D interpolation of a ViT's ``(1, L, D)`` table.

A ViT learns (or fixes) one embedding per patch of its training grid. Two situations need the table on another
grid: multi-crop self-distillation (DINO's small local crops go through the same encoder as the global crops) and
transfer to a network whose input size differs from the pretraining size. Both interpolate the table as a
``D``-channel image over the grid (bicubic in 2D, trilinear in 3D; ``align_corners=False``), as DINO and the
MAE fine-tuning code do.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["interpolate_pos_embed"]


def interpolate_pos_embed(pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """Resample ``pos_embed`` ``(1, prod(old_grid), D)`` (row-major grid order) to ``(1, prod(new_grid), D)``.

    Returns ``pos_embed`` itself when the grids are equal. Gradients flow through the interpolation.
    """
    old, new = tuple(int(g) for g in old_grid), tuple(int(g) for g in new_grid)
    if len(old) != len(new) or len(old) not in (2, 3):
        raise ValueError(f"grids must be both 2D or both 3D, got {list(old)} and {list(new)}")
    if pos_embed.ndim != 3 or pos_embed.shape[1] != int(torch.tensor(old).prod()):
        raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)} does not hold one entry per cell of the "
                         f"grid {list(old)}")
    if old == new:
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, *old, dim).movedim(-1, 1)  # (1, D, *old)
    mode = "bicubic" if len(old) == 2 else "trilinear"
    out = F.interpolate(grid.float(), size=new, mode=mode, align_corners=False).to(pos_embed.dtype)
    return out.movedim(1, -1).reshape(1, -1, dim)
