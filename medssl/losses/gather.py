"""Cross-device gathering for losses whose negatives (or statistics) span the global batch, pure torch.

This is the one place in :mod:`medssl.losses` that talks to :mod:`torch.distributed`. Every function is guarded:
without an initialised process group (or with world size 1) it is the identity, so the same loss code runs on a
laptop, in a single-process test and under DDP on many GPUs.

* :func:`world` -- ``(rank, world_size)``, ``(0, 1)`` without a process group.
* :func:`gather` -- concatenation along dim 0 of ``x`` from all ranks, in rank order, **with gradient**.
* :func:`gather_offset` / :func:`gather_with_offset` -- where this rank's rows start in :func:`gather`'s output
  (the index of the positives in a contrastive loss).
* :func:`all_reduce_mean` -- mean of a tensor over ranks, without gradient (DINO's center statistics).

Gradient of :func:`gather`
--------------------------
Rank ``r`` holds rows ``x_r`` of the global batch and computes a loss ``L_r`` that uses the gathered tensor
``X = [x_0; ...; x_{W-1}]`` as candidates (negatives). DDP then *averages* parameter gradients over the ``W``
ranks, so the gradient that the optimiser sees is ``(1/W) sum_r dL_r/dtheta``. The rows ``x_r`` influence every
``L_{r'}`` (through ``X``), but autograd on rank ``r'`` only sees its own ``L_{r'}``. The backward of
:func:`gather` therefore ``all_reduce(SUM)``-s the incoming gradient ``dL_{r'}/dX`` over ranks and returns the
slice that belongs to ``x_r``:

    d x_r = sum_{r'} dL_{r'}/dx_r   (candidate path)   + the local, non-gathered path of L_r.

With equal local batches the global-batch loss is ``L = (1/W) sum_r L_r``, hence ``d x_r = W * dL/dx_r`` and, after
DDP's ``1/W`` averaging, the parameter gradient is exactly ``dL/dtheta``: training on ``W`` ranks is the same as
training on one device with the global batch. This is what SimCLR's and lightly's ``GatherLayer`` do (plain
``all_gather`` returns tensors without ``grad_fn``, which silently drops the candidate path).

Every rank must call :func:`gather` (and run backward through it) the same number of times in the same order,
as for any collective. Local batches may differ in size between ranks (e.g. the last, uneven batch of an epoch):
the sizes are exchanged first and the rows padded to the largest size for the ``all_gather``.

For tensors that need no gradient (momentum-encoder keys, queue entries), ``gather(x.detach())`` is fine: the
backward is simply never called.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_mean", "gather", "gather_offset", "gather_with_offset", "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sizes(x: torch.Tensor) -> list[int]:
    """dim-0 size of ``x`` on every rank, in rank order (one small ``all_gather``)."""
    _, world_size = world()
    if world_size == 1:
        return [x.shape[0]]
    local = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


class _Gather(torch.autograd.Function):
    """all_gather forward, all_reduce(SUM) + local slice backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        rank, world_size = world()
        ctx.rank, ctx.sizes = rank, sizes
        x = x.contiguous()
        largest = max(sizes)
        if x.shape[0] < largest:
            x = torch.cat([x, x.new_zeros((largest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_with_offset(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(gather(x), gather_offset(x))`` with a single exchange of the batch sizes."""
    rank, world_size = world()
    if world_size == 1:
        return x, 0
    sizes = _sizes(x)
    return _Gather.apply(x, sizes), sum(sizes[:rank])


def gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` from all ranks, concatenated along dim 0 in rank order; differentiable.

    Without a process group, or with world size 1, returns ``x`` itself (no copy). Shapes beyond dim 0, the dtype
    and the device must agree between ranks; dim 0 may differ.
    """
    return gather_with_offset(x)[0]


def gather_offset(x: torch.Tensor) -> int:
    """Index of this rank's first row in ``gather(x)``: the summed dim-0 sizes of the lower ranks (a collective)."""
    rank, world_size = world()
    if world_size == 1:
        return 0
    return sum(_sizes(x)[:rank])


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of ``x`` over ranks, without gradient; ``x.detach()`` without a process group.

    A mean of per-rank means is only the global mean when all ranks hold equally many samples; for uneven batches
    reduce ``[sum, count]`` and divide (the ``1/W`` cancels), as :class:`medssl.losses.dino.DINOLoss` does.
    """
    _, world_size = world()
    if world_size == 1:
        return x.detach()
    out = x.detach().contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size
