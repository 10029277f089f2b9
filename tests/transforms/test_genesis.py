"""Models Genesis transformations: exact properties of each one, in 2D and 3D."""
from __future__ import annotations

import pytest
import torch

from medssl.transforms.genesis import (
    GenesisTransform,
    bezier_map,
    draw_shuffle_blocks,
    in_paint,
    local_pixel_shuffle,
    nonlinear_intensity,
    out_paint,
    random_boxes,
    shuffle_within_blocks,
)

SHAPES = {2: (16, 16), 3: (12, 10, 14)}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact_bezier(v: torch.Tensor, p1: tuple[float, float], p2: tuple[float, float]) -> torch.Tensor:
    """Reference: solve x(t) = v by bisection on the cubic, return y(t)."""
    lo, hi = torch.zeros_like(v, dtype=torch.float64), torch.ones_like(v, dtype=torch.float64)

    def coord(t: torch.Tensor, a: float, b: float) -> torch.Tensor:
        return 3 * (1 - t) ** 2 * t * a + 3 * (1 - t) * t**2 * b + t**3

    for _ in range(60):
        mid = (lo + hi) / 2
        below = coord(mid, p1[0], p2[0]) < v
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return coord((lo + hi) / 2, p1[1], p2[1])


def test_bezier_is_monotone_onto_unit_interval_and_matches_the_curve():
    control = torch.rand(16, 2, 2, generator=gen())
    v = torch.linspace(0, 1, 2001).expand(16, -1)
    f = bezier_map(v, control)
    assert torch.all(f[:, 1:] >= f[:, :-1])
    assert torch.all(f[:, 0] == 0) and torch.all(f[:, -1] == 1) and f.min() >= 0 and f.max() <= 1
    for i in range(4):
        ref = _exact_bezier(v[i].double(), tuple(control[i, 0].tolist()), tuple(control[i, 1].tolist()))
        assert torch.allclose(f[i].double(), ref, atol=2e-3), (f[i].double() - ref).abs().max()
    # control points on the diagonal at 1/3, 2/3: x(t) = y(t) = t, the identity map
    diagonal = torch.tensor([[[1 / 3, 1 / 3], [2 / 3, 2 / 3]]])
    assert torch.allclose(bezier_map(v[:1], diagonal), v[:1], atol=1e-6)


def test_bezier_flip_reverses_and_inputs_outside_are_clamped():
    control = torch.rand(8, 2, 2, generator=gen(1))
    v = torch.linspace(0, 1, 501).expand(8, -1)
    flip = torch.arange(8) % 2 == 0
    f, g = bezier_map(v, control), bezier_map(v, control, flip)
    assert torch.equal(g[~flip], f[~flip])
    assert torch.allclose(g[flip], 1 - f[flip])
    flipped = g[flip]
    assert torch.all(flipped[:, 1:] <= flipped[:, :-1])
    assert torch.all(flipped[:, 0] == 1) and torch.all(flipped[:, -1] == 0)
    outside = torch.tensor([[-3.0, -0.1, 1.2, 7.0]]).expand(8, -1)
    assert torch.equal(bezier_map(outside, control), torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(8, -1))


@pytest.mark.parametrize("dims", [2, 3])
def test_nonlinear_intensity_is_a_monotone_map_per_sample(dims):
    x = torch.rand(6, 2, *SHAPES[dims], generator=gen(2))
    assert torch.equal(nonlinear_intensity(x, gen(), prob=0.0), x)
    y = nonlinear_intensity(x, gen(), prob=1.0, flip_prob=0.5)
    for b in range(6):
        order = x[b].flatten().argsort()
        steps = y[b].flatten()[order].diff()
        assert torch.all(steps >= 0) or torch.all(steps <= 0)  # increasing, or flipped
    assert not torch.equal(y, x)


@pytest.mark.parametrize("dims", [2, 3])
def test_local_shuffle_permutes_within_blocks_only(dims):
    spatial = SHAPES[dims]
    base = torch.rand(4, 1, *spatial, generator=gen(3))
    x = torch.cat([base, 2 * base + 1], dim=1)  # channel 1 is a function of channel 0
    blocks = draw_shuffle_blocks(4, spatial, gen(4), prob=1.0, max_block_size=4, block_fraction=0.6)
    assert all(1 <= s <= 4 for s in blocks.block_size) and blocks.selected.any()
    y = shuffle_within_blocks(x, blocks, gen(5))
    labels = blocks.labels(spatial)
    outside = (labels < 0)[:, None].expand_as(x)
    assert torch.equal(y[outside], x[outside])
    for b in range(4):
        for block in labels[b].unique().tolist():
            if block >= 0:
                inside = labels[b] == block
                assert torch.equal(y[b, 0][inside].sort().values, x[b, 0][inside].sort().values)
    assert torch.equal(y[:, 1], 2 * y[:, 0] + 1)  # one permutation for all channels
    assert not torch.equal(y, x)


@pytest.mark.parametrize("dims", [2, 3])
def test_local_shuffle_probability_zero_and_multiset(dims):
    x = torch.rand(3, 1, *SHAPES[dims], generator=gen(6))
    assert torch.equal(local_pixel_shuffle(x, gen(), prob=0.0), x)
    y = local_pixel_shuffle(x, gen(), prob=1.0, max_block_size=3)
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)


@pytest.mark.parametrize("dims", [2, 3])
def test_single_box_has_the_drawn_size(dims):
    spatial = SHAPES[dims]
    mask = random_boxes(32, spatial, gen(7), (0.25, 0.5), max_boxes=1, continue_prob=1.0)
    for m in mask:
        idx = m.nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values + 1
        box = torch.zeros_like(m)
        box[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = True
        assert torch.equal(m, box)  # one axis-aligned box
        for side, s in zip((hi - lo).tolist(), spatial):
            assert int(0.25 * s) <= side <= int(0.5 * s)
    assert random_boxes(32, spatial, gen(8), (0.2, 0.3), continue_prob=0.0, first_always=True).flatten(1).any(1).all()
    assert not random_boxes(32, spatial, gen(8), (0.2, 0.3), continue_prob=0.0).any()


@pytest.mark.parametrize("dims", [2, 3])
def test_in_and_out_painting_touch_only_their_regions(dims):
    spatial = SHAPES[dims]
    x = torch.rand(5, 2, *spatial, generator=gen(9))
    noise = torch.rand(x.shape, generator=gen(10)) + 2.0  # distinguishable from x
    boxes = random_boxes(5, spatial, gen(11), (1 / 6, 1 / 3), first_always=True)
    inside = boxes[:, None].expand_as(x)
    inpainted, outpainted = in_paint(x, boxes, noise), out_paint(x, boxes, noise)
    assert torch.equal(inpainted[~inside], x[~inside]) and torch.equal(inpainted[inside], noise[inside])
    assert torch.equal(outpainted[inside], x[inside]) and torch.equal(outpainted[~inside], noise[~inside])


@pytest.mark.parametrize("dims", [2, 3])
def test_genesis_identity_at_zero_probabilities_and_seeded(dims):
    x = torch.rand(4, 1, *SHAPES[dims], generator=gen(12))
    off = GenesisTransform(nonlinear_prob=0.0, shuffle_prob=0.0, paint_prob=0.0)
    assert torch.equal(off(x, gen(0)), x)
    full = GenesisTransform()
    a, b, c = full(x, gen(1)), full(x, gen(1)), full(x, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_genesis_painting_is_in_or_out_per_sample():
    """Only painting, always: boxes keep 3 voxels from the border, so the corner voxel is replaced exactly when a
    sample is out-painted; the in-painting rate holds."""
    x = torch.full((200, 1, 24, 24), 5.0)  # noise lies in [0, 1), so every replaced voxel is visible
    only_paint = {"nonlinear_prob": 0.0, "shuffle_prob": 0.0, "paint_prob": 1.0}
    for rate, expect_in in ((1.0, 1.0), (0.0, 0.0), (0.2, 0.2)):
        y = GenesisTransform(**only_paint, inpaint_rate=rate)(x, gen(13))
        inpainted = (y[:, 0, 0, 0] == x[:, 0, 0, 0]).float().mean().item()
        assert abs(inpainted - expect_in) < 0.07, (rate, inpainted)


def test_bad_arguments():
    with pytest.raises(ValueError, match="paint_prob"):
        GenesisTransform(paint_prob=1.5)
    with pytest.raises(ValueError, match="x must be"):
        GenesisTransform()(torch.rand(4, 16), gen())
    with pytest.raises(ValueError, match="size_fraction"):
        random_boxes(2, (8, 8), gen(), (0.5, 0.2))
    with pytest.raises(ValueError, match="max_block_size"):
        draw_shuffle_blocks(2, (8, 8), gen(), max_block_size=[2, 2, 2])
