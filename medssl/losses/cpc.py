"""InfoNCE of contrastive predictive coding over a grid of patch features (van den Oord et al. 2018; Hénaff et al.
2020, CPC v2), pure torch.

An image is cut into a grid of patches (:mod:`medssl.transforms.patch_grid`); every patch is encoded to a feature
``z[b, :, i, j(, l)]`` and a causal context network summarises, at each grid position, the patches *above* it along
grid axis 0 (rows; the first spatial axis). For an offset ``k``, a linear predictor turns the context at
``(b, i, j)`` into a prediction ``p_k[b, :, i, j]`` of the feature ``z[b, :, i + k, j]`` of the patch ``k`` rows
further down. The loss scores each prediction against **every** patch feature of the batch, at every position of
every image (the positive and ``B * L - 1`` negatives, ``L`` = patches per image):

    s(p, z) = <p, z> / T                       (or cos(p, z) / T with ``normalize=True``)
    l_k(b, i, j) = -log( exp s(p_k[b,i,j], z[b,i+k,j]) / sum_{b', u} exp s(p_k[b,i,j], z[b',u]) )

``l_k`` is averaged over the positions that have a target (rows ``i < g_0 - k``), and the loss is the mean over the
offsets. With the plain dot product and ``T = 1`` this is CPC's log-bilinear score ``z^T W_k c`` (``W_k`` is the
predictor). Gradients reach both the predictions and all candidate features (the encoder learns through both).

With ``gather_negatives`` the candidate features of all ranks are gathered (:func:`medssl.losses.gather.gather`,
gradients exact) so that the negatives span the global batch; every rank averages over its local predictions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medssl.losses.gather import gather_with_offset

__all__ = ["cpc_info_nce", "cpc_logits"]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, D, *grid) -> (B, *grid, D)."""
    return x.movedim(1, -1)


def cpc_logits(predictions: Sequence[torch.Tensor], features: torch.Tensor, offsets: Sequence[int],
               temperature: float = 1.0, normalize: bool = False,
               gather_negatives: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One ``(logits (M_k, N), labels (M_k,))`` pair per offset (see the module docstring).

    Args:
        predictions: one (B, D, *grid) tensor per offset: the prediction made at each grid position.
        features: (B, D, *grid) patch features ``z``: the candidates.
        offsets: the offset ``k >= 1`` along grid axis 0 of each prediction tensor (``k < g_0``).
        temperature: ``T`` of the scores.
        normalize: L2-normalise predictions and features (cosine scores) first.
        gather_negatives: candidates from all ranks (``N = B_global * L``); else ``N = B * L``.
    """
    if features.ndim < 3:
        raise ValueError(f"features must be (B, D, *grid), got shape {tuple(features.shape)}")
    if len(predictions) != len(offsets) or not offsets:
        raise ValueError(f"need one prediction tensor per offset, got {len(predictions)} and offsets {list(offsets)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    grid = tuple(features.shape[2:])
    if any(not 1 <= k < grid[0] for k in offsets):
        raise ValueError(f"offsets must lie in 1 .. {grid[0] - 1} (grid {grid}), got {list(offsets)}")
    for p in predictions:
        if p.shape != features.shape:
            raise ValueError(f"every prediction must have the features' shape {tuple(features.shape)}, got "
                             f"{tuple(p.shape)}")
    batch, dim = features.shape[:2]
    per_image, per_row = math.prod(grid), math.prod(grid[1:])
    candidates = _channels_last(features).reshape(batch * per_image, dim)
    if normalize:
        candidates = F.normalize(candidates, dim=1)
    candidates, start = gather_with_offset(candidates) if gather_negatives else (candidates, 0)
    # flat index (within the local batch) of every position (b, i, rest): b * per_image + i * per_row + rest
    index = torch.arange(batch * per_image, device=features.device).reshape(batch, grid[0], per_row)
    out = []
    for k, pred in zip(offsets, predictions):
        rows = grid[0] - k
        queries = _channels_last(pred)[:, :rows].reshape(batch * rows * per_row, dim)
        if normalize:
            queries = F.normalize(queries, dim=1)
        labels = index[:, k:].reshape(-1) + start  # the patch k rows below each query position
        out.append((queries @ candidates.T / temperature, labels))
    return out


def cpc_info_nce(predictions: Sequence[torch.Tensor], features: torch.Tensor, offsets: Sequence[int],
                 temperature: float = 1.0, normalize: bool = False, gather_negatives: bool = True) -> torch.Tensor:
    """CPC InfoNCE loss: cross-entropy of :func:`cpc_logits`, mean over positions, then over offsets."""
    pairs = cpc_logits(predictions, features, offsets, temperature, normalize, gather_negatives)
    return torch.stack([F.cross_entropy(logits, labels) for logits, labels in pairs]).mean()
