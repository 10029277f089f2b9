"""Models Genesis image corruptions (Zhou et al., MICCAI 2019 / MedIA 2021; github MrGiovanni/ModelsGenesis), N-D.

A restoration network learns to undo four transformations of an image, each applied per sample with its own
probability (the paper's defaults in brackets), in the reference code's order:

1. **local pixel shuffling** [0.5]: the voxels inside many small blocks are permuted (texture destroyed, global
   shape kept);
2. **non-linear intensity mapping** [0.9]: a random monotone cubic Bezier curve through (0, 0) and (1, 1) remaps
   the intensities (the grey-scale counterpart of colorisation); with probability ``flip_prob`` [0.5] the curve is
   flipped (``v -> 1 - f(v)``, inverted contrast);
3. **in-painting** / 4. **out-painting** [0.9 for either, mutually exclusive per sample; in-painting 20%, i.e.
   80% out-painting]: up to 5 random boxes are replaced by uniform noise, or everything except up to 5 random
   inner boxes is.

Everything is a pure function of the tensor ``(B, C, *spatial)`` (2D or 3D) and an explicit ``torch.Generator``,
vectorised over the batch (no Python loop over voxels or samples); all random numbers are drawn whatever the
outcome, so a seed gives the same corruption. Channels share each sample's curve, blocks and boxes.

**Intensity range.** The transformations expect intensities in [0, 1] (CT windows, percentile scaling and MedMNIST
are): the Bezier map is defined on [0, 1] and *clamps* its input to it, and the painting noise is uniform in
[0, 1). Shuffling works for any range. Normalise z-scored data first (:class:`medssl.ssl.genesis.ModelsGenesis`
clamps or min-max scales per sample, its ``intensity`` argument).

Deviations from the reference code, chosen so that every transformation has exact testable properties:
local shuffling permutes the voxels of non-overlapping blocks of one random size per batch on a grid with a random
offset (a ``block_fraction`` [0.8] of the grid cells, about the area the reference's 10,000 overlapping blocks of
1..S/10 voxels per axis cover in a 64^3 cube) instead of overlapping blocks; the flipped curve is ``1 - f``, which
has the same distribution as the reference's pairing of sorted ``x`` with reversed ``y`` (that is ``1 - f'`` for a
curve ``f'`` with control heights ``1 - y2, 1 - y1``, again uniform). The reference's random flips of image *and*
target are data augmentation, left to the data module (``data.augment.flip_prob``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = ["GenesisTransform", "ShuffleBlocks", "bezier_map", "draw_shuffle_blocks", "in_paint", "local_pixel_shuffle",
           "nonlinear_intensity", "out_paint", "random_boxes", "shuffle_within_blocks"]

IntOrSeq = Union[int, Sequence[int]]


def _check_image(x: torch.Tensor) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")


def _rand(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=like.device)


def _per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (x.ndim - 1)))


# --- 1. non-linear intensity mapping ----------------------------------------------------------------------------
def bezier_map(values: torch.Tensor, control: torch.Tensor, flip: Optional[torch.Tensor] = None,
               num_points: int = 1001) -> torch.Tensor:
    """Map ``values`` (B, ...) through each sample's cubic Bezier curve ``(0,0), P1, P2, (1,1)``.

    ``control`` (B, 2, 2) holds ``P1, P2`` as (x, y) rows in [0, 1]. With such control points both coordinates of
    the curve are non-decreasing in the curve parameter, so the curve is the graph of a monotone map of [0, 1]
    onto [0, 1] (0 -> 0, 1 -> 1); it is tabulated at ``num_points`` parameter values and interpolated linearly
    (the reference code does the same with ``np.interp``). Values are clamped to [0, 1] first. ``flip`` (B,) bool
    returns ``1 - f(v)`` for those samples.
    """
    b = values.shape[0]
    if control.shape != (b, 2, 2):
        raise ValueError(f"control must be (B, 2, 2) = {(b, 2, 2)}, got {tuple(control.shape)}")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    dtype = values.dtype if values.dtype == torch.float64 else torch.float32
    t = torch.linspace(0.0, 1.0, num_points, device=values.device, dtype=dtype)
    basis = torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # (3, N): weights of P1, P2, P3=(1,1)
    pts = torch.cat([control.to(dtype), control.new_ones(b, 1, 2).to(dtype)], dim=1)  # (B, 3, 2)
    curve = torch.einsum("kn,bkd->bnd", basis, pts)
    xs = curve[..., 0].cummax(dim=1).values  # monotone in exact arithmetic; cummax removes rounding wiggles
    ys = curve[..., 1].cummax(dim=1).values
    v = values.reshape(b, -1).to(dtype).clamp(0.0, 1.0).contiguous()
    hi = torch.searchsorted(xs.contiguous(), v, right=True).clamp(1, num_points - 1)
    x0, x1 = xs.gather(1, hi - 1), xs.gather(1, hi)
    y0, y1 = ys.gather(1, hi - 1), ys.gather(1, hi)
    span = x1 - x0
    w = torch.where(span > 0, (v - x0) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(v))
    out = (y0 + w.clamp(0.0, 1.0) * (y1 - y0)).clamp(0.0, 1.0)
    if flip is not None:
        out = torch.where(flip.view(b, 1), 1.0 - out, out)
    return out.reshape(values.shape).to(values.dtype)


def nonlinear_intensity(x: torch.Tensor, generator: torch.Generator, prob: float = 0.9, flip_prob: float = 0.5,
                        num_points: int = 1001) -> torch.Tensor:
    """Remap each sample's intensities by a random Bezier curve with probability ``prob`` (see :func:`bezier_map`)."""
    _check_image(x)
    b = x.shape[0]
    apply, control, flip = _rand((b,), generator, x) < prob, _rand((b, 2, 2), generator, x), _rand((b,), generator, x)
    mapped = bezier_map(x, control, flip < flip_prob, num_points)
    return torch.where(_per_sample(apply, x), mapped, x)


# --- 2. local pixel shuffling -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShuffleBlocks:
    """Non-overlapping blocks of ``block_size`` voxels on a ``grid`` starting at ``offset``; ``selected`` (B, G)
    says which of the ``G = prod(grid)`` blocks (row-major) of each sample are shuffled."""

    block_size: tuple[int, ...]
    offset: tuple[int, ...]
    grid: tuple[int, ...]
    selected: torch.Tensor

    def labels(self, spatial: Sequence[int]) -> torch.Tensor:
        """(B, *spatial) row-major index of the block holding each voxel where that block is selected, else -1."""
        index = torch.zeros((), dtype=torch.long, device=self.selected.device)
        valid = torch.ones((), dtype=torch.bool, device=self.selected.device)
        for axis, (s, o, g, bs) in enumerate(zip(spatial, self.offset, self.grid, self.block_size)):
            coord = torch.arange(int(s), device=self.selected.device)
            shape = [1] * len(self.grid)
            shape[axis] = -1
            index = index * g + ((coord - o).clamp(min=0) // bs).clamp(max=g - 1).view(shape)
            valid = valid & ((coord >= o) & (coord < o + g * bs)).view(shape)
        chosen = self.selected[:, index.reshape(-1)].view(-1, *index.shape) & valid
        return torch.where(chosen, index, torch.full_like(index, -1))


def _per_axis(value: Optional[IntOrSeq], spatial: Sequence[int], default: Sequence[int], name: str) -> list[int]:
    if value is None:
        return list(default)
    out = [int(value)] * len(spatial) if isinstance(value, int) else [int(v) for v in value]
    if len(out) != len(spatial) or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a positive int or {len(spatial)} positive ints, got {value}")
    return out


def draw_shuffle_blocks(batch: int, spatial: Sequence[int], generator: torch.Generator, prob: float = 0.5,
                        max_block_size: Optional[IntOrSeq] = None, block_fraction: float = 0.8,
                        device: Optional[torch.device] = None) -> ShuffleBlocks:
    """Random :class:`ShuffleBlocks`: one block size per call, uniform in ``1..max_block_size`` per axis (default
    ``max(2, S // 10)`` as in the reference), a random grid offset, each block of a sample selected with
    probability ``block_fraction`` and samples shuffled at all with probability ``prob``."""
    if not 0.0 <= block_fraction <= 1.0:
        raise ValueError(f"block_fraction must be in [0, 1], got {block_fraction}")
    spatial = [int(s) for s in spatial]
    maxima = [min(m, s) for m, s in zip(_per_axis(max_block_size, spatial, [max(2, s // 10) for s in spatial],
                                                  "max_block_size"), spatial)]
    dev = generator.device if device is None else device
    draws = torch.rand(2 * len(spatial), generator=generator, device=dev).tolist()
    size = [1 + min(int(u * m), m - 1) for u, m in zip(draws, maxima)]
    grid = [s // bs for s, bs in zip(spatial, size)]
    spare = [s - g * bs for s, g, bs in zip(spatial, grid, size)]  # voxels left over by the grid, per axis
    offset = [min(int(u * (r + 1)), r) for u, r in zip(draws[len(spatial):], spare)]
    on = torch.rand(batch, generator=generator, device=dev) < prob
    selected = (torch.rand(batch, math.prod(grid), generator=generator, device=dev) < block_fraction) & on[:, None]
    return ShuffleBlocks(tuple(size), tuple(offset), tuple(grid), selected)


def shuffle_within_blocks(x: torch.Tensor, blocks: ShuffleBlocks, generator: torch.Generator) -> torch.Tensor:
    """Permute the voxels inside every selected block (the same permutation for all channels); the rest of ``x``
    is returned unchanged."""
    _check_image(x)
    b, c, *spatial = x.shape
    nd = len(spatial)
    if len(blocks.grid) != nd or blocks.selected.shape != (b, math.prod(blocks.grid)):
        raise ValueError(f"blocks (grid {blocks.grid}, selected {tuple(blocks.selected.shape)}) do not fit x "
                         f"{tuple(x.shape)}")
    region = tuple(slice(o, o + g * bs) for o, g, bs in zip(blocks.offset, blocks.grid, blocks.block_size))
    cells = x[(slice(None), slice(None), *region)]
    split = [v for g, bs in zip(blocks.grid, blocks.block_size) for v in (g, bs)]
    order = [0, 1, *range(2, 2 + 2 * nd, 2), *range(3, 3 + 2 * nd, 2)]  # (B, C, g0, g1.., b0, b1..)
    n_blocks, n_vox = math.prod(blocks.grid), math.prod(blocks.block_size)
    flat = cells.reshape(b, c, *split).permute(order).reshape(b, c, n_blocks, n_vox)
    keys = torch.rand(b, n_blocks, n_vox, generator=generator, device=x.device)
    identity = torch.arange(n_vox, device=x.device, dtype=keys.dtype).expand_as(keys)
    perm = torch.argsort(torch.where(blocks.selected.to(x.device)[..., None], keys, identity), dim=-1)
    shuffled = flat.gather(-1, perm[:, None].expand(b, c, n_blocks, n_vox))
    inverse = [order.index(i) for i in range(len(order))]
    back = shuffled.reshape(b, c, *blocks.grid, *blocks.block_size).permute(inverse).reshape(cells.shape)
    out = x.clone()
    out[(slice(None), slice(None), *region)] = back
    return out


def local_pixel_shuffle(x: torch.Tensor, generator: torch.Generator, prob: float = 0.5,
                        max_block_size: Optional[IntOrSeq] = None, block_fraction: float = 0.8) -> torch.Tensor:
    """:func:`draw_shuffle_blocks` then :func:`shuffle_within_blocks`."""
    _check_image(x)
    blocks = draw_shuffle_blocks(x.shape[0], x.shape[2:], generator, prob, max_block_size, block_fraction, x.device)
    return shuffle_within_blocks(x, blocks, generator)


# --- 3./4. in- and out-painting ---------------------------------------------------------------------------------
def random_boxes(batch: int, spatial: Sequence[int], generator: torch.Generator, size_fraction: tuple[float, float],
                 max_boxes: int = 5, continue_prob: float = 0.95, first_always: bool = False, margin: int = 3,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """(B, *spatial) bool: the union of up to ``max_boxes`` axis-aligned boxes per sample.

    Box ``k`` exists when the first ``k + 1`` coin flips (probability ``continue_prob``) succeed (box 0 always with
    ``first_always``), as in the reference's ``while cnt > 0 and random() < 0.95`` loops. Side lengths are uniform
    integers in ``[floor(lo * S), floor(hi * S)]`` per axis; boxes keep ``margin`` voxels from the border (less on
    small images).
    """
    lo_f, hi_f = size_fraction
    if not 0.0 < lo_f <= hi_f <= 1.0:
        raise ValueError(f"size_fraction must satisfy 0 < lo <= hi <= 1, got {size_fraction}")
    if max_boxes < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
    dev = generator.device if device is None else device
    u = torch.rand(batch, max_boxes, 1 + 2 * len(spatial), generator=generator, device=dev)
    coin = u[..., 0] < continue_prob
    if first_always:
        coin[:, 0] = True
    present = coin.long().cumprod(dim=1).bool()  # (B, K)
    inside = present
    for axis, s in enumerate(spatial):
        lo, hi = max(1, int(lo_f * s)), max(1, int(hi_f * s))
        m = max(0, min(margin, (s - hi) // 2))
        size = lo + (u[..., 1 + 2 * axis] * (hi - lo + 1)).long().clamp(max=hi - lo)
        room = s - size - 2 * m + 1  # start in [m, s - size - m]
        start = m + (u[..., 2 + 2 * axis] * room).long().clamp(max=room - 1)
        coord = torch.arange(s, device=dev)
        along = (coord >= start[..., None]) & (coord < (start + size)[..., None])  # (B, K, s)
        shape = [batch, max_boxes] + [1] * len(spatial)
        shape[2 + axis] = s
        inside = inside.view(*inside.shape, *([1] * (len(shape) - inside.ndim))) & along.view(shape)
    return inside.any(dim=1)


def in_paint(x: torch.Tensor, boxes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Voxels inside ``boxes`` (B, *spatial) replaced by ``noise`` (shape of ``x``); the rest unchanged."""
    return torch.where(boxes[:, None], noise, x)


def out_paint(x: torch.Tensor, boxes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Only the voxels inside ``boxes`` kept; everything outside replaced by ``noise``."""
    return torch.where(boxes[:, None], x, noise)


# --- all four -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenesisTransform:
    """The Models Genesis corruption ``x -> x~`` (module docstring); ``transform(x, generator)``.

    Args:
        nonlinear_prob, flip_prob: non-linear intensity mapping and its flip.
        shuffle_prob, shuffle_max_block, shuffle_fraction: local pixel shuffling (see :func:`draw_shuffle_blocks`).
        paint_prob: probability that a sample is in- or out-painted; ``inpaint_rate`` of those are in-painted.
        inpaint_size, outpaint_size: box side lengths as fractions of the image side (reference: 1/6..1/3 for the
            noise boxes, 3/7..4/7 for the kept boxes).
    """

    nonlinear_prob: float = 0.9
    flip_prob: float = 0.5
    shuffle_prob: float = 0.5
    shuffle_max_block: Optional[IntOrSeq] = None
    shuffle_fraction: float = 0.8
    paint_prob: float = 0.9
    inpaint_rate: float = 0.2
    inpaint_size: tuple[float, float] = (1 / 6, 1 / 3)
    outpaint_size: tuple[float, float] = (3 / 7, 4 / 7)

    def __post_init__(self) -> None:
        for name in ("nonlinear_prob", "flip_prob", "shuffle_prob", "shuffle_fraction", "paint_prob", "inpaint_rate"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_image(x)
        b, spatial = x.shape[0], x.shape[2:]
        x = local_pixel_shuffle(x, generator, self.shuffle_prob, self.shuffle_max_block, self.shuffle_fraction)
        x = nonlinear_intensity(x, generator, self.nonlinear_prob, self.flip_prob)
        paint, which = _rand((b,), generator, x) < self.paint_prob, _rand((b,), generator, x) < self.inpaint_rate
        holes = random_boxes(b, spatial, generator, self.inpaint_size, device=x.device)
        kept = random_boxes(b, spatial, generator, self.outpaint_size, first_always=True, device=x.device)
        noise = _rand(x.shape, generator, x).to(x.dtype)
        x = torch.where(_per_sample(paint & which, x), in_paint(x, holes, noise), x)
        return torch.where(_per_sample(paint & ~which, x), out_paint(x, kept, noise), x)
