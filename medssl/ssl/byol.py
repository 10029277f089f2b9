"""BYOL (Grill et al. 2020): online encoder -> projector -> predictor regresses the EMA target's projection of
the other view (normalised MSE, :func:`medssl.losses.byol.normalized_mse`), symmetrised over the two views.
No negatives; the predictor and the slowly moving target prevent collapse."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from medssl.losses.byol import normalized_mse
from medssl.models.heads import MLPHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.ssl.momentum import frozen_copy
from medssl.training.optim import OptimConfig


class BYOL(JointEmbeddingMethod):
    """BYOL.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        proj_hidden_dim, proj_dim: projector and predictor widths (paper: 4096 -> 256).
        base_momentum, final_momentum: target EMA schedule (paper: 0.996 -> 1.0).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "byol"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 proj_hidden_dim: int = 4096, proj_dim: int = 256, base_momentum: float = 0.996,
                 final_momentum: float = 1.0, optim: Optional[OptimConfig] = None, nonfinite: str = "stop",
                 max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, base_momentum, final_momentum, optim, nonfinite,
                         max_consecutive_skips, seed)
        self.projector = MLPHead(self.encoder.feature_dim, proj_hidden_dim, proj_dim, 2)
        self.predictor = MLPHead(proj_dim, proj_hidden_dim, proj_dim, 2)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_encoder, self.encoder), (self.target_projector, self.projector)]

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        (x1, x2, *_), _ = self.views(batch)
        x = torch.cat([x1, x2])
        h = self.encoder(x)
        p1, p2 = self.predictor(self.projector(h)).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(x)).chunk(2)
        loss = normalized_mse(p1, z2) + normalized_mse(p2, z1)
        return {"loss": loss, **self.collapse_metrics(h[: len(x1)])}
