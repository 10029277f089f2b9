"""Patch masking for masked image modelling (MAE, SimMIM), as pure, seedable functions.

A mask over ``L`` patches is built the MAE way: draw one noise value per patch, ``argsort`` it, keep the ``K``
patches with the smallest noise visible and hide the rest. Everything is described by a :class:`PatchMask`:

* ``ids_keep`` (B, K): indices of the visible patches, in shuffle order (ascending noise, not ascending index);
* ``ids_restore`` (B, L): inverse permutation of the shuffle, so that
  ``torch.gather(cat([visible, masked], 1), 1, ids_restore)`` puts tokens back in patch order;
* ``mask`` (B, L) bool: True where the patch is hidden.

Every sample hides exactly the same number of patches (``num_masked``), so visible tokens stack into a dense
``(B, K, D)`` tensor. Randomness comes only from an optional ``torch.Generator``: the same seed gives the same mask.

Patch grids are row-major, like a conv patch embedding flattened with ``.flatten(2)``
(:func:`medssl.transforms.patch_grid.grid_shape`); grids of any dimensionality work, so 2D and 3D share one code path.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medssl.transforms.patch_grid import grid_shape as patch_grid

__all__ = [
    "PatchMask",
    "num_masked",
    "mask_from_noise",
    "random_masking",
    "block_masking",
    "gather_visible",
    "restore_order",
    "patch_mask_to_voxels",
    "random_voxel_mask",
]


@dataclass(frozen=True)
class PatchMask:
    """Which patches of each sample are visible, and how to undo the shuffle (see module docstring)."""

    ids_keep: torch.Tensor  # (B, K) long
    ids_restore: torch.Tensor  # (B, L) long
    mask: torch.Tensor  # (B, L) bool, True = masked (hidden)

    def __post_init__(self) -> None:
        if self.ids_keep.ndim != 2 or self.ids_restore.ndim != 2 or self.mask.shape != self.ids_restore.shape:
            raise ValueError(
                f"PatchMask expects ids_keep (B, K), ids_restore (B, L) and mask (B, L); got "
                f"{tuple(self.ids_keep.shape)}, {tuple(self.ids_restore.shape)}, {tuple(self.mask.shape)}"
            )
        if self.ids_keep.shape[0] != self.ids_restore.shape[0]:
            raise ValueError("PatchMask: ids_keep and ids_restore have different batch sizes")

    @property
    def batch_size(self) -> int:
        return self.ids_restore.shape[0]

    @property
    def num_patches(self) -> int:
        """``L``: patches per sample."""
        return self.ids_restore.shape[1]

    @property
    def num_visible(self) -> int:
        """``K``: visible patches per sample (the same for every sample)."""
        return self.ids_keep.shape[1]

    @property
    def ids_masked(self) -> torch.Tensor:
        """(B, L-K) indices of the hidden patches, in the order :func:`restore_order` expects its ``fill``."""
        return torch.argsort(self.ids_restore, dim=1)[:, self.num_visible:]

    def to(self, device: torch.device | str) -> PatchMask:
        return PatchMask(self.ids_keep.to(device), self.ids_restore.to(device), self.mask.to(device))


def num_masked(num_patches: int, ratio: float) -> int:
    """Patches to hide: ``round(num_patches * ratio)`` clipped to ``[1, num_patches - 1]``."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    if num_patches < 2:
        raise ValueError(f"masking needs at least 2 patches, got {num_patches}")
    return min(max(round(num_patches * ratio), 1), num_patches - 1)


def mask_from_noise(noise: torch.Tensor, ratio: float) -> PatchMask:
    """Hide the ``num_masked(L, ratio)`` patches with the largest noise in each row of ``noise`` (B, L)."""
    if noise.ndim != 2:
        raise ValueError(f"noise must be (B, L), got shape {tuple(noise.shape)}")
    length = noise.shape[1]
    keep = length - num_masked(length, ratio)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = ids_restore >= keep  # position in shuffle order >= K  <=>  hidden
    return PatchMask(ids_keep=ids_shuffle[:, :keep], ids_restore=ids_restore, mask=mask)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Uniform noise drawn on the generator's device (so a CPU seed gives the same mask anywhere), then moved."""
    draw_on = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_on).to(device)


def random_masking(
    batch_size: int,
    num_patches: int,
    ratio: float = 0.75,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PatchMask:
    """MAE random masking: hide a uniformly random subset of ``num_masked(num_patches, ratio)`` patches per sample."""
    num_masked(num_patches, ratio)  # validate before drawing
    return mask_from_noise(_uniform((batch_size, num_patches), generator, device), ratio)


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a positive int or {n} positive ints, got {value}")
    return out


def block_masking(
    batch_size: int,
    grid_shape: Sequence[int],
    ratio: float = 0.75,
    block_size: int | Sequence[int] = 2,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PatchMask:
    """Hide contiguous blocks of patches on an N-D patch grid (row-major, as ``.flatten(2)`` of a conv embedding).

    The grid is tiled into blocks of ``block_size`` patches (edge blocks are smaller when the grid is not divisible).
    Each block gets a random rank; each patch gets noise ``rank(block) + u`` with ``u`` uniform in ``[0, 1)``. Ranks
    are integers, so every patch of a block sorts before every patch of the next block whatever the draw: whole
    blocks are hidden in random order and at most one block is split to hit the exact ``num_masked`` count.
    """
    grid = _as_tuple(grid_shape, len(grid_shape), "grid_shape")
    if not grid:
        raise ValueError("grid_shape must have at least one dimension")
    block = _as_tuple(block_size, len(grid), "block_size")
    length = math.prod(grid)
    num_masked(length, ratio)  # validate before drawing
    blocks_per_dim = [-(-g // b) for g, b in zip(grid, block)]
    # block id of every patch, row-major over the block grid
    coords = torch.meshgrid(*[torch.arange(g) // b for g, b in zip(grid, block)], indexing="ij")
    block_id = torch.zeros(grid, dtype=torch.long)
    for c, nb in zip(coords, blocks_per_dim):
        block_id = block_id * nb + c
    block_id = block_id.flatten()
    block_noise = _uniform((batch_size, math.prod(blocks_per_dim)), generator, None)
    block_rank = torch.argsort(torch.argsort(block_noise, dim=1), dim=1).to(block_noise.dtype)
    patch_noise = _uniform((batch_size, length), generator, None)
    noise = (block_rank[:, block_id.to(block_rank.device)] + patch_noise).to(device)
    return mask_from_noise(noise, ratio)


def gather_visible(x: torch.Tensor, mask: PatchMask) -> torch.Tensor:
    """Visible tokens of ``x`` (B, L, D) as (B, K, D), in ``mask.ids_keep`` order."""
    if x.ndim != 3 or x.shape[:2] != mask.mask.shape:
        raise ValueError(f"x must be (B, L, D) with (B, L) = {tuple(mask.mask.shape)}, got {tuple(x.shape)}")
    index = mask.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, index)


def restore_order(visible: torch.Tensor, fill: torch.Tensor, mask: PatchMask) -> torch.Tensor:
    """Put ``visible`` (B, K, D) and ``fill`` back into patch order, giving (B, L, D).

    ``fill`` is either the hidden tokens (B, L-K, D), in ``mask.ids_masked`` order, or anything that broadcasts to
    that shape, e.g. a learned mask token (1, 1, D).
    """
    batch, keep = mask.batch_size, mask.num_visible
    if visible.ndim != 3 or visible.shape[:2] != (batch, keep):
        raise ValueError(f"visible must be (B, K, D) with (B, K) = {(batch, keep)}, got {tuple(visible.shape)}")
    dim = visible.shape[-1]
    shape = (batch, mask.num_patches - keep, dim)
    try:
        fill = fill.expand(shape)
    except RuntimeError as exc:
        raise ValueError(f"fill of shape {tuple(fill.shape)} does not broadcast to {shape}") from exc
    tokens = torch.cat([visible, fill.to(visible.dtype)], dim=1)
    return torch.gather(tokens, 1, mask.ids_restore.unsqueeze(-1).expand(-1, -1, dim))


def patch_mask_to_voxels(
    mask: torch.Tensor, grid_shape: Sequence[int], patch_size: int | Sequence[int]
) -> torch.Tensor:
    """Voxel-level mask (B, 1, *spatial) from a patch mask (B, L): every voxel takes its patch's value."""
    grid = _as_tuple(grid_shape, len(grid_shape), "grid_shape")
    patch = _as_tuple(patch_size, len(grid), "patch_size")
    if mask.ndim != 2 or mask.shape[1] != math.prod(grid):
        raise ValueError(f"mask must be (B, {math.prod(grid)}) for grid {grid}, got {tuple(mask.shape)}")
    out = mask.to(torch.bool).reshape(mask.shape[0], 1, *grid)
    for d, p in enumerate(patch):
        out = out.repeat_interleave(p, dim=2 + d)
    return out


def random_voxel_mask(
    batch_size: int,
    image_size: Sequence[int],
    mask_patch_size: int | Sequence[int],
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """SimMIM mask: hide a random ``ratio`` of ``mask_patch_size`` patches; returns (B, 1, *image_size) bool."""
    grid = patch_grid(image_size, mask_patch_size)
    patches = random_masking(batch_size, math.prod(grid), ratio, generator=generator, device=device)
    return patch_mask_to_voxels(patches.mask, grid, mask_patch_size)
