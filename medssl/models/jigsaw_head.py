"""Head of the jigsaw / Rubik's cube pretext task: a siamese per-tile layer, then a classifier over the
concatenation of the tiles' features in their (shuffled) order.

As in Noroozi & Favaro's context-free network: every tile goes through the shared encoder and a shared linear
layer (``fc6``, ``tile_dim`` wide); the tile embeddings are concatenated in position order, so the classifier
(``fc7``/``fc8``, an :class:`medssl.models.heads.MLPHead`) sees which tile sits where and predicts the index of the
permutation. With orientation bits (Rubik's cube, Zhuang et al. 2019) a shared linear layer predicts, from each
tile's embedding, whether that tile was half-turned about each axis (one logit per bit, multi-label).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from medssl.models.heads import MLPHead

__all__ = ["JigsawHead"]


class JigsawHead(nn.Module):
    """Per-tile embedding + permutation classifier (+ per-tile orientation logits).

    Args:
        in_dim: encoder feature width.
        num_tiles: tiles per item ``N``.
        num_permutations: classes (size of the permutation set).
        tile_dim: width of the shared per-tile layer.
        hidden_dim, num_layers, batch_norm: the classifier over the ``N * tile_dim`` concatenation
            (:class:`MLPHead`; ``num_layers=1`` is linear).
        orientation_bits: orientation logits per tile (0: none; 1 in 2D, 2 in 3D for Rubik's cube).
    """

    def __init__(self, in_dim: int, num_tiles: int, num_permutations: int, tile_dim: int = 256,
                 hidden_dim: int = 1024, num_layers: int = 2, batch_norm: bool = True, orientation_bits: int = 0):
        super().__init__()
        if min(in_dim, num_tiles, num_permutations, tile_dim) < 1 or orientation_bits < 0:
            raise ValueError("JigsawHead needs positive in_dim, num_tiles, num_permutations, tile_dim and "
                             f"orientation_bits >= 0, got {in_dim}, {num_tiles}, {num_permutations}, {tile_dim}, "
                             f"{orientation_bits}")
        self.num_tiles = num_tiles
        self.tile = nn.Sequential(nn.Linear(in_dim, tile_dim), nn.ReLU(inplace=True))
        self.classifier = MLPHead(num_tiles * tile_dim, hidden_dim, num_permutations, num_layers, batch_norm)
        self.orientation = nn.Linear(tile_dim, orientation_bits) if orientation_bits else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``features`` (B, N, in_dim) in shuffled position order -> (permutation logits (B, P), orientation
        logits (B, N, A) or ``None``)."""
        if features.ndim != 3 or features.shape[1] != self.num_tiles:
            raise ValueError(f"expected features (B, {self.num_tiles}, D), got {tuple(features.shape)}")
        z = self.tile(features)
        logits = self.classifier(z.flatten(1))
        return logits, (self.orientation(z) if self.orientation is not None else None)
