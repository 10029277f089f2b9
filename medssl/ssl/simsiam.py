"""SimSiam (Chen & He 2021): a Siamese encoder + projector, a predictor on one branch and a stop-gradient on the
other (:func:`medssl.losses.byol.negative_cosine`), symmetrised. No negatives, no momentum encoder; the
stop-gradient alone prevents collapse, which the collapse metrics let you check."""
from __future__ import annotations

from typing import Any, Optional

import torch

from medssl.losses.byol import negative_cosine
from medssl.models.heads import MLPHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig


class SimSiam(JointEmbeddingMethod):
    """SimSiam.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        proj_dim, proj_layers: projector (paper: 2048, 3 layers, last BN).
        pred_hidden_dim: predictor bottleneck (paper: 512).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "simsiam"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 proj_dim: int = 2048, proj_layers: int = 3, pred_hidden_dim: int = 512,
                 optim: Optional[OptimConfig] = None, nonfinite: str = "stop", max_consecutive_skips: int = 10,
                 seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        self.projector = MLPHead(self.encoder.feature_dim, proj_dim, proj_dim, proj_layers, last_bn=True)
        self.predictor = MLPHead(proj_dim, pred_hidden_dim, proj_dim, 2)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        (x1, x2, *_), _ = self.views(batch)
        h = self.encoder(torch.cat([x1, x2]))
        z = self.projector(h)
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return {"loss": loss, **self.collapse_metrics(h[: len(x1)])}
