"""SimCLR (Chen et al. 2020): two views, an MLP projector, NT-Xent over the (globally gathered) batch.

Negatives are the other ``2N - 2`` views of the batch; under DDP the projections of all ranks are gathered
(:func:`medssl.losses.gather.gather`, gradients exact) and BatchNorm should be synchronised
(``trainer.sync_batchnorm: true``, GPU only), so a run on W devices equals a run on one with a W-times larger batch
(tested with group norm and no projector BatchNorm on CPU, where BatchNorm cannot be synchronised).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from medssl.losses.ntxent import nt_xent
from medssl.models.heads import MLPHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig


class SimCLR(JointEmbeddingMethod):
    """SimCLR.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        proj_hidden_dim, proj_dim, proj_layers: the projector (paper: 2048 -> 128, 2 layers).
        proj_batch_norm: BatchNorm in the projector (paper: yes, synchronised over devices; turn it off where
            BatchNorm cannot be synchronised, e.g. DDP on CPU, or for very small per-device batches).
        temperature: NT-Xent temperature (0.1-0.5; lower for larger batches).
        gather_negatives: use the negatives of every rank under DDP.
        separate_views: encode (and project) each view as its own batch, so BatchNorm normalises each view with its
            own statistics (lightly's training loop does this); default: both views in one batch, as the paper.
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "simclr"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 proj_hidden_dim: int = 2048, proj_dim: int = 128, proj_layers: int = 2, proj_batch_norm: bool = True,
                 temperature: float = 0.1, gather_negatives: bool = True, separate_views: bool = False,
                 optim: Optional[OptimConfig] = None, nonfinite: str = "stop", max_consecutive_skips: int = 10,
                 seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        self.projector = MLPHead(self.encoder.feature_dim, proj_hidden_dim, proj_dim, proj_layers,
                                 batch_norm=proj_batch_norm)
        self.temperature, self.gather_negatives = temperature, gather_negatives
        self.separate_views = bool(separate_views)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        (x1, x2, *_), _ = self.views(batch)
        if self.separate_views:
            h, h2 = self.encoder(x1), self.encoder(x2)
            z1, z2 = self.projector(h), self.projector(h2)
        else:
            h = self.encoder(torch.cat([x1, x2]))
            z1, z2 = self.projector(h).chunk(2)
        loss = nt_xent(z1, z2, self.temperature, gather_negatives=self.gather_negatives)
        return {"loss": loss, **self.collapse_metrics(h[: len(x1)])}
