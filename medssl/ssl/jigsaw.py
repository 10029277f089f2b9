"""Jigsaw puzzles (Noroozi & Favaro 2016) and Rubik's cube (Zhuang et al. 2019): classify which permutation of a
fixed set shuffled the tiles (2D) / cubes (3D) of the image, and optionally which tiles were half-turned.

Per step: the image is cut into ``grid`` cells with a random ``jitter`` gap (:mod:`medssl.transforms.jigsaw`),
the tiles are shuffled by a uniformly drawn member of the max-Hamming permutation set, every tile is encoded by the
shared (siamese) encoder, and :class:`medssl.models.jigsaw_head.JigsawHead` classifies the permutation from the
tiles' features concatenated in position order (cross-entropy). With ``orientation`` (Rubik's cube) each shuffled
tile is also half-turned about each axis with probability 1/2 and the head predicts those bits (binary
cross-entropy, weighted by ``orientation_weight``). Rubik's cube+'s cube masking is not implemented.

Defaults per dimension: ``grid`` 3x3 in 2D, 2x2x2 in 3D. The encoder sees tiles, so the tile size must suit it
(a ResNet takes any size; a ViT needs ``img_size`` = tile size). The method reads the plain images: run it
without views (``data.views: null``).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

from medssl.errors import MedsslError, Reason
from medssl.models.jigsaw_head import JigsawHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.jigsaw import hamming_permutations, orientation_bits, random_jigsaw

__all__ = ["Jigsaw"]

DEFAULT_GRID = {2: 3, 3: 2}


class Jigsaw(JointEmbeddingMethod):
    """Jigsaw / Rubik's cube.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        grid: tiles per axis (an int for all axes, or one per axis; default 3 in 2D, 2 in 3D).
        jitter: tiles are this many voxels smaller than their grid cell per axis, at a random offset inside it.
        num_permutations, permutation_seed, permutation_criterion: the permutation set
            (:func:`medssl.transforms.jigsaw.hamming_permutations`; stored in the checkpoint as a buffer).
        orientation: Rubik's cube orientation task (per-tile half turns, multi-label).
        orientation_weight: weight of its binary cross-entropy in the loss.
        tile_dim, head_hidden_dim, head_layers, head_batch_norm: :class:`JigsawHead`.
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "jigsaw"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 grid: Union[int, list[int], None] = None, jitter: int = 0, num_permutations: int = 100,
                 permutation_seed: int = 0, permutation_criterion: str = "min", orientation: bool = False,
                 orientation_weight: float = 1.0, tile_dim: int = 128, head_hidden_dim: int = 512,
                 head_layers: int = 2, head_batch_norm: bool = True, optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        self.spatial_dims = int(self.encoder.spatial_dims)
        grid = DEFAULT_GRID[self.spatial_dims] if grid is None else grid
        self.grid = [int(grid)] * self.spatial_dims if isinstance(grid, int) else [int(g) for g in grid]
        if len(self.grid) != self.spatial_dims or min(self.grid) < 1 or math.prod(self.grid) < 2:
            raise MedsslError(Reason.BAD_CONFIG, f"jigsaw grid must have {self.spatial_dims} positive entries (one "
                              f"per spatial axis of the encoder) and at least 2 tiles, got {grid}")
        if jitter < 0:
            raise MedsslError(Reason.BAD_CONFIG, f"jigsaw jitter must be >= 0, got {jitter}")
        num_tiles = math.prod(self.grid)
        self.register_buffer("permutations", hamming_permutations(num_tiles, num_permutations, permutation_seed,
                                                                  permutation_criterion))
        self.jitter, self.orientation, self.orientation_weight = jitter, orientation, orientation_weight
        self.head = JigsawHead(self.encoder.feature_dim, num_tiles, num_permutations, tile_dim, head_hidden_dim,
                               head_layers, head_batch_norm, orientation_bits(self.spatial_dims) if orientation else 0)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.images(batch)
        sample = random_jigsaw(x, self.grid, self.permutations, generator, self.jitter, self.orientation)
        b, n = sample.tiles.shape[:2]
        h = self.encoder(sample.tiles.flatten(0, 1))  # siamese: every tile through the same encoder
        logits, orient = self.head(h.view(b, n, -1))
        loss = F.cross_entropy(logits, sample.labels)
        out = {"accuracy": (logits.detach().argmax(1) == sample.labels).float().mean()}
        if orient is not None:
            target = sample.flips.float()
            orient_loss = F.binary_cross_entropy_with_logits(orient, target)
            out["permutation_loss"] = loss
            out["orientation_loss"] = orient_loss
            out["orientation_accuracy"] = ((orient.detach() > 0).float() == target).float().mean()
            loss = loss + self.orientation_weight * orient_loss
        return {"loss": loss, **out, **self.collapse_metrics(h)}
