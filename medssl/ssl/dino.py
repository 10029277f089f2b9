"""DINO (Caron et al. 2021): self-distillation with no labels, with multi-crop.

A student (encoder + :class:`medssl.models.heads.DINOHead`) sees every view -- the global crops and the small local
crops (ViT encoders interpolate their position table for the local size) -- and matches, by cross-entropy, the
teacher's sharpened (low temperature) and centred output on the *other* global crops
(:class:`medssl.losses.dino.DINOLoss`). The teacher is the EMA of the student (:mod:`medssl.ssl.momentum`) and only
sees global crops. Centering and sharpening together avoid collapse; the centre is a buffer, so resume is exact.

The exported encoder is the teacher's (the better one in the paper, and what DINO evaluates).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.losses.dino import DINOLoss
from medssl.models.heads import DINOHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.ssl.momentum import frozen_copy
from medssl.training.optim import OptimConfig


class DINO(JointEmbeddingMethod):
    """DINO.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod`.
        out_dim: prototypes of the head (paper 65536; a few thousand for small data).
        hidden_dim, bottleneck_dim, head_layers, head_batch_norm, norm_last_layer: the head (:class:`DINOHead`).
        num_global_crops: global views the teacher sees (``data.views.init_args.num_global`` must match).
        student_temp: student softmax temperature (0.1).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: teacher temperature, linearly warmed up
            from ``warmup_teacher_temp`` over the first epochs (0.04 -> 0.04..0.07 over 30 epochs in the paper).
        center_momentum: EMA rate of the teacher-output centre (0.9).
        freeze_last_layer_epochs: epochs during which the head's last layer is not updated (1; stabilises).
        base_momentum, final_momentum: teacher EMA schedule (0.996 -> 1.0).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "dino"
    encoder_attr = "teacher_encoder"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256, head_layers: int = 3,
                 head_batch_norm: bool = False, norm_last_layer: bool = True, num_global_crops: int = 2,
                 student_temp: float = 0.1,
                 teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, warmup_teacher_temp_epochs: int = 0,
                 center_momentum: float = 0.9, freeze_last_layer_epochs: int = 1, base_momentum: float = 0.996,
                 final_momentum: float = 1.0, optim: Optional[OptimConfig] = None, nonfinite: str = "stop",
                 max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(encoder, encoder_kwargs, base_momentum, final_momentum, optim, nonfinite,
                         max_consecutive_skips, seed)
        self.head = DINOHead(self.encoder.feature_dim, out_dim, hidden_dim, bottleneck_dim, head_layers,
                             head_batch_norm, norm_last_layer)
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_head = frozen_copy(self.head)
        self.num_global_crops = num_global_crops
        self.criterion = DINOLoss(out_dim, num_global_crops=num_global_crops, student_temp=student_temp,
                                  teacher_temp=teacher_temp,
                                  warmup_teacher_temp=warmup_teacher_temp,
                                  warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
                                  center_momentum=center_momentum)
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.teacher_encoder, self.encoder), (self.teacher_head, self.head)]

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        global_views, local_views = self.views(batch, min_global=self.num_global_crops)
        if len(global_views) != self.num_global_crops:
            raise MedsslError(Reason.BAD_CONFIG, f"DINO was configured for {self.num_global_crops} global crops but the "
                              f"data module makes {len(global_views)}: set model.init_args.num_global_crops or "
                              "data.views.init_args.num_global")
        h = self.encoder(torch.cat(global_views))
        feats = [h]
        if local_views:  # one encoder forward per crop size (local crops are smaller), one head forward for all
            feats.append(self.encoder(torch.cat(local_views)))
        student_out = list(self.head(torch.cat(feats)).chunk(len(global_views) + len(local_views)))
        with torch.no_grad():
            teacher_out = list(self.teacher_head(self.teacher_encoder(torch.cat(global_views)))
                               .chunk(len(global_views)))
        epoch = self.fractional_epoch()
        loss = self.criterion(student_out, teacher_out, epoch=epoch)
        temp = torch.tensor(self.criterion.teacher_temperature(epoch), device=loss.device)
        return {"loss": loss, "teacher_temp": temp, **self.collapse_metrics(h[: len(global_views[0])])}

    def fractional_epoch(self) -> float:
        """Training progress in epochs (``global_step / steps per epoch``), for the teacher-temperature warm-up."""
        if self._trainer is None or not self.trainer.max_epochs or self.trainer.max_epochs < 1:
            return float(self.current_epoch)
        total = self.trainer.estimated_stepping_batches
        per_epoch = total / self.trainer.max_epochs if total and total != float("inf") else 0
        return self.global_step / per_epoch if per_epoch else float(self.current_epoch)

    def on_after_backward(self) -> None:
        if self.current_epoch < self.freeze_last_layer_epochs:
            for p in self.head.last_layer_parameters:
                p.grad = None
