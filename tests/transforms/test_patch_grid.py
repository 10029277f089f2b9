"""Tests for medssl/transforms/patch_grid.py: patches equal direct slicing, reassemble exactly (tiling and
overlapping grids), the grid arithmetic, and the seeded per-patch intensity jitter; 2D and 3D."""
from __future__ import annotations

import itertools

import pytest
import torch

from medssl.transforms.patch_grid import (
    assemble_patches,
    extract_patches,
    grid_shape,
    grid_size,
    jitter_patch_intensity,
)


def _integer_image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Integer-valued floats: sums and divisions by the overlap count stay exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-50, 50, shape, generator=g).float()


@pytest.mark.parametrize("size, patch, stride, grid, uncovered", [
    ((28, 28), 8, 5, (5, 5), (0, 0)),
    ((28, 28, 28), 8, 5, (5, 5, 5), (0, 0, 0)),
    ((32, 32), 8, 6, (5, 5), (0, 0)),
    ((30, 17), (8, 4), (5, 4), (5, 4), (2, 1)),
    ((16, 16, 12), 4, None, (4, 4, 3), (0, 0, 0)),
])
def test_grid_size(size, patch, stride, grid, uncovered) -> None:
    assert grid_size(size, patch, stride) == (grid, uncovered)


@pytest.mark.parametrize("shape, patch, stride", [
    ((2, 3, 28, 28), 8, 5),            # MedMNIST 2D: 5 x 5 grid, overlapping
    ((2, 1, 13, 11), (4, 3), (3, 2)),  # anisotropic, a remainder on both axes
    ((1, 2, 12, 10, 9), (4, 5, 3), (2, 5, 3)),
    ((2, 1, 28, 28, 28), 8, 5),        # MedMNIST 3D: 5 x 5 x 5 grid
])
def test_patches_equal_direct_slicing(shape, patch, stride) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    nd = len(shape) - 2
    p = (patch,) * nd if isinstance(patch, int) else patch
    s = (stride,) * nd if isinstance(stride, int) else stride
    patches = extract_patches(x, patch, stride)
    grid, _ = grid_size(shape[2:], patch, stride)
    assert patches.shape == (shape[0], *grid, shape[1], *p)
    for index in itertools.product(*(range(g) for g in grid)):
        window = tuple(slice(i * t, i * t + q) for i, t, q in zip(index, s, p))
        assert torch.equal(patches[(slice(None), *index)], x[(slice(None), slice(None), *window)])


@pytest.mark.parametrize("shape, patch", [((2, 1, 16, 12), 4), ((2, 2, 8, 12, 4), (4, 3, 2)), ((1, 1, 28, 28), 7)])
def test_tiles_reassemble_exactly(shape, patch) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(assemble_patches(extract_patches(x, patch), shape[2:]), x)


@pytest.mark.parametrize("shape, patch, stride", [((2, 1, 28, 28), 8, 5), ((1, 2, 28, 28, 28), 8, 5),
                                                  ((2, 1, 11, 9), (3, 5), (2, 1))])
def test_overlapping_grid_reassembles_exactly(shape, patch, stride) -> None:
    x = _integer_image(shape)
    assert torch.equal(assemble_patches(extract_patches(x, patch, stride), shape[2:], stride), x)


def test_uncovered_voxels_are_zero_after_assembly() -> None:
    x = _integer_image((1, 1, 13, 11)) + 100  # no zeros in the image
    out = assemble_patches(extract_patches(x, 4, 3), (13, 11), 3)
    assert torch.equal(out[..., :13, :10], x[..., :13, :10])
    assert torch.all(out[..., 10] == 0)  # grid (4, 3): rows 0..12 covered, columns 10 not


def test_extract_is_differentiable() -> None:
    x = torch.randn(1, 1, 28, 28, requires_grad=True)
    extract_patches(x, 8, 5).sum().backward()
    # the gradient of a sum of all patches counts how many patches hold each pixel: 1 or 2 per axis here
    assert set(x.grad.unique().tolist()) == {1.0, 2.0, 4.0}
    assert x.grad[0, 0, 6, 6] == 4 and x.grad[0, 0, 6, 2] == 2 and x.grad[0, 0, 2, 2] == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        extract_patches(torch.zeros(1, 1, 6, 6), 8)
    with pytest.raises(ValueError, match="stride"):
        extract_patches(torch.zeros(1, 1, 16, 16), 8, 0)
    with pytest.raises(ValueError, match="patch_size"):
        grid_size((16, 16), (4, 4, 4))
    with pytest.raises(ValueError, match="does not match image_size"):
        assemble_patches(torch.zeros(1, 3, 3, 1, 4, 4), (16, 16))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_jitter_is_a_seeded_affine_map_per_patch(spatial_dims) -> None:
    x = torch.rand(2, 1, *(12,) * spatial_dims) + 1.0
    patches = extract_patches(x, 4, 4)
    out = jitter_patch_intensity(patches, spatial_dims, 0.3, 0.2, torch.Generator().manual_seed(7))
    again = jitter_patch_intensity(patches, spatial_dims, 0.3, 0.2, torch.Generator().manual_seed(7))
    other = jitter_patch_intensity(patches, spatial_dims, 0.3, 0.2, torch.Generator().manual_seed(8))
    assert torch.equal(out, again) and not torch.equal(out, other)
    # one (scale, shift) per patch: fit them from two voxels and check every voxel of every patch
    flat_in = patches.flatten(1 + spatial_dims)
    flat_out = out.flatten(1 + spatial_dims)
    scale = (flat_out[..., 1] - flat_out[..., 0]) / (flat_in[..., 1] - flat_in[..., 0])
    shift = flat_out[..., 0] - scale * flat_in[..., 0]
    torch.testing.assert_close(flat_out, flat_in * scale[..., None] + shift[..., None], rtol=1e-4, atol=1e-4)
    assert scale.min() >= 0.7 - 1e-4 and scale.max() <= 1.3 + 1e-4 and shift.abs().max() <= 0.2 + 1e-4
    assert scale.std() > 0  # the draws differ between patches
    assert jitter_patch_intensity(patches, spatial_dims, 0.0, 0.0) is patches


def test_grid_shape_of_an_exact_tiling_and_its_error():
    """The ViT/MAE grid: per-axis quotient, and a ValueError naming both sizes when a size is not divisible."""
    assert grid_shape((8, 12, 16), (2, 3, 4)) == (4, 4, 4) == grid_size((8, 12, 16), (2, 3, 4))[0]
    assert grid_shape((64, 64), 16) == (4, 4)
    with pytest.raises(ValueError, match=r"\(10, 8\).*\(4, 4\)"):
        grid_shape((10, 8), 4)
