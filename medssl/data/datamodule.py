"""The pretraining data module: a :class:`~medssl.data.sources.DataSource` -> resumable, rank-sharded loaders.

2D slices or 3D patches (``spatial_dims``), seeded MONAI dictionary augmentations (training only), and a
:class:`~medssl.data.sampler.ResumableSampler` per loader so a restarted run continues mid-epoch with exactly the
samples the interrupted run would have seen next (:meth:`PretrainDataModule.resume_at`, called by
:class:`medssl.training.resume.ExactResume`). The sampler shards by rank itself, so the trainer runs with
``use_distributed_sampler=False`` (the pretraining CLI sets it).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import lightning as L
from torch.utils.data import DataLoader, Dataset

from medssl.data.sampler import EpochDataset, ResumableSampler
from medssl.data.sources import DatasetRequest, DataSource
from medssl.errors import MedsslError, Reason
from medssl.transforms.augment import AugmentConfig


class PretrainDataModule(L.LightningDataModule):
    """Unlabelled images for self-supervised pretraining.

    Args:
        source: where the images come from (indexed archive, NIfTI files, phantoms, MedMNIST).
        spatial_dims: 2 (slices along ``slice_axis``) or 3 (volumes / patches).
        patch_size: random crop per item (``spatial_dims`` long); None keeps whole images.
        slice_axis: axis sliced in 2D mode for volume sources.
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes.
        augment: training augmentations (MONAI dictionary transforms, seeded per item); None for none.
        seed: seed of the split, the sampler and all per-item randomness.
        views: optional callable turning one item into the method's views (contrastive methods); applied after
            ``augment``.
        skip_unreadable: a scan that stops being readable during training (corrupted or removed file) is logged
            with its reason code and its items replaced by readable ones (counted as ``replaced_items`` in the
            run summary) instead of stopping the run; ``false`` raises the typed read error.
    """

    def __init__(self, source: DataSource, spatial_dims: int = 3, patch_size: Optional[list[int]] = None,
                 slice_axis: int = 2, batch_size: int = 4, num_workers: int = 0,
                 augment: Optional[AugmentConfig] = None, seed: int = 0, pin_memory: bool = False,
                 views: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None, skip_unreadable: bool = True):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if patch_size is not None and len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {patch_size} must have {spatial_dims} entries")
        self.source = source
        self.spatial_dims, self.patch_size, self.slice_axis = spatial_dims, patch_size, slice_axis
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.augment, self.seed, self.views = augment, seed, views
        self.skip_unreadable = skip_unreadable
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches consumed in it)

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_tf = self.augment.build(self.spatial_dims) if self.augment is not None else None
        if self.views is not None:
            train_tf = _chain(train_tf, self.views)
        request = DatasetRequest(self.spatial_dims, self.patch_size, self.slice_axis, self.seed, train_tf, self.views,
                                 self.skip_unreadable)
        self.train_set, self.val_set = self.source.datasets(request)

    def resume_at(self, epoch: int, batches: int) -> None:
        """Continue epoch ``epoch`` after its first ``batches`` batches (set before the loaders are built)."""
        self._resume = (int(epoch), int(batches))

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        rank, world = self._rank()
        sampler = ResumableSampler(len(self.train_set), shuffle=True, seed=self.seed, rank=rank, world_size=world)
        if self._resume is not None:
            epoch, batches = self._resume
            sampler.resume_at(epoch, min(batches * self.batch_size, sampler.per_rank))
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        rank, world = self._rank()
        return self._loader(self.val_set, ResumableSampler(len(self.val_set), shuffle=False, rank=rank,
                                                           world_size=world))

    def _loader(self, dataset: Dataset, sampler: ResumableSampler) -> DataLoader:
        return ResumableLoader(EpochDataset(dataset), batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=False, drop_last=False)

    def describe(self) -> dict[str, Any]:
        """Training-data summary for the encoder card (counts and kinds, no patient data)."""
        return {"spatial_dims": self.spatial_dims, "patch_size": self.patch_size,
                "slice_axis": self.slice_axis if self.spatial_dims == 2 else None, **self.source.summary()}


class ResumableLoader(DataLoader):
    """DataLoader whose checkpointed state guards a resume: the position itself is restored through the sampler
    (:meth:`PretrainDataModule.resume_at`); this refuses to continue "exactly" on different data, a different seed
    or a different number of ranks, where the saved position would point at other samples."""

    def state_dict(self) -> dict[str, int]:
        s = self.sampler
        return {"length": len(self.dataset), "seed": s.seed, "world_size": s.world_size,
                "batch_size": int(self.batch_size or 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        now = self.state_dict()
        changed = {k: (state[k], now[k]) for k in now if k in state and state[k] != now[k]}
        if changed:
            raise MedsslError(Reason.BAD_CONFIG, "cannot resume exactly: the training data loader differs from the "
                              "checkpoint's (saved, now): " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in
                                                                         changed.items()) +
                              "; resume with the same data, seed, batch size and number of devices, or start a "
                              "new run initialised from the exported encoder")


def _chain(first: Callable | None, second: Callable) -> Callable:
    if first is None:
        return second
    return _Chain(first, second)


class _Chain:
    """``second(first(x))`` that forwards seeding to both parts."""

    def __init__(self, first: Callable, second: Callable):
        self.first, self.second = first, second

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "_Chain":
        for i, part in enumerate((self.first, self.second)):
            if hasattr(part, "set_random_state"):
                part.set_random_state(seed=None if seed is None else (seed + i) % 2**32)
        return self

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.second(self.first(data))
