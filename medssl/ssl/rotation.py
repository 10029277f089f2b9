"""Rotation prediction (Gidaris et al. 2018; 3D: Taleb et al. 2020): classify which right-angle rotation was
applied to the image.

Each item of the batch is rotated by a uniformly drawn class of :mod:`medssl.transforms.rotation` (2D: 4 quarter
turns; 3D: 10 classes, identity + 3 quarter turns about each axis), the encoder's pooled features go through a
linear or MLP classifier, and the loss is the cross-entropy (``accuracy`` is logged next to it). Quarter turns
swap axes, so non-square / non-cubic inputs are centre-cropped to the largest square / cube first
(``crop_to_cube``; with ``False`` such inputs raise). The method reads the plain images: run it without views
(``data.views: null``).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from medssl.models.heads import MLPHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.rotation import center_crop_to_cube, num_rotations, random_rotation

__all__ = ["RotationPrediction"]


class RotationPrediction(JointEmbeddingMethod):
    """Rotation prediction.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod` (its ``spatial_dims`` picks 4 or 10 classes).
        head_hidden_dim, head_layers, head_batch_norm: the classifier (:class:`MLPHead`; ``head_layers=1`` is a
            linear layer on the pooled features).
        crop_to_cube: centre-crop non-square / non-cubic inputs to the largest square / cube (see module docstring).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "rotation"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 head_hidden_dim: int = 256, head_layers: int = 2, head_batch_norm: bool = True,
                 crop_to_cube: bool = True, optim: Optional[OptimConfig] = None, nonfinite: str = "stop",
                 max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        self.spatial_dims = int(self.encoder.spatial_dims)
        self.num_classes = num_rotations(self.spatial_dims)
        self.head = MLPHead(self.encoder.feature_dim, head_hidden_dim, self.num_classes, head_layers,
                            batch_norm=head_batch_norm)
        self.crop_to_cube = crop_to_cube

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.images(batch)
        if self.crop_to_cube:
            x = center_crop_to_cube(x, self.spatial_dims)
        rotated, labels = random_rotation(x, generator)
        h = self.encoder(rotated)
        logits = self.head(h)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy, **self.collapse_metrics(h)}
