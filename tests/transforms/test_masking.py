"""Tests for medssl/transforms/masking.py: exact counts, seeding, round trips, block structure, voxel masks."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from medssl.models.patches import patchify
from medssl.transforms.masking import (
    PatchMask,
    block_masking,
    gather_visible,
    mask_from_noise,
    num_masked,
    patch_mask_to_voxels,
    random_masking,
    random_voxel_mask,
    restore_order,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_consistent(m: PatchMask) -> None:
    """ids_keep, ids_restore and mask describe the same split."""
    b, length = m.mask.shape
    k = m.num_visible
    assert m.ids_keep.dtype == torch.long and m.ids_restore.dtype == torch.long and m.mask.dtype == torch.bool
    assert m.num_patches == length
    # ids_restore is a permutation, and ids_keep are the first K entries of its inverse
    ids_shuffle = torch.argsort(m.ids_restore, dim=1)
    assert torch.equal(torch.sort(m.ids_restore, dim=1).values, torch.arange(length).expand(b, -1))
    assert torch.equal(ids_shuffle[:, :k], m.ids_keep)
    assert torch.equal(ids_shuffle[:, k:], m.ids_masked)
    # mask is False exactly at ids_keep, True exactly at ids_masked
    assert not m.mask.gather(1, m.ids_keep).any()
    assert m.mask.gather(1, m.ids_masked).all()
    assert torch.equal(m.mask, m.ids_restore >= k)


@pytest.mark.parametrize("length", [2, 3, 10, 49, 64, 196, 512])
@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.6, 0.75, 0.9, 0.99])
def test_random_masking_exact_count(length: int, ratio: float) -> None:
    m = random_masking(5, length, ratio, generator=_gen(0))
    expected = min(max(round(length * ratio), 1), length - 1)
    assert num_masked(length, ratio) == expected
    assert m.num_visible == length - expected
    assert torch.equal(m.mask.sum(dim=1), torch.full((5,), expected))
    _assert_consistent(m)


@pytest.mark.parametrize("args", [(10, 0.0), (10, 1.0), (10, -0.1), (10, 1.5), (1, 0.5), (0, 0.5)])
def test_num_masked_rejects_bad_input(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError):
        num_masked(*args)
    with pytest.raises(ValueError):
        random_masking(2, *args)


def test_random_masking_seeded() -> None:
    a = random_masking(4, 196, 0.75, generator=_gen(123))
    b = random_masking(4, 196, 0.75, generator=_gen(123))
    c = random_masking(4, 196, 0.75, generator=_gen(124))
    assert torch.equal(a.ids_keep, b.ids_keep) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)
    # samples in a batch differ from each other
    assert not torch.equal(a.mask[0], a.mask[1])


def test_mask_from_noise_hides_largest_noise() -> None:
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    m = mask_from_noise(noise, 0.5)
    assert m.mask.tolist() == [[True, False, True, False], [False, True, False, True]]
    assert m.ids_keep.tolist() == [[1, 3], [0, 2]]  # ascending noise order, as in MAE


def test_gather_restore_round_trip() -> None:
    x = torch.randn(3, 50, 7)
    m = random_masking(3, 50, 0.7, generator=_gen(1))
    visible = gather_visible(x, m)
    assert visible.shape == (3, m.num_visible, 7)
    for i in range(3):  # the visible tokens are exactly the unmasked rows of x (in ids_keep order)
        order = torch.argsort(m.ids_keep[i])
        assert torch.equal(visible[i][order], x[i][~m.mask[i]])
    masked_tokens = torch.gather(x, 1, m.ids_masked.unsqueeze(-1).expand(-1, -1, 7))
    assert torch.equal(restore_order(visible, masked_tokens, m), x)


def test_restore_order_with_broadcast_token() -> None:
    x = torch.randn(2, 16, 4)
    m = random_masking(2, 16, 0.5, generator=_gen(2))
    token = torch.full((1, 1, 4), 99.0)
    out = restore_order(gather_visible(x, m), token, m)
    assert torch.equal(out[~m.mask], x[~m.mask])
    assert (out[m.mask] == 99.0).all()
    with pytest.raises(ValueError):
        restore_order(gather_visible(x, m), torch.zeros(1, 3, 4), m)
    with pytest.raises(ValueError):
        gather_visible(torch.randn(2, 15, 4), m)


def _blocks_touched(mask: torch.Tensor, grid: tuple[int, ...], block: int) -> tuple[int, int]:
    """(number of fully masked blocks, number of partially masked blocks) for one sample's (L,) mask."""
    m = mask.reshape(grid)
    full = partial = 0
    for start in itertools.product(*[range(0, g, block) for g in grid]):
        sub = m[tuple(slice(s, s + block) for s in start)]
        if sub.all():
            full += 1
        elif sub.any():
            partial += 1
    return full, partial


@pytest.mark.parametrize(
    ("grid", "block", "ratio"),
    [((8, 8, 8), 2, 0.5), ((8, 8, 8), 2, 0.37), ((6, 10), 2, 0.6), ((7, 9), 3, 0.75), ((5, 6, 7), 2, 0.6)],
)
def test_block_masking_whole_blocks(grid: tuple[int, ...], block: int, ratio: float) -> None:
    length = math.prod(grid)
    m = block_masking(6, grid, ratio, block, generator=_gen(3))
    _assert_consistent(m)
    assert torch.equal(m.mask.sum(1), torch.full((6,), num_masked(length, ratio)))
    for i in range(6):
        full, partial = _blocks_touched(m.mask[i], grid, block)
        assert partial <= 1
        assert full >= 1


def test_block_masking_is_blocky_and_seeded() -> None:
    a = block_masking(2, (8, 8, 8), 0.5, 2, generator=_gen(5))
    b = block_masking(2, (8, 8, 8), 0.5, 2, generator=_gen(5))
    c = block_masking(2, (8, 8, 8), 0.5, 2, generator=_gen(6))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    # 256 of 512 patches = exactly 32 whole 2x2x2 blocks, none split
    assert _blocks_touched(a.mask[0], (8, 8, 8), 2) == (32, 0)
    # anisotropic block size
    d = block_masking(1, (4, 6), 0.5, (1, 3), generator=_gen(7))
    rows = d.mask.reshape(4, 6)
    assert all(bool(r[:3].all() == r[:3].any()) and bool(r[3:].all() == r[3:].any()) for r in rows)


def test_patch_mask_to_voxels_matches_patchify() -> None:
    for grid, patch in [((3, 4), (2, 5)), ((2, 3, 4), (4, 2, 3))]:
        m = random_masking(2, math.prod(grid), 0.5, generator=_gen(8))
        voxels = patch_mask_to_voxels(m.mask, grid, patch)
        assert voxels.shape == (2, 1, *[g * p for g, p in zip(grid, patch)]) and voxels.dtype == torch.bool
        tokens = patchify(voxels.float(), patch)  # (B, L, prod(p)): every voxel of a patch equals its mask bit
        assert torch.equal(tokens, m.mask.float().unsqueeze(-1).expand_as(tokens))


def test_random_voxel_mask() -> None:
    v = random_voxel_mask(3, (32, 32, 16), 8, 0.6, generator=_gen(9))
    assert v.shape == (3, 1, 32, 32, 16) and v.dtype == torch.bool
    tokens = patchify(v.float(), 8)
    per_patch = tokens.mean(-1)
    assert torch.equal(tokens.amin(-1), tokens.amax(-1))  # constant within each mask patch
    assert torch.equal(per_patch.sum(1), torch.full((3,), float(num_masked(32, 0.6))))
    assert torch.equal(v, random_voxel_mask(3, (32, 32, 16), 8, 0.6, generator=_gen(9)))
    v2 = random_voxel_mask(2, (12, 20), (4, 5), 0.5, generator=_gen(9))
    assert v2.shape == (2, 1, 12, 20) and int(v2.sum()) == 2 * 6 * 20
    with pytest.raises(ValueError, match=r"\(30, 32\).*\(8, 8\)"):
        random_voxel_mask(1, (30, 32), 8, 0.5)
