"""First-in-first-out queue of key embeddings: the negatives of MoCo v2 (:func:`~medssl.losses.ntxent.info_nce_queue`).

The queue is a circular buffer of ``size`` rows. :meth:`FeatureQueue.enqueue` writes a batch of keys starting at
the pointer ``ptr`` and wrapping around the end, exactly as if the rows were written one at a time:

    queue[(ptr + i) % size] = keys[i]   for i = 0 .. n-1,      ptr <- (ptr + n) % size.

A batch larger than the queue therefore leaves only its newest ``size`` rows (the older ones are overwritten), and
the pointer still advances by ``n``. Keys are gathered from all ranks first (rank order, without gradient, via
:func:`medssl.losses.gather.gather`), so every rank holds the same queue, the one a single process would hold after
enqueueing the global batch. Keys are L2-normalised on the way in (``normalize=True``), so the queue always holds
unit vectors, as :func:`~medssl.losses.ntxent.info_nce_queue` expects.

Before the first enqueue the queue holds random unit vectors drawn from a generator with a fixed ``seed`` (MoCo
starts from random keys too), so two runs start from the same queue. ``queue`` and ``ptr`` are buffers: they move
with ``.to(device)`` and are saved in the ``state_dict``, which an exact resume needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses.gather import gather

__all__ = ["FeatureQueue"]


class FeatureQueue(nn.Module):
    """Circular buffer of ``size`` unit-norm key embeddings of dimension ``dim``.

    Args:
        size: number of keys kept (MoCo v2: 65536).
        dim: embedding dimension.
        normalize: L2-normalise keys in :meth:`enqueue`.
        seed: seed of the random unit vectors that fill the queue initially.
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, normalize: bool = True, seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got size={size}, dim={dim}")
        self.size, self.dim, self.normalize = size, dim, normalize
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Gather ``keys`` (N, dim) from all ranks and write them circularly at ``ptr`` (see the module docstring)."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (N, {self.dim}), got {tuple(keys.shape)}")
        keys = gather(keys.detach())
        if not bool(torch.isfinite(keys).all()):
            # a NaN/Inf key would poison every later loss; all ranks see the same gathered keys, so all skip alike
            return
        if self.normalize:
            keys = F.normalize(keys, dim=1)
        n = keys.shape[0]
        kept = min(n, self.size)
        ptr = int(self.ptr)
        slots = (ptr + torch.arange(n - kept, n, device=self.queue.device)) % self.size
        self.queue[slots] = keys[n - kept :].to(self.queue.dtype)
        self.ptr.fill_((ptr + n) % self.size)

    def forward(self) -> torch.Tensor:
        """The current queue, (size, dim); the buffer itself (no gradient, not a copy).

        A loss that uses it saves it for backward, so enqueueing before that backward makes autograd raise (the buffer
        was modified in place): pass ``queue().clone()`` to the loss when enqueueing in the same step before backward.
        """
        return self.queue

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, normalize={self.normalize}"
