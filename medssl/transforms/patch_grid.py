"""Cut an image into a regular, possibly overlapping grid of patches and put it back, 2D and 3D (pure torch).

Contrastive predictive coding (:mod:`medssl.ssl.cpc`) encodes every patch of such a grid separately and predicts the
features of patches further down the grid from the ones above (CPC v2 cuts a 256 px image into a 7 x 7 grid of
64 px patches with stride 32). For an image ``(B, C, *S)``, a patch size ``p`` and a stride ``s`` (per axis), the
grid has

    g_d = (S_d - p_d) // s_d + 1        patches along spatial axis d,

and patch ``(i_1, .., i_N)`` is the slice ``x[..., i_1 s_1 : i_1 s_1 + p_1, ..]``. Voxels past the last patch (when
``(S_d - p_d)`` is not a multiple of ``s_d``) are not covered; :func:`grid_size` reports it and
:func:`assemble_patches` leaves them at zero.

* :func:`grid_shape` -- the exact tiling's grid (stride = patch size, divisible sizes only), shared by the patch
  tokens of :mod:`medssl.models.patches` and the masks of :mod:`medssl.transforms.masking`.
* :func:`extract_patches` -- ``(B, C, *S) -> (B, *grid, C, *patch)`` with :meth:`torch.Tensor.unfold` (a strided
  view; differentiable).
* :func:`assemble_patches` -- the inverse: overlap-add the patches and divide by how many covered each voxel. For
  patches cut from one image the overlapping copies are identical, so this restores every covered voxel exactly,
  for any stride (``stride == patch_size`` tiles the image).
* :func:`jitter_patch_intensity` -- a cheap per-patch augmentation (random intensity scale and shift of each patch,
  drawn from an explicit :class:`torch.Generator`), so that neighbouring patches cannot be matched by their
  low-level intensity statistics alone.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Optional

import torch

__all__ = ["assemble_patches", "extract_patches", "grid_shape", "grid_size", "jitter_patch_intensity"]


def _per_axis(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a positive int or {n} positive ints, got {value}")
    return out


def grid_shape(image_size: Sequence[int], patch_size: int | Sequence[int]) -> tuple[int, ...]:
    """Patches per spatial dimension of a tiling that covers the image exactly (stride = patch size, no voxel left
    over): the grid of a ViT patch embedding (:mod:`medssl.models.patches`) and of MAE / SimMIM masks
    (:mod:`medssl.transforms.masking`). ValueError naming both sizes when ``image_size`` is not divisible."""
    size = _per_axis(image_size, len(image_size), "image_size")
    patch = _per_axis(patch_size, len(size), "patch_size")
    if any(s % p for s, p in zip(size, patch)):
        raise ValueError(f"image_size {size} is not divisible by patch_size {patch}")
    return tuple(s // p for s, p in zip(size, patch))


def grid_size(image_size: Sequence[int], patch_size: int | Sequence[int],
              stride: Optional[int | Sequence[int]] = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(grid, uncovered)``: patches per axis and the voxels per axis past the last patch.

    ``stride`` defaults to ``patch_size`` (non-overlapping tiles). ValueError naming the sizes when a patch does not
    fit into the image.
    """
    size = tuple(int(s) for s in image_size)
    patch = _per_axis(patch_size, len(size), "patch_size")
    step = _per_axis(patch if stride is None else stride, len(size), "stride")
    if any(p > s for p, s in zip(patch, size)):
        raise ValueError(f"patch_size {patch} does not fit into the image of size {size}")
    grid = tuple((s - p) // t + 1 for s, p, t in zip(size, patch, step))
    uncovered = tuple(s - ((g - 1) * t + p) for s, g, p, t in zip(size, grid, patch, step))
    return grid, uncovered


def extract_patches(x: torch.Tensor, patch_size: int | Sequence[int],
                    stride: Optional[int | Sequence[int]] = None) -> torch.Tensor:
    """``(B, C, *S)`` image -> ``(B, *grid, C, *patch_size)`` patches (see the module docstring)."""
    if x.ndim < 3:
        raise ValueError(f"x must be (B, C, *spatial), got shape {tuple(x.shape)}")
    nd = x.ndim - 2
    grid, _ = grid_size(x.shape[2:], patch_size, stride)
    patch = _per_axis(patch_size, nd, "patch_size")
    step = _per_axis(patch if stride is None else stride, nd, "stride")
    for d in range(nd):  # (B, C, g_1 .. g_d, S_{d+1} .., p_1 .. p_d)
        x = x.unfold(2 + d, patch[d], step[d])
    # (B, C, g_1 .. g_N, p_1 .. p_N) -> (B, g_1 .. g_N, C, p_1 .. p_N)
    order = [0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd)]
    out = x.permute(order)
    assert tuple(out.shape[1 : 1 + nd]) == grid
    return out


def assemble_patches(patches: torch.Tensor, image_size: Sequence[int],
                     stride: Optional[int | Sequence[int]] = None) -> torch.Tensor:
    """``(B, *grid, C, *patch)`` patches -> ``(B, C, *image_size)``: overlap-add divided by the coverage count.

    Voxels that no patch covers are 0. ``stride`` defaults to the patch size.
    """
    nd = len(image_size)
    if patches.ndim != 2 + 2 * nd:
        raise ValueError(f"patches must be (B, *grid, C, *patch) with {nd} grid and patch axes for image_size "
                         f"{tuple(image_size)}, got shape {tuple(patches.shape)}")
    grid, patch = tuple(patches.shape[1 : 1 + nd]), tuple(patches.shape[2 + nd :])
    step = _per_axis(patch if stride is None else stride, nd, "stride")
    expected, _ = grid_size(image_size, patch, step)
    if expected != grid:
        raise ValueError(f"a grid of {grid} patches of size {patch} with stride {step} does not match image_size "
                         f"{tuple(image_size)} (which gives a grid of {expected})")
    batch, channels = patches.shape[0], patches.shape[1 + nd]
    out = patches.new_zeros(batch, channels, *image_size)
    count = patches.new_zeros(*image_size)
    for index in itertools.product(*(range(g) for g in grid)):
        window = tuple(slice(i * t, i * t + p) for i, t, p in zip(index, step, patch))
        out[(slice(None), slice(None), *window)] += patches[(slice(None), *index)]
        count[window] += 1
    return out / count.clamp(min=1)


def jitter_patch_intensity(patches: torch.Tensor, num_grid_axes: int, scale: float, shift: float,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-patch intensity jitter ``x * (1 + U(-scale, scale)) + U(-shift, shift)`` of ``(B, *grid, C, *patch)``
    patches; one draw per patch (shared by its channels). ``scale = shift = 0`` returns the input unchanged."""
    if scale < 0 or shift < 0:
        raise ValueError(f"scale and shift must be >= 0, got {scale}, {shift}")
    if scale == 0 and shift == 0:
        return patches
    lead = patches.shape[: 1 + num_grid_axes]
    trailing = (1,) * (patches.ndim - len(lead))

    def draw(amplitude: float) -> torch.Tensor:
        u = torch.rand(lead, generator=generator, device=patches.device, dtype=patches.dtype)
        return ((2 * u - 1) * amplitude).reshape(*lead, *trailing)

    return patches * (1 + draw(scale)) + draw(shift)
