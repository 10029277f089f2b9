"""DINO self-distillation loss with a centred, sharpened teacher, pure torch.

For teacher outputs ``t_i`` of the global crops ``i`` and student outputs ``s_j`` of all crops ``j`` (global crops
first, then the local crops), both (B, K) logits over ``K = out_dim`` prototypes:

    P_t,i = softmax((t_i - c) / T_t)          (detached: the teacher gets no gradient)
    log P_s,j = log_softmax(s_j / T_s)
    L = mean over pairs (i, j), j != i, of  mean_b  -sum_k P_t,i[b, k] * log P_s,j[b, k].

The pair ``j == i`` (a global crop predicting itself) is skipped. Centring with ``c`` (an EMA of the teacher's mean
output) and sharpening with a low teacher temperature ``T_t`` together prevent collapse. ``T_t`` is warmed up
linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs (fractional
epochs allowed) and stays constant after; see :meth:`DINOLoss.teacher_temperature`. The reference implementation
(facebookresearch/dino) indexes ``np.linspace(warmup, final, warmup_epochs)`` by the integer epoch and so reaches
``teacher_temp`` one epoch earlier; here epoch ``warmup_teacher_temp_epochs`` is the first at ``teacher_temp``.

The epoch is an argument of :meth:`DINOLoss.forward`, not hidden state: the method passes its current (fractional)
epoch, so a resumed run computes the same temperatures.

After the loss, in training mode only, the center is updated (no gradient) with the mean teacher output over the
*global* batch, i.e. over all global crops of all ranks:

    c <- m * c + (1 - m) * mean(t over all ranks and crops).

The global mean is a ratio of all-reduced sums and counts, so it is exact also when ranks hold different batch
sizes. ``center`` is a buffer, saved in the ``state_dict``. Validation (``eval()``) never moves it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses.gather import all_reduce_mean

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """DINO cross-entropy between centred/sharpened teacher and student distributions over ``out_dim`` prototypes.

    Args:
        out_dim: number of prototypes ``K`` (the last dim of every head output).
        num_global_crops: number of global crops; the teacher sees exactly these, the student sees them first.
        student_temp: student temperature ``T_s``.
        teacher_temp: teacher temperature ``T_t`` after the warm-up.
        warmup_teacher_temp: teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: length of the linear warm-up in epochs (0: no warm-up).
        center_momentum: EMA momentum ``m`` of the center.
    """

    center: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        num_global_crops: int = 2,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if out_dim < 1 or num_global_crops < 1:
            raise ValueError(f"out_dim and num_global_crops must be >= 1, got {out_dim}, {num_global_crops}")
        if min(student_temp, teacher_temp, warmup_teacher_temp) <= 0:
            raise ValueError("temperatures must be > 0")
        if warmup_teacher_temp_epochs < 0 or not 0 <= center_momentum <= 1:
            raise ValueError("warmup_teacher_temp_epochs must be >= 0 and center_momentum in [0, 1]")
        self.out_dim = out_dim
        self.num_global_crops = num_global_crops
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: float) -> float:
        """Teacher temperature at (fractional) ``epoch``: linear warm-up, then constant ``teacher_temp``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch >= self.warmup_teacher_temp_epochs:
            return self.teacher_temp
        fraction = epoch / self.warmup_teacher_temp_epochs
        return self.warmup_teacher_temp + fraction * (self.teacher_temp - self.warmup_teacher_temp)

    def _check(self, outputs: Sequence[torch.Tensor], name: str) -> None:
        for out in outputs:
            if out.ndim != 2 or out.shape[1] != self.out_dim or out.shape[0] != outputs[0].shape[0]:
                raise ValueError(
                    f"{name}: every crop must be (B, {self.out_dim}) with the same B, got "
                    f"{[tuple(o.shape) for o in outputs]}"
                )

    def forward(
        self, student_out: Sequence[torch.Tensor], teacher_out: Sequence[torch.Tensor], epoch: float
    ) -> torch.Tensor:
        """DINO loss of one batch; updates the center afterwards when ``self.training``.

        Args:
            student_out: one (B, out_dim) tensor per crop, the ``num_global_crops`` global crops first.
            teacher_out: one (B, out_dim) tensor per global crop, same order.
            epoch: current (fractional) epoch, for the teacher temperature.
        """
        if len(teacher_out) != self.num_global_crops:
            raise ValueError(f"expected {self.num_global_crops} teacher crops, got {len(teacher_out)}")
        if len(student_out) < self.num_global_crops or len(student_out) < 2:
            raise ValueError(
                f"student_out needs the {self.num_global_crops} global crops first (and at least 2 crops in all), "
                f"got {len(student_out)}"
            )
        self._check(student_out, "student_out")
        self._check(teacher_out, "teacher_out")
        if student_out[0].shape[0] != teacher_out[0].shape[0]:
            raise ValueError("student and teacher outputs must have the same batch size")

        temp = self.teacher_temperature(epoch)
        teacher_probs = [F.softmax((t.detach() - self.center) / temp, dim=-1) for t in teacher_out]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        pair_losses = [
            (-p_t * logp_s).sum(dim=-1).mean()
            for i, p_t in enumerate(teacher_probs)
            for j, logp_s in enumerate(student_logp)
            if j != i
        ]
        loss = torch.stack(pair_losses).mean()
        if self.training:
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[torch.Tensor]) -> None:
        """EMA of the center towards the mean teacher output over all crops of the global batch (all ranks)."""
        self._check(teacher_out, "teacher_out")
        t = torch.cat([o.detach() for o in teacher_out]).to(self.center.dtype)
        count = t.new_full((1,), float(t.shape[0]))
        stats = all_reduce_mean(torch.cat([t.sum(dim=0), count]))  # mean over ranks of [sum, count]: ratio is exact
        batch_center = stats[:-1] / stats[-1]
        if not bool(torch.isfinite(batch_center).all()):
            return  # a non-finite teacher output must not poison the centre (and every later loss) for good
        self.center.mul_(self.center_momentum).add_(batch_center.unsqueeze(0), alpha=1 - self.center_momentum)
