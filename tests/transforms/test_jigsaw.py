"""Jigsaw / Rubik's cube transform: the permutation set (greedy max-Hamming selection against a naive reference and
a brute-force optimum, no duplicates, the claimed minimum distance, determinism), tiles that reassemble into the
image, unpermuting with the true permutation restores the original order exactly (2D and 3D), jitter offsets stay
inside their cells, and orientation half turns undo themselves."""
from __future__ import annotations

import itertools

import pytest
import torch

from medssl.transforms.jigsaw import (assemble_tiles, extract_tiles, flip_tiles, hamming_permutations,
                                      min_hamming_distance, permute_tiles, random_jigsaw, tile_layout,
                                      unpermute_tiles)


def hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


def naive_greedy(num_tiles: int, k: int, first: int, criterion: str) -> list[tuple[int, ...]]:
    """The greedy selection written as plain loops over the lexicographically ordered permutations."""
    cands = list(itertools.permutations(range(num_tiles)))
    chosen = [first]
    while len(chosen) < k:
        best, best_score = None, -1
        for i, c in enumerate(cands):
            if i in chosen:
                continue
            dists = [hamming(c, cands[j]) for j in chosen]
            score = min(dists) if criterion == "min" else sum(dists)
            if score > best_score:  # strict: the first maximum wins
                best, best_score = i, score
        chosen.append(best)
    return [cands[i] for i in chosen]


@pytest.mark.parametrize("criterion", ["min", "mean"])
@pytest.mark.parametrize("num_tiles, k", [(4, 5), (4, 8), (5, 7)])
def test_greedy_matches_naive_reference(num_tiles: int, k: int, criterion: str) -> None:
    perms = hamming_permutations(num_tiles, k, seed=1, criterion=criterion)
    cands = list(itertools.permutations(range(num_tiles)))
    first = cands.index(tuple(perms[0].tolist()))
    assert [tuple(p) for p in perms.tolist()] == naive_greedy(num_tiles, k, first, criterion)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_greedy_min_distance_against_brute_force_optimum(k: int) -> None:
    cands = list(itertools.permutations(range(4)))
    optimum = max(min(hamming(a, b) for a, b in itertools.combinations(subset, 2))
                  for subset in itertools.combinations(cands, k))
    for seed in range(3):
        got = min_hamming_distance(hamming_permutations(4, k, seed))
        assert got <= optimum
        if k <= 4:  # 4 mutually disjoint permutations (a Latin square) exist and greedy finds them
            assert got == optimum == 4


@pytest.mark.parametrize("num_tiles, k, claimed", [(9, 100, 6), (8, 64, 6), (12, 20, 10)])
def test_set_has_claimed_min_distance_no_duplicates_and_is_deterministic(num_tiles: int, k: int, claimed: int) -> None:
    perms = hamming_permutations(num_tiles, k, seed=0)
    assert perms.shape == (k, num_tiles) and perms.dtype == torch.long
    assert len({tuple(p) for p in perms.tolist()}) == k
    assert all(sorted(p) == list(range(num_tiles)) for p in perms.tolist())
    naive_min = min(hamming(a, b) for a, b in itertools.combinations(perms.tolist(), 2))
    assert min_hamming_distance(perms) == naive_min >= claimed
    assert torch.equal(perms, hamming_permutations(num_tiles, k, seed=0))
    assert not torch.equal(perms, hamming_permutations(num_tiles, k, seed=1))
    with pytest.raises(ValueError, match="exceeds"):
        hamming_permutations(3, 7)


@pytest.mark.parametrize("shape, grid", [((12, 12), (3, 3)), ((8, 12, 6), (2, 3, 2)), ((9, 9, 9), (2, 2, 2))])
def test_tiles_reassemble_and_unpermute_restores_order(shape, grid) -> None:
    x = torch.rand(3, 2, *shape)
    tiles = extract_tiles(x, grid)
    origin, cell, tile = tile_layout(shape, grid)
    assert tiles.shape == (3, len(list(itertools.product(*map(range, grid)))), 2, *tile)
    inner = x[(slice(None), slice(None)) + tuple(slice(o, o + g * c) for o, g, c in zip(origin, grid, cell))]
    assert torch.equal(assemble_tiles(tiles, grid), inner)
    num_tiles = tiles.shape[1]
    sample = random_jigsaw(x, grid, hamming_permutations(num_tiles, 6), torch.Generator().manual_seed(0))
    assert torch.equal(sample.perms, hamming_permutations(num_tiles, 6)[sample.labels])
    restored = unpermute_tiles(sample.tiles, sample.perms)
    assert torch.equal(restored, tiles)
    assert torch.equal(assemble_tiles(restored, grid), inner)
    # position i holds tile perm[i]
    b, i = 1, 2
    assert torch.equal(sample.tiles[b, i], tiles[b, sample.perms[b, i]])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_jitter_offsets_stay_inside_cells_and_are_seeded(spatial_dims: int) -> None:
    size, grid, jitter = 12, [2] * spatial_dims, 2
    # voxel value = its flat index, so a tile's first voxel tells where it was cut
    x = torch.arange(float(size ** spatial_dims)).view(1, 1, *(size,) * spatial_dims).repeat(4, 1, *[1] * spatial_dims)
    tiles = extract_tiles(x, grid, jitter, torch.Generator().manual_seed(0))
    assert torch.equal(tiles, extract_tiles(x, grid, jitter, torch.Generator().manual_seed(0)))
    assert tiles.shape[-spatial_dims:] == (size // 2 - jitter,) * spatial_dims
    offsets = set()
    for b in range(4):
        for n, cell in enumerate(itertools.product(range(2), repeat=spatial_dims)):
            corner = int(tiles[b, n, 0][(0,) * spatial_dims])
            coords = [(corner // size ** (spatial_dims - 1 - d)) % size for d in range(spatial_dims)]
            offset = tuple(c - 6 * g for c, g in zip(coords, cell))
            assert all(0 <= o <= jitter for o in offset)
            offsets.add(offset)
    assert len(offsets) > 1
    centred = extract_tiles(x, grid, jitter)  # no generator: centred in the cells
    assert int(centred[0, 0, 0][(0,) * spatial_dims]) == sum(size ** d for d in range(spatial_dims))


@pytest.mark.parametrize("spatial_dims, bits", [(2, 1), (3, 2)])
def test_orientation_flips_are_half_turns_and_undo_themselves(spatial_dims: int, bits: int) -> None:
    x = torch.rand(2, 1, *(8,) * spatial_dims)
    grid = [2] * spatial_dims
    sample = random_jigsaw(x, grid, hamming_permutations(2 ** spatial_dims, 5), torch.Generator().manual_seed(1),
                           orientation=True)
    assert sample.flips.shape == (2, 2 ** spatial_dims, bits) and sample.flips.any() and not sample.flips.all()
    unflipped = flip_tiles(sample.tiles, sample.flips)
    assert torch.equal(unpermute_tiles(unflipped, sample.perms), extract_tiles(x, grid))
    t = sample.tiles[:1, :1]
    for a in range(bits):
        one = torch.zeros(1, 1, bits, dtype=torch.bool)
        one[..., a] = True
        plane = [d + 3 for d in range(spatial_dims) if d != a or spatial_dims == 2]
        assert torch.equal(flip_tiles(t, one), torch.rot90(t, 2, plane))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="grid"):
        extract_tiles(torch.rand(1, 1, 8, 8), [2, 2, 2])
    with pytest.raises(ValueError, match="no tile"):
        extract_tiles(torch.rand(1, 1, 8, 8), [4, 4], jitter=2)
    with pytest.raises(ValueError, match="perms"):
        permute_tiles(torch.rand(2, 4, 1, 3, 3), torch.zeros(2, 3, dtype=torch.long))
