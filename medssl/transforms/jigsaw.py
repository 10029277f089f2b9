"""Jigsaw puzzles (Noroozi & Favaro 2016) and Rubik's cube (Zhuang et al. 2019) as pure, seedable functions.

An image is cut into a regular grid of tiles (2D, e.g. 3x3) or cubes (3D, e.g. 2x2x2); the tiles are shuffled by
one permutation of a fixed set and the network classifies which one. Everything N-D, row-major over the grid:

* :func:`hamming_permutations` -- the permutation set, chosen greedily so that its members are far apart in
  Hamming distance (number of positions where two permutations differ), deterministic in
  ``(num_tiles, num_permutations, seed, criterion)``. ``criterion="min"`` (default) adds, at each step, the
  candidate whose *minimum* distance to the chosen set is largest (farthest-point selection: maximises the
  guaranteed separation between classes); ``"mean"`` uses the *average* distance, Noroozi & Favaro's Algorithm 1.
  The first member is drawn with ``seed``; ties go to the lexicographically first candidate. Candidates are all
  ``N!`` permutations for ``N <= 10`` tiles, else ``pool`` random permutations.
* :func:`extract_tiles` -- ``(B, C, *spatial) -> (B, N, C, *tile)``: grid cells of ``spatial // grid`` voxels (the
  grid is centred; a remainder is cropped), tiles ``jitter`` voxels smaller than a cell per axis at a random
  offset inside it (the gap stops the network from solving the puzzle by continuing edges across tiles).
* :func:`permute_tiles` / :func:`unpermute_tiles` -- position ``i`` receives tile ``perm[i]``; unpermuting with the
  same permutation restores the original order exactly.
* :func:`flip_tiles` -- Rubik's cube *orientation*: a half turn (180 degrees) of individual tiles, one bit per
  axis: 2D, 1 bit (half turn in the image plane); 3D, 2 bits (half turns about spatial axes 0 and 1, Rubik's
  "horizontal / vertical" rotation; composing both gives the half turn about axis 2). Half turns are flips of the
  two other axes, so they commute, keep any tile shape, and undo themselves.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

__all__ = ["JigsawSample", "hamming_permutations", "min_hamming_distance", "tile_layout", "extract_tiles",
           "permute_tiles", "unpermute_tiles", "assemble_tiles", "orientation_bits", "flip_tiles",
           "random_jigsaw"]

CRITERIA = ("min", "mean")
MAX_ENUMERATED_TILES = 10


@functools.lru_cache(maxsize=16)
def _permutation_set(num_tiles: int, num_permutations: int, seed: int, criterion: str, pool: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if num_tiles <= MAX_ENUMERATED_TILES:
        cands = np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)
    else:
        cands = torch.rand(pool, num_tiles, generator=g).argsort(1).numpy().astype(np.int8)
        cands = np.unique(cands, axis=0)  # sorted: lexicographic order, as in the enumerated case
    if num_permutations > len(cands):
        raise ValueError(f"num_permutations={num_permutations} exceeds the {len(cands)} candidate permutations of "
                         f"{num_tiles} tiles")
    columns = np.ascontiguousarray(cands.T)  # (N, M): one fast comparison per tile position

    def distances(j: int) -> np.ndarray:
        d = np.zeros(len(cands), dtype=np.int32)
        for col in columns:
            d += col != col[j]
        return d

    first = int(torch.randint(len(cands), (1,), generator=g))
    chosen = [first]
    score = distances(first)  # min (or sum) of the distances to the chosen set
    for _ in range(num_permutations - 1):
        masked = score.copy()
        masked[chosen] = -1
        j = int(np.argmax(masked))  # first maximum: lexicographic tie-break
        chosen.append(j)
        score = np.minimum(score, distances(j)) if criterion == "min" else score + distances(j)
    return torch.from_numpy(cands[chosen].astype(np.int64))


def hamming_permutations(num_tiles: int, num_permutations: int, seed: int = 0, criterion: str = "min",
                         pool: int = 100_000) -> torch.Tensor:
    """``(num_permutations, num_tiles)`` long tensor: the permutation set (see module docstring)."""
    if num_tiles < 2:
        raise ValueError(f"num_tiles must be >= 2, got {num_tiles}")
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be >= 1, got {num_permutations}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return _permutation_set(int(num_tiles), int(num_permutations), int(seed), criterion, int(pool)).clone()


def min_hamming_distance(perms: torch.Tensor) -> int:
    """Smallest Hamming distance between two different rows of ``perms`` (``(P, N)``; P >= 2)."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def tile_layout(spatial_shape: Sequence[int], grid: Sequence[int],
                jitter: int = 0) -> tuple[list[int], list[int], list[int]]:
    """``(origin, cell, tile)`` sizes per axis: the grid's first voxel, the cell size and the tile size."""
    if len(grid) != len(spatial_shape):
        raise ValueError(f"grid {list(grid)} must have one entry per spatial axis of shape {list(spatial_shape)}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    cell = [s // g for s, g in zip(spatial_shape, grid)]
    tile = [c - jitter for c in cell]
    if min(grid) < 1 or min(tile) < 1:
        raise ValueError(f"grid {list(grid)} with jitter {jitter} leaves no tile in an image of {list(spatial_shape)}"
                         f" (cells {cell})")
    origin = [(s - g * c) // 2 for s, g, c in zip(spatial_shape, grid, cell)]
    return origin, cell, tile


def extract_tiles(x: torch.Tensor, grid: Sequence[int], jitter: int = 0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(B, C, *spatial) -> (B, N, C, *tile)``, tiles in row-major grid order (see module docstring). Offsets
    inside the cells are drawn with ``generator`` (each item and tile its own), or centred when it is ``None``."""
    dims = x.ndim - 2
    origin, cell, tile = tile_layout(x.shape[2:], grid, jitter)
    b, n = x.shape[0], math.prod(grid)
    if generator is not None and jitter > 0:
        offsets = torch.randint(0, jitter + 1, (b, n, dims), generator=generator, device=generator.device)
        offsets = offsets.to(x.device)
    else:
        offsets = torch.full((b, n, dims), jitter // 2, dtype=torch.long, device=x.device)
    cells = torch.cartesian_prod(*[torch.arange(g, device=x.device) for g in grid]).reshape(n, dims)
    start = torch.tensor(origin, device=x.device) + cells * torch.tensor(cell, device=x.device) + offsets  # (B,N,D)
    index: list[torch.Tensor] = [torch.arange(b, device=x.device).view(b, 1, *[1] * dims)]
    for d in range(dims):
        shape = [1] * dims
        shape[d] = tile[d]
        index.append(start[..., d].view(b, n, *[1] * dims) + torch.arange(tile[d], device=x.device).view(shape))
    out = x.movedim(1, -1)[tuple(index)]  # (B, N, *tile, C)
    return out.movedim(-1, 2)


def permute_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Position ``i`` of item ``b`` receives tile ``perms[b, i]`` (``tiles`` (B, N, ...), ``perms`` (B, N))."""
    if perms.shape != tiles.shape[:2]:
        raise ValueError(f"perms must have shape {tuple(tiles.shape[:2])}, got {tuple(perms.shape)}")
    return tiles[torch.arange(tiles.shape[0], device=tiles.device)[:, None], perms.to(tiles.device)]


def unpermute_tiles(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Undo :func:`permute_tiles`: ``unpermute_tiles(permute_tiles(t, p), p) == t``."""
    return permute_tiles(shuffled, torch.argsort(perms.to(shuffled.device), dim=1))


def assemble_tiles(tiles: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(B, N, C, *tile) -> (B, C, *(grid * tile))``: the tiles laid out on the grid (row-major)."""
    b, n, c, *tile = tiles.shape
    dims = len(tile)
    if len(grid) != dims or math.prod(grid) != n:
        raise ValueError(f"grid {list(grid)} does not match {n} tiles of {dims}-D")
    x = tiles.reshape(b, *grid, c, *tile)  # (B, g0, g1, .., C, t0, t1, ..)
    order = [0, dims + 1] + [i for d in range(dims) for i in (1 + d, dims + 2 + d)]
    return x.permute(order).reshape(b, c, *[g * t for g, t in zip(grid, tile)])


def orientation_bits(spatial_dims: int) -> int:
    """Rubik's cube orientation bits per tile: 1 in 2D, 2 in 3D."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims - 1


def flip_tiles(tiles: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Half-turn tile ``(b, i)`` about axis ``a`` where ``bits[b, i, a]`` (``tiles`` (B, N, C, *tile), ``bits``
    (B, N, A) bool, A = :func:`orientation_bits`); its own inverse."""
    dims = tiles.ndim - 3
    if bits.shape != (*tiles.shape[:2], orientation_bits(dims)):
        raise ValueError(f"bits must have shape {(*tiles.shape[:2], orientation_bits(dims))}, got {tuple(bits.shape)}")
    out = tiles
    for a in range(bits.shape[-1]):
        # a half turn about spatial axis a (2D: in the plane) flips the other axes
        flip = [3 + d for d in range(dims) if d != a or dims == 2]
        mask = bits[..., a].to(tiles.device).view(*bits.shape[:2], *[1] * (tiles.ndim - 2))
        out = torch.where(mask, out.flip(flip), out)
    return out


@dataclass(frozen=True)
class JigsawSample:
    """A shuffled batch: ``tiles`` (B, N, C, *tile) in shuffled order, ``labels`` (B,) indices into the
    permutation set, ``perms`` (B, N) the permutations, ``flips`` (B, N, A) bool orientation bits or ``None``."""

    tiles: torch.Tensor
    labels: torch.Tensor
    perms: torch.Tensor
    flips: Optional[torch.Tensor] = None


def random_jigsaw(x: torch.Tensor, grid: Sequence[int], permutations: torch.Tensor,
                  generator: Optional[torch.Generator] = None, jitter: int = 0, orientation: bool = False,
                  flip_probability: float = 0.5) -> JigsawSample:
    """Cut ``x`` (B, C, *spatial) into tiles, shuffle each item by a uniformly drawn member of ``permutations``
    and, with ``orientation``, half-turn each shuffled tile about each axis with ``flip_probability``."""
    if permutations.ndim != 2 or permutations.shape[1] != math.prod(grid):
        raise ValueError(f"permutations must be (P, {math.prod(grid)}) for grid {list(grid)}, got "
                         f"{tuple(permutations.shape)}")
    device = generator.device if generator is not None else x.device
    tiles = extract_tiles(x, grid, jitter, generator)
    labels = torch.randint(0, len(permutations), (x.shape[0],), generator=generator, device=device).to(x.device)
    perms = permutations.to(x.device)[labels]
    shuffled = permute_tiles(tiles, perms)
    flips = None
    if orientation:
        shape = (*shuffled.shape[:2], orientation_bits(x.ndim - 2))
        flips = (torch.rand(shape, generator=generator, device=device) < flip_probability).to(x.device)
        shuffled = flip_tiles(shuffled, flips)
    return JigsawSample(shuffled, labels, perms, flips)
