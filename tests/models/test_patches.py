"""Tests for medssl/models/patches.py: round trips and agreement with a real conv patch embedding."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from medssl.models.patches import patchify, unpatchify
from medssl.transforms.patch_grid import grid_shape

CASES = [
    ((2, 3, 8, 12), (4, 3)),  # 2D, anisotropic patch
    ((2, 1, 8, 8), 4),  # 2D, int patch
    ((2, 2, 4, 6, 8), (2, 3, 4)),  # 3D, anisotropic patch
    ((1, 3, 8, 8, 8), 4),  # 3D, int patch
]


@pytest.mark.parametrize(("shape", "patch"), CASES)
def test_round_trip(shape: tuple[int, ...], patch: int | tuple[int, ...]) -> None:
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    grid = grid_shape(shape[2:], patch)
    p = (patch,) * len(grid) if isinstance(patch, int) else patch
    assert tokens.shape == (shape[0], math.prod(grid), math.prod(p) * shape[1])
    assert torch.equal(unpatchify(tokens, patch, grid, shape[1]), x)


@pytest.mark.parametrize(("shape", "patch"), CASES)
def test_matches_conv_patch_embedding(shape: tuple[int, ...], patch: int | tuple[int, ...]) -> None:
    """A conv with one-hot kernels, one output channel per (patch voxel, channel) in (p..., C) order, flattened
    like a ViT patch embedding, reproduces patchify exactly."""
    x = torch.randn(shape, dtype=torch.float64)
    channels, nd = shape[1], len(shape) - 2
    p = (patch,) * nd if isinstance(patch, int) else tuple(patch)
    conv = (nn.Conv2d if nd == 2 else nn.Conv3d)(channels, math.prod(p) * channels, p, stride=p, bias=False)
    weight = torch.zeros(math.prod(p) * channels, channels, *p, dtype=torch.float64)
    for out, (*offset, c) in enumerate(itertools.product(*[range(v) for v in p], range(channels))):
        weight[(out, c, *offset)] = 1.0
    conv.weight = nn.Parameter(weight)
    expected = conv(x).flatten(2).transpose(1, 2)
    assert torch.equal(patchify(x, patch), expected)


def test_token_order_by_hand_2d() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # C=2
    tokens = patchify(x, 2)
    assert tokens.shape == (1, 4, 8)
    # first token = top-left 2x2 patch, voxels row-major, channel last
    assert tokens[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    # second token = top-right patch (row-major grid)
    assert tokens[0, 1, :2].tolist() == [2, 18]


def test_errors() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 1, 6, 6, 5), 2)
    with pytest.raises(ValueError):
        patchify(torch.zeros(1, 1, 8, 8), (2, 2, 2))
    with pytest.raises(ValueError):
        unpatchify(torch.zeros(1, 4, 7), 2, (2, 2), 2)
