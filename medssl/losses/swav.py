"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the swapped-prediction loss, pure torch.

Every crop's embedding ``z`` (L2-normalised) is scored against ``K`` unit-norm prototypes, ``s = z C^T`` (B, K).

**Codes** (:func:`sinkhorn_knopp`, no gradient). The codes ``Q`` of a batch of ``B`` scores solve an entropy-
regularised optimal transport problem that spreads the batch *equally* over the prototypes. Following the paper's
code, ``Q = exp(s / epsilon)^T`` (K x B) is normalised to total mass 1, then ``iterations`` times

    rows (prototypes):  Q_k. <- Q_k. / (K * sum_b Q_kb)        every prototype gets mass 1/K
    columns (samples):  Q_.b <- Q_.b / (B * sum_k Q_kb)        every sample gets mass 1/B

and finally ``Q * B`` is returned transposed, (B, K): each sample's code sums to exactly 1 (a soft assignment);
each prototype's column sums to ``B / K`` only approximately after the paper's 3 iterations (exactly in the limit).
``B`` and the sums over samples span the **global** batch under DDP (all-reduced over ranks with
:func:`medssl.losses.gather.all_reduce_mean` times the world size; the identity without a process group).

Queue. For small batches SwAV appends the scores of embeddings from previous steps (a queue) to the batch before
Sinkhorn and keeps only the batch's codes. Pass those as ``shared_scores``: rows that every rank holds identically
(:class:`medssl.losses.queue.FeatureQueue` gathers over ranks, so its content is the same everywhere). They enter
every sum once, not once per rank, so a DDP run gives the codes of one process with the global batch and the queue.

**Swapped prediction** (:func:`swapped_prediction_loss`). With ``p_v = softmax(s_v / T)`` for every crop ``v``
(global crops first, then the local ones), the code of each global crop ``i`` is predicted from every other crop:

    L = 1/n_g sum_i  1/(V - 1) sum_{v != i}  mean_b  -sum_k q_i[b, k] log p_v[b, k].
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from medssl.losses.gather import all_reduce_mean, world

__all__ = ["sinkhorn_knopp", "swapped_prediction_loss"]


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (``x`` itself without a process group)."""
    _, world_size = world()
    return x if world_size == 1 else all_reduce_mean(x) * world_size


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
                   shared_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SwAV codes (B, K) of prototype scores (B, K); each row sums to 1 (see the module docstring).

    Args:
        scores: this rank's scores ``z C^T``, (B, K).
        epsilon: entropy regularisation (0.05; smaller = sharper codes, less stable).
        iterations: Sinkhorn-Knopp iterations (3).
        shared_scores: (N, K) extra rows held identically by every rank (the queue); only ``scores``' codes are
            returned.

    Computed in float32 without gradient. The exponent is shifted by the rank-averaged maximum score (one constant
    on every rank, which the normalisation cancels) so ``exp`` cannot overflow. For cosine scores (range 2) it
    cannot underflow to a whole zero row either while ``epsilon > 2 / 87``; beyond that (or for unbounded scores)
    a prototype or sample whose every entry underflows gets a zero code instead of NaN.
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (B, K) with B >= 1, got {tuple(scores.shape)}")
    if shared_scores is not None and (shared_scores.ndim != 2 or shared_scores.shape[1] != scores.shape[1]):
        raise ValueError(f"shared_scores must be (N, {scores.shape[1]}), got {tuple(shared_scores.shape)}")
    if not epsilon > 0 or iterations < 0:
        raise ValueError(f"need epsilon > 0 and iterations >= 0, got {epsilon}, {iterations}")
    s = scores.detach().float()
    shared = (shared_scores.detach().float() if shared_scores is not None
              else s.new_zeros(0, s.shape[1]))
    num_prototypes = s.shape[1]
    top = s.max() if shared.shape[0] == 0 else torch.maximum(s.max(), shared.max())
    shift = all_reduce_mean(top)
    q, q_shared = torch.exp((s - shift) / epsilon).T, torch.exp((shared - shift) / epsilon).T  # (K, B), (K, N)
    num_samples = _global_sum(s.new_tensor(float(s.shape[0]))) + shared.shape[0]
    total = _global_sum(q.sum()) + q_shared.sum()
    q, q_shared = q / total, q_shared / total
    tiny = torch.finfo(torch.float32).tiny  # an all-underflowed row/column stays 0 instead of becoming NaN
    for _ in range(iterations):
        per_prototype = _global_sum(q.sum(dim=1, keepdim=True)) + q_shared.sum(dim=1, keepdim=True)
        per_prototype = per_prototype.clamp_min(tiny) * num_prototypes
        q, q_shared = q / per_prototype, q_shared / per_prototype
        q = q / (q.sum(dim=0, keepdim=True).clamp_min(tiny) * num_samples)
        q_shared = q_shared / (q_shared.sum(dim=0, keepdim=True).clamp_min(tiny) * num_samples)
    return (q * num_samples).T


def swapped_prediction_loss(scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor],
                            temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped-prediction cross-entropy (see the module docstring).

    Args:
        scores: one (B, K) prototype-score tensor per crop, the global crops first.
        codes: one (B, K) code tensor per global crop, ``codes[i]`` computed from crop ``i`` (used without
            gradient).
        temperature: softmax temperature ``T`` of the predictions (0.1).
    """
    if len(scores) < 2 or not 1 <= len(codes) <= len(scores):
        raise ValueError(f"need >= 2 crops and 1 .. {len(scores)} codes, got {len(scores)} crops and {len(codes)} "
                         "codes")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    shape = scores[0].shape
    if len(shape) != 2 or any(s.shape != shape for s in scores) or any(q.shape != shape for q in codes):
        raise ValueError(f"every score and code tensor must be (B, K) with one shape, got "
                         f"{[tuple(s.shape) for s in scores]} and {[tuple(q.shape) for q in codes]}")
    log_p = [F.log_softmax(s / temperature, dim=1) for s in scores]
    per_code = []
    for i, q in enumerate(codes):
        q = q.detach().to(log_p[0].dtype)
        terms = [-(q * log_p[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i]
        per_code.append(torch.stack(terms).mean())
    return torch.stack(per_code).mean()
