"""A deterministic, rank-aware sampler that can resume in the middle of an epoch.

Exact resume needs the data position: after a restart, epoch ``e`` must continue with the very samples the killed
run would have drawn next. :class:`ResumableSampler` draws the permutation of epoch ``e`` from ``(seed, e)`` only
(never from the global RNG), shards it over ranks like ``torch.utils.data.DistributedSampler`` (pad by wrapping,
``rank::world_size``), and skips the first ``start`` samples of the resumed epoch. Lightning calls
:meth:`set_epoch` at the start of every epoch; the skip applies only to the epoch it was set for.

The sampler yields ``(epoch, index)`` keys and :class:`EpochDataset` passes the epoch to the dataset with every
item, so per-item randomness (crops, augmentations) follows the sampler's epoch in every worker process, also when
Lightning builds the iterator of a resumed epoch before any epoch-start hook runs.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Epoch-seeded (optionally shuffled) indices of this rank, resumable at a sample offset.

    Args:
        length: dataset length.
        shuffle: permute per epoch (seeded by ``(seed, epoch)``).
        seed: base seed.
        rank, world_size: this process's shard (DDP); ``world_size=1`` without a process group.
        drop_last: drop the tail instead of padding so every rank gets the same count.
    """

    def __init__(self, length: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length, self.shuffle, self.seed = int(length), shuffle, int(seed)
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this rank already consumed)

    @property
    def per_rank(self) -> int:
        """Samples this rank yields in a full epoch."""
        if self.drop_last:
            return self.length // self.world_size
        return -(-self.length // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` samples (of this rank) when epoch ``epoch`` is iterated."""
        if not 0 <= consumed <= self.per_rank:
            raise ValueError(f"cannot resume at sample {consumed} of an epoch of {self.per_rank}")
        self._resume = (int(epoch), int(consumed))
        self.epoch = int(epoch)

    def _start(self) -> int:
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def indices(self, epoch: int) -> list[int]:
        """All indices of this rank for ``epoch`` (before any resume offset)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        if total > len(order):  # pad by wrapping around, as DistributedSampler does
            order += (order * (total // len(order) + 1))[: total - len(order)]
        return order[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self._start()
        for index in self.indices(epoch)[start:]:
            yield epoch, index

    def __len__(self) -> int:
        # the full epoch length even when resuming: Lightning counts the resumed epoch's batches from where it
        # stopped, so a shortened length would end the epoch early
        return self.per_rank


class EpochDataset(Dataset):
    """Map-style view of ``dataset`` addressed by ``(epoch, index)`` keys: sets the dataset's epoch (its
    ``set_epoch``) before fetching, so every worker draws the randomness of the sampler's epoch."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]
