"""SwAV (Caron et al. 2020): online clustering by swapped assignments between multi-crop views.

Every crop -- the global views and the smaller local views of :class:`medssl.transforms.views.MultiViewTransform`,
as for DINO -- goes through the encoder, an MLP projector (:class:`medssl.models.heads.MLPHead`) and L2
normalisation, and is scored against ``K`` unit-norm prototypes (:class:`medssl.models.prototypes.Prototypes`). The
codes of each *global* crop are computed without gradient by Sinkhorn-Knopp (:func:`medssl.losses.swav.sinkhorn_knopp`:
epsilon 0.05, 3 iterations, the equal-partition constraint over the global batch under DDP); every other crop
predicts them with a softmax at temperature 0.1 (:func:`medssl.losses.swav.swapped_prediction_loss`). The prototypes
are renormalised before every training batch and frozen (gradient dropped) for the first
``freeze_prototypes_steps`` optimizer steps.

Small batches (fewer samples than prototypes) make the equal partition degenerate; ``queue_size > 0`` keeps the
embeddings of the last steps per global crop (:class:`medssl.losses.queue.FeatureQueue`, identical on every rank)
and adds their scores to the Sinkhorn problem once the queue is full and ``global_step >= queue_start_step``
(SwAV starts it after 15 epochs). The queue is filled and used in training only; validation computes the codes
from its batch alone.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.losses.gather import world
from medssl.losses.queue import FeatureQueue
from medssl.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from medssl.models.heads import MLPHead
from medssl.models.prototypes import Prototypes
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig


class SwAV(JointEmbeddingMethod):
    """SwAV.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        proj_hidden_dim, proj_dim, proj_layers, proj_batch_norm: the projector (paper: 2048 -> 128, 2 layers, BN).
        num_prototypes: ``K`` (paper: 3000 on ImageNet).
        temperature: softmax temperature of the predictions (0.1).
        epsilon, sinkhorn_iterations: Sinkhorn-Knopp (0.05, 3).
        num_global_crops: global views (codes are computed for these; ``data.views.init_args.num_global``).
        freeze_prototypes_steps: optimizer steps during which the prototypes are not updated.
        queue_size: embeddings kept per global crop for the codes (0 = no queue; paper: 3840 for batches of 256).
        queue_start_step: first optimizer step that uses the (full) queue.
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "swav"
    queue_rows: torch.Tensor

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 proj_hidden_dim: int = 2048, proj_dim: int = 128, proj_layers: int = 2, proj_batch_norm: bool = True,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, num_global_crops: int = 2, freeze_prototypes_steps: int = 0,
                 queue_size: int = 0, queue_start_step: int = 0, optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        if num_global_crops < 1 or queue_size < 0 or freeze_prototypes_steps < 0 or queue_start_step < 0:
            raise ValueError("need num_global_crops >= 1 and queue_size, freeze_prototypes_steps, queue_start_step "
                             f">= 0; got {num_global_crops}, {queue_size}, {freeze_prototypes_steps}, {queue_start_step}")
        self.projector = MLPHead(self.encoder.feature_dim, proj_hidden_dim, proj_dim, proj_layers,
                                 batch_norm=proj_batch_norm)
        self.prototypes = Prototypes(proj_dim, num_prototypes)
        self.queues = (nn.ModuleList(FeatureQueue(queue_size, proj_dim, seed=seed + i) for i in range(num_global_crops))
                       if queue_size > 0 else None)
        self.register_buffer("queue_rows", torch.zeros((), dtype=torch.long))  # rows enqueued per crop so far
        self.num_global_crops, self.temperature = num_global_crops, temperature
        self.epsilon, self.sinkhorn_iterations = epsilon, sinkhorn_iterations
        self.freeze_prototypes_steps, self.queue_size, self.queue_start_step = (freeze_prototypes_steps, queue_size,
                                                                                queue_start_step)

    def queue_in_use(self) -> bool:
        """Whether this training step adds the queue to the Sinkhorn problem (full queue, past the start step)."""
        return (self.queues is not None and self.training and int(self.queue_rows) >= self.queue_size
                and self.global_step >= self.queue_start_step)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        global_views, local_views = self.views(batch, min_global=self.num_global_crops)
        if len(global_views) != self.num_global_crops:
            raise MedsslError(Reason.BAD_CONFIG, f"SwAV was configured for {self.num_global_crops} global crops but "
                              f"the data module makes {len(global_views)}: set model.init_args.num_global_crops or "
                              "data.views.init_args.num_global")
        n = len(global_views[0])
        h = self.encoder(torch.cat(global_views))
        feats = [h]
        if local_views:  # one encoder forward per crop size, one projector forward for all crops
            feats.append(self.encoder(torch.cat(local_views)))
        z = F.normalize(self.projector(torch.cat(feats)), dim=1)
        scores = list(self.prototypes(z).chunk(len(global_views) + len(local_views)))
        use_queue = self.queue_in_use()
        with torch.no_grad():
            codes = [sinkhorn_knopp(scores[i], self.epsilon, self.sinkhorn_iterations,
                                    self.prototypes(self.queues[i].queue) if use_queue else None)
                     for i in range(self.num_global_crops)]
            used = torch.unique(torch.cat(codes).argmax(dim=1)).numel() / self.prototypes.num_prototypes
        loss = swapped_prediction_loss(scores, codes, self.temperature)
        if self.queues is not None and self.training:
            for i, queue in enumerate(self.queues):
                queue.enqueue(z[i * n : (i + 1) * n].detach())
            self.queue_rows += n * world()[1]
        return {"loss": loss, "prototypes_used": torch.tensor(used, device=loss.device),
                **self.collapse_metrics(h[:n])}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.prototypes.normalize_()

    def on_after_backward(self) -> None:
        if self.global_step < self.freeze_prototypes_steps:
            self.prototypes.weight.grad = None
