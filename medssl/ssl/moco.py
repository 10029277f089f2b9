"""MoCo v3 (Chen, Xie & He 2021) and the MoCo v2 queue variant (Chen et al. 2020).

The query branch (encoder -> projector -> predictor) is trained; the key branch is its momentum (EMA) copy
(:mod:`medssl.ssl.momentum`). Negatives:

* ``queue_size == 0`` -- **MoCo v3**: the keys of the other items of the batch, gathered over all ranks, with a
  symmetric InfoNCE ``(ctr(q1, k2) + ctr(q2, k1)) * 2 tau`` (:func:`medssl.losses.ntxent.info_nce`);
* ``queue_size > 0`` -- **MoCo v2**: a FIFO queue of keys from previous steps (:class:`medssl.losses.queue.FeatureQueue`,
  saved in checkpoints so resume is exact), usually without a predictor (``predictor_layers: 0``) and with
  ``base_momentum: 0.999``, ``final_momentum: 0.999``. MoCo v2's shuffled BatchNorm is replaced by synchronised
  BatchNorm under DDP (``trainer.sync_batchnorm``) or group norm in the encoder.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from medssl.losses.ntxent import info_nce, info_nce_queue
from medssl.losses.queue import FeatureQueue
from medssl.models.heads import MLPHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.ssl.momentum import frozen_copy
from medssl.training.optim import OptimConfig


class MoCo(JointEmbeddingMethod):
    """MoCo v3 (default) or v2 (``queue_size > 0``).

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        proj_hidden_dim, proj_dim, proj_layers: projector (v3: 4096 -> 256, 3 layers with a last BN).
        predictor_layers: predictor depth (v3: 2; 0 = no predictor, as in v2).
        pred_hidden_dim: predictor width.
        temperature: InfoNCE temperature (v3: 0.2; v2: 0.2).
        queue_size: 0 for in-batch negatives (v3); > 0 for a key queue of that size (v2, e.g. 65536).
        base_momentum, final_momentum: key-encoder EMA schedule (v3: 0.99 -> 1.0).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "moco"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 proj_hidden_dim: int = 4096, proj_dim: int = 256, proj_layers: int = 3, predictor_layers: int = 2,
                 pred_hidden_dim: int = 4096, temperature: float = 0.2, queue_size: int = 0,
                 base_momentum: float = 0.99, final_momentum: float = 1.0, optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, base_momentum, final_momentum, optim, nonfinite,
                         max_consecutive_skips, seed)
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.projector = MLPHead(self.encoder.feature_dim, proj_hidden_dim, proj_dim, proj_layers, last_bn=True)
        self.predictor: nn.Module = (MLPHead(proj_dim, pred_hidden_dim, proj_dim, predictor_layers)
                                     if predictor_layers > 0 else nn.Identity())
        self.momentum_encoder = frozen_copy(self.encoder)
        self.momentum_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(queue_size, proj_dim) if queue_size > 0 else None
        self.temperature = temperature

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.momentum_encoder, self.encoder), (self.momentum_projector, self.projector)]

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        (x1, x2, *_), _ = self.views(batch)
        x = torch.cat([x1, x2])
        h = self.encoder(x)
        q1, q2 = self.predictor(self.projector(h)).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_encoder(x)).chunk(2)
        t = self.temperature
        if self.queue is None:
            loss = (info_nce(q1, k2, t) + info_nce(q2, k1, t)) * (2 * t)
        else:
            queue = self.queue.queue.clone()
            loss = 0.5 * (info_nce_queue(q1, k2, queue, t) + info_nce_queue(q2, k1, queue, t))
            if self.training:
                self.queue.enqueue(torch.cat([k1, k2]))
        return {"loss": loss, **self.collapse_metrics(h[: len(x1)])}
