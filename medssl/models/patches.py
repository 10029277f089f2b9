"""Cut images into patch tokens and back, in the token order of a conv patch embedding.

A patch embedding ``nn.ConvNd(C, D, kernel_size=p, stride=p)`` followed by ``.flatten(2).transpose(1, 2)`` orders
its ``L`` tokens row-major over the patch grid ``(g1, g2[, g3])``. :func:`patchify` uses the same order, so token
``i`` of the encoder and row ``i`` of the reconstruction target refer to the same patch. Within a token the values
are ordered ``(p1, p2[, p3], C)``: patch voxels row-major, channel last (the MAE convention).

The number of spatial dimensions is inferred from the input (``x.ndim - 2``), so 2D and 3D share one code path. The
grid arithmetic (:func:`~medssl.transforms.patch_grid.grid_shape`) lives with the other patch grids in
:mod:`medssl.transforms.patch_grid`, which the masks use too: transforms know nothing of models.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medssl.transforms.patch_grid import grid_shape

__all__ = ["patchify", "unpatchify"]


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a positive int or {n} positive ints, got {value}")
    return out


def patchify(x: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """(B, C, *S) image -> (B, L, prod(patch_size) * C) tokens (see module docstring for the order)."""
    if x.ndim < 3:
        raise ValueError(f"x must be (B, C, *spatial), got shape {tuple(x.shape)}")
    batch, channels, *spatial = x.shape
    nd = len(spatial)
    grid = grid_shape(spatial, patch_size)
    patch = _as_tuple(patch_size, nd, "patch_size")
    # (B, C, g1, p1, g2, p2, ...) -> (B, g1, g2, ..., p1, p2, ..., C)
    x = x.reshape(batch, channels, *[v for gp in zip(grid, patch) for v in gp])
    order = [0, *range(2, 2 + 2 * nd, 2), *range(3, 3 + 2 * nd, 2), 1]
    return x.permute(order).reshape(batch, math.prod(grid), math.prod(patch) * channels)


def unpatchify(
    tokens: torch.Tensor, patch_size: int | Sequence[int], grid_shape: Sequence[int], channels: int
) -> torch.Tensor:
    """(B, L, prod(patch_size) * C) tokens -> (B, C, *S) image; the exact inverse of :func:`patchify`."""
    grid = _as_tuple(grid_shape, len(grid_shape), "grid_shape")
    nd = len(grid)
    patch = _as_tuple(patch_size, nd, "patch_size")
    expected = (math.prod(grid), math.prod(patch) * channels)
    if tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
        raise ValueError(
            f"tokens must be (B, {expected[0]}, {expected[1]}) for grid {grid}, patch {patch} and {channels} "
            f"channels, got {tuple(tokens.shape)}"
        )
    batch = tokens.shape[0]
    x = tokens.reshape(batch, *grid, *patch, channels)
    # (B, g1, ..., p1, ..., C) -> (B, C, g1, p1, g2, p2, ...)
    order = [0, 1 + 2 * nd, *[v for d in range(nd) for v in (1 + d, 1 + nd + d)]]
    return x.permute(order).reshape(batch, channels, *[g * p for g, p in zip(grid, patch)])
