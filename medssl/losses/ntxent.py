"""Contrastive (InfoNCE-family) losses, pure torch: SimCLR, MoCo v3 and MoCo v2.

All three are a cross-entropy over cosine similarities divided by a temperature ``T``: for an anchor ``a`` with
positive ``p`` and candidate set ``C`` (which contains ``p``),

    l(a) = -log( exp(cos(a, p) / T) / sum_{c in C} exp(cos(a, c) / T) ),

averaged over the anchors. Inputs are L2-normalised inside, so callers pass raw projector outputs.

* :func:`nt_xent` -- SimCLR's NT-Xent. The anchors are the ``2N`` local rows of ``[z1; z2]``; the candidates are
  all rows of ``[z1; z2]`` *except the anchor itself*; the positive of ``z1[i]`` is ``z2[i]`` and vice versa.
* :func:`info_nce` -- MoCo v3, one direction: queries ``q`` against keys ``k``; the positive of ``q[i]`` is
  ``k[i]``, every other key is a negative. MoCo v3 multiplies this loss by ``2T``; that is a choice of the method
  (it keeps gradient magnitudes independent of ``T``), so it is *not* done here. The method symmetrises
  (``info_nce(q1, k2) + info_nce(q2, k1)``) and passes momentum-encoder keys computed under ``no_grad``; this
  function lets a gradient flow into ``k`` if ``k`` carries one, it does not assume it is detached.
* :func:`info_nce_queue` -- MoCo v2: one positive key per query (label 0) against a queue of negatives
  (:class:`medssl.losses.queue.FeatureQueue`). Keys never carry gradient in MoCo v2, so ``k`` is detached here.

With ``gather_negatives`` (the default) the candidates of :func:`nt_xent` and :func:`info_nce` are gathered from
all ranks with :func:`medssl.losses.gather.gather`, so the negatives span the global batch while each rank averages
over its *local* anchors only. With equal local batches the mean of the per-rank losses is the global-batch loss and
DDP's gradient averaging yields exactly the global-batch gradient (see :mod:`medssl.losses.gather`). Without a
process group the flag changes nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from medssl.losses.gather import gather, gather_with_offset

__all__ = ["info_nce", "info_nce_queue", "nt_xent"]


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (N, D) with equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{names}: empty batch")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather_negatives: bool = True
) -> torch.Tensor:
    """SimCLR NT-Xent loss of two views ``z1``, ``z2`` (N, D) of the same N items; mean over the 2N local anchors.

    Args:
        z1: projections of view 1, (N, D); row ``i`` and ``z2[i]`` come from the same item.
        z2: projections of view 2, (N, D).
        temperature: softmax temperature ``T`` (SimCLR: 0.1 -- 0.5).
        gather_negatives: use the rows of all ranks as candidates (2 * N_global of them, minus the anchor).
    """
    _check_pair(z1, z2, "z1 and z2")
    _check_temperature(temperature)
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    if gather_negatives:
        z1_all, offset = gather_with_offset(z1)
        z2_all = gather(z2)
    else:
        z1_all, offset, z2_all = z1, 0, z2
    total = z1_all.shape[0]
    anchors = torch.cat([z1, z2])  # (2N, D)
    candidates = torch.cat([z1_all, z2_all])  # (2N_global, D)
    logits = anchors @ candidates.T / temperature
    rows = torch.arange(n, device=z1.device) + offset  # index of the local items among the global ones
    self_index = torch.cat([rows, rows + total])
    positive = torch.cat([rows + total, rows])
    anchor = torch.arange(2 * n, device=z1.device)
    logits = logits.index_put((anchor, self_index), logits.new_tensor(float("-inf")))  # an anchor is no candidate
    return F.cross_entropy(logits, positive)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, gather_negatives: bool = True
) -> torch.Tensor:
    """MoCo v3 InfoNCE (one direction): ``q[i]`` against all keys, positive ``k[i]``; mean over the local queries.

    Args:
        q: queries (N, D), e.g. predictor outputs of the online encoder for view 1.
        k: keys (N, D), e.g. momentum-encoder outputs for view 2 (the caller detaches them if it wants).
        temperature: softmax temperature ``T`` (MoCo v3: 0.2); the loss is not multiplied by ``2T``.
        gather_negatives: use the keys of all ranks (N_global of them) as candidates.
    """
    _check_pair(q, k, "q and k")
    _check_temperature(temperature)
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    k_all, offset = gather_with_offset(k) if gather_negatives else (k, 0)
    logits = q @ k_all.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels)


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo v2 InfoNCE: positive ``k[i]`` (logit index 0) against the K negatives in ``queue``; mean over queries.

    Args:
        q: queries (N, D) from the online encoder.
        k: keys (N, D) from the momentum encoder; detached here (MoCo v2 keys never carry gradient).
        queue: negatives (K, D), rows already L2-normalised (as :class:`~medssl.losses.queue.FeatureQueue` keeps
            them); used as given, without gradient.
        temperature: softmax temperature ``T`` (MoCo v2: 0.2).
    """
    _check_pair(q, k, "q and k")
    _check_temperature(temperature)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, D={q.shape[1]}), got {tuple(queue.shape)}")
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    l_neg = q @ queue.detach().to(q.dtype).T  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
