"""Where pretraining data comes from: an indexed archive, NIfTI files, phantoms or a MedMNIST file.

A :class:`DataSource` is a small, YAML-configurable object (``class_path`` + ``init_args`` in a config) that builds
the train and validation datasets for the data module. All sources produce the same item format (a dict with an
``"image"`` MetaTensor ``(C, *spatial)``); volume sources go through the content-hashed preprocessing cache with the
source's :class:`~medssl.data.plan.PreprocessPlan`, which is recorded in the exported encoder card.

The validation split holds out whole scans (never slices of a training scan), chosen by a seeded permutation; the
``ArchiveIndex`` source holds out whole *patients* (all series with one hashed ``patient_key``), so no patient is on
both sides.
"""
from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from medssl.data.cache import PreprocessCache
from medssl.data.dataset import ScanDataset
from medssl.data.plan import PreprocessPlan

Transform = Optional[Callable[[dict[str, Any]], dict[str, Any]]]


@dataclass
class DatasetRequest:
    """What the data module asks of a source."""

    spatial_dims: int
    patch_size: Optional[Sequence[int]]
    slice_axis: int
    seed: int
    train_transform: Transform
    val_transform: Transform
    skip_unreadable: bool = True


class DataSource:
    """Base class: builds ``(train, val)`` datasets and describes itself without patient data."""

    def prepare(self) -> None:
        """One-time work that writes files (e.g. generating phantoms); run once per node, before any rank builds
        datasets (Lightning's ``prepare_data``)."""

    def datasets(self, request: DatasetRequest) -> tuple[Dataset, Optional[Dataset]]:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing applied to every image (recorded in the encoder card)."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Counts and kinds only: no paths, names, IDs or dates."""
        raise NotImplementedError


def split_scans(n: int, val_fraction: float, seed: int,
                groups: Optional[Sequence[str]] = None) -> tuple[list[int], list[int]]:
    """Seeded train/val split of ``n`` scans; at least one training scan, and one validation scan if asked.

    With ``groups`` (one key per scan, e.g. a hashed patient key) whole groups are split instead: ``val_fraction``
    of the groups (at least one, and at least one left for training) go to validation with all their scans, chosen
    by a seeded permutation of the sorted distinct keys (so the split does not depend on scan order).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if groups is None:
        groups = [str(i) for i in range(n)]
        keys: list[str] = list(groups)
    else:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group keys for {n} scans")
        keys = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(keys)).tolist()
    n_val = min(len(keys) - 1, max(1, round(len(keys) * val_fraction))) if val_fraction > 0 and len(keys) > 1 else 0
    val_keys = {keys[i] for i in order[:n_val]}
    return ([i for i in range(n) if groups[i] not in val_keys], [i for i in range(n) if groups[i] in val_keys])


class VolumeSource(DataSource):
    """Shared logic of sources that read volumes through the preprocessing cache.

    Args:
        plan: preprocessing applied before caching (spacing, orientation, intensity).
        cache_dir: cache root (content-hashed safetensors entries; safe to share between runs).
        val_fraction: fraction of scans held out for the validation loss.
    """

    def __init__(self, plan: PreprocessPlan = PreprocessPlan(), cache_dir: str = ".medssl_cache",
                 val_fraction: float = 0.1):
        self.plan = plan
        self.cache_dir = cache_dir
        self.val_fraction = val_fraction
        self._counts: dict[str, int] = {}
        self._groups: Optional[list[str]] = None  # one group key per scan (set by _scans): split by group
        self._keys: Optional[list[str]] = None  # one series key per scan (set by _scans): kept on the datasets

    def _scans(self) -> tuple[list[Any], dict[str, Any]]:
        """Scan sources and reader options (e.g. the index's tilt policy)."""
        raise NotImplementedError

    def datasets(self, request: DatasetRequest) -> tuple[Dataset, Optional[Dataset]]:
        scans, loader = self._scans()
        if not scans:
            raise ValueError(f"{type(self).__name__} found no scans")
        cache = PreprocessCache(self.cache_dir, self.plan, loader=loader)
        train_idx, val_idx = split_scans(len(scans), self.val_fraction, request.seed, self._groups)
        common = dict(spatial_dims=request.spatial_dims, patch_size=request.patch_size,
                      slice_axis=request.slice_axis, seed=request.seed, skip_unreadable=request.skip_unreadable)
        train = ScanDataset([scans[i] for i in train_idx], cache, transform=request.train_transform, **common)
        val = (ScanDataset([scans[i] for i in val_idx], cache, transform=request.val_transform, **common)
               if val_idx else None)
        for ds, idx in ((train, train_idx), (val, val_idx)):
            if ds is not None and self._keys is not None:  # logs then name a failing scan by its series key
                ds.series_keys = [self._keys[i] for i in idx]
        self._counts.update({"scans": len(scans), "train_scans": len(train_idx), "val_scans": len(val_idx),
                             "train_items": len(train), "val_items": len(val) if val is not None else 0})
        if self._groups is not None:
            self._counts.update({"patients": len(set(self._groups)),
                                 "train_patients": len({self._groups[i] for i in train_idx}),
                                 "val_patients": len({self._groups[i] for i in val_idx})})
        return train, val

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "plan", "plan": self.plan.to_dict(), "fingerprint": self.plan.fingerprint()}

    def summary(self) -> dict[str, Any]:
        return {"source": type(self).__name__, **self._counts}


class ArchiveIndex(VolumeSource):
    """Series accepted by ``medssl index`` (``index_dir``) of the archive at ``archive_root``, read with the same
    reader policy the crawler used. Duplicates found by ``medssl index --dedup`` are left out, and the train/val
    split is by patient (series.csv ``patient_key``; per series for indexes written before that column existed)."""

    def __init__(self, index_dir: str, archive_root: str, plan: PreprocessPlan = PreprocessPlan(),
                 cache_dir: str = ".medssl_cache", val_fraction: float = 0.1):
        super().__init__(plan, cache_dir, val_fraction)
        self.index_dir, self.archive_root = index_dir, archive_root

    def _scans(self) -> tuple[list[Any], Any]:
        probe = ScanDataset.from_index(self.index_dir, self.archive_root,
                                       PreprocessCache(self.cache_dir, self.plan), spatial_dims=3)
        self._groups, self._keys = probe.patient_keys, probe.series_keys
        return probe.sources, probe.cache.loader


class NiftiFiles(VolumeSource):
    """NIfTI volumes matching glob ``pattern`` (e.g. ``data/imagesTr/*.nii.gz``), sorted by path. Several
    ``channels`` patterns (one per sequence, matched file-by-file in sorted order) give multi-channel scans;
    ``channel_names`` (one per channel, e.g. ``[FLAIR, T1c]``) are recorded on the encoder card, where fine-tuning
    checks them (:func:`medssl.models.hub.check_channels`).

    ``exclude_split``: a recorded case split (JSON with ``"val"`` / ``"test"`` lists of case ids, as written by
    :func:`medssl.finetune.seg_cases.split_cases` and the segmentation protocol): scans whose case id (file name
    without ``.nii[.gz]`` and without an MSD channel suffix ``_0000``) is listed under ``exclude_parts`` are left
    out, so pretraining never sees the images a fine-tuned model is validated or tested on. The number left out is
    in :meth:`summary` (and so in the encoder card).
    """

    def __init__(self, pattern: str | list[str], plan: PreprocessPlan = PreprocessPlan(),
                 cache_dir: str = ".medssl_cache", val_fraction: float = 0.1, exclude_split: Optional[str] = None,
                 exclude_parts: Sequence[str] = ("val", "test"), channel_names: Optional[list[str]] = None):
        super().__init__(plan, cache_dir, val_fraction)
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if channel_names is not None and len(self.patterns) > 1 and len(channel_names) != len(self.patterns):
            raise ValueError(f"{len(channel_names)} channel_names for {len(self.patterns)} channel patterns")
        self.channel_names = None if channel_names is None else [str(c) for c in channel_names]
        self.exclude_split, self.exclude_parts = exclude_split, tuple(exclude_parts)

    def preprocessing(self) -> dict[str, Any]:
        """The plan, and the channel names (recorded on the encoder card by ``export_encoder``) when given."""
        pre = super().preprocessing()
        return {**pre, "channels": self.channel_names} if self.channel_names else pre

    def _excluded_ids(self) -> set[str]:
        if self.exclude_split is None:
            return set()
        path = Path(self.exclude_split)
        if not path.is_file():
            raise FileNotFoundError(f"exclude_split file not found: {path}")
        split = json.loads(path.read_text())
        missing = [p for p in self.exclude_parts if p not in split]
        if missing:
            raise ValueError(f"{path} has no {missing} lists of case ids (keys: {sorted(split)})")
        return {str(i) for p in self.exclude_parts for i in split[p]}

    def _scans(self) -> tuple[list[Any], None]:
        per_channel = [sorted(glob.glob(p)) for p in self.patterns]
        counts = {p: len(files) for p, files in zip(self.patterns, per_channel)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"channel patterns match different numbers of files: {counts}")
        excluded = self._excluded_ids()
        keep = [i for i, f in enumerate(per_channel[0]) if case_id(f) not in excluded]
        self._counts["excluded_scans"] = len(per_channel[0]) - len(keep)
        if len(per_channel) == 1:
            return [Path(per_channel[0][i]) for i in keep], None
        return [tuple(Path(files[i]) for files in per_channel) for i in keep], None


def case_id(path: str | Path) -> str:
    """Case id of a NIfTI file: its name without ``.nii``/``.nii.gz`` and without an MSD channel suffix."""
    name = Path(path).name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else Path(name).stem
    return re.sub(r"_\d{4}$", "", stem)


class Phantoms(NiftiFiles):
    """Synthetic CT-like phantoms (written as real NIfTI and DICOM by :mod:`medssl.data.phantoms`), generated into
    ``root`` on first use: the no-download default for quickstarts and smoke tests."""

    def __init__(self, root: str = "phantoms", n: int = 4, shape: Sequence[int] = (64, 64, 48), seed: int = 0,
                 plan: PreprocessPlan = PreprocessPlan(intensity="ct_window", window=(-200.0, 300.0)),
                 cache_dir: str = ".medssl_cache", val_fraction: float = 0.25):
        super().__init__(str(Path(root) / "nifti" / "imagesTr" / "*_0000.nii.gz"), plan, cache_dir, val_fraction)
        self.root, self.n, self.shape, self.seed = root, n, tuple(shape), seed

    def _is_current(self) -> bool:
        desc = Path(self.root) / "phantoms.json"
        if not desc.is_file():
            return False
        current = json.loads(desc.read_text())
        return ((current["n"], current["seed"]) == (self.n, self.seed)
                and all(tuple(c["shape"]) == self.shape and (Path(self.root) / c["image"]).is_file()
                        for c in current["cases"]))

    def prepare(self) -> None:
        from medssl.data.phantoms import generate_phantoms

        if not self._is_current():
            generate_phantoms(self.root, self.n, seed=self.seed, shape=self.shape)

    def _scans(self) -> tuple[list[Any], None]:
        if not self._is_current():
            raise FileNotFoundError(f"phantoms in {self.root} are missing or were made with other settings; "
                                    "call prepare() first (the data module does)")
        return super()._scans()


class MedMNIST(DataSource):
    """A MedMNIST ``.npz`` file (2D or 3D); pretraining uses the train split's images without labels and the
    official val split for the validation loss. Intensities are scaled from uint8 to [0, 1]."""

    def __init__(self, path: str, max_items: Optional[int] = None):
        self.path = path
        self.max_items = max_items
        self._counts: dict[str, int] = {}
        self._shape: tuple[int, ...] = ()

    def datasets(self, request: DatasetRequest) -> tuple[Dataset, Optional[Dataset]]:
        from medssl.data.medmnist import MedMNISTDataset

        subset = None if self.max_items is None else range(self.max_items)
        train = MedMNISTDataset(self.path, "train", spatial_dims=request.spatial_dims, transform=request.train_transform,
                                seed=request.seed, with_labels=False, indices=subset)
        val = MedMNISTDataset(self.path, "val", spatial_dims=request.spatial_dims, transform=request.val_transform,
                              seed=request.seed, with_labels=False)
        self._counts = {"train_items": len(train), "val_items": len(val)}
        self._shape = tuple(train.image_shape)
        return train, val

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "medmnist", "intensity": "uint8 / 255 -> [0, 1]", "image_shape": list(self._shape),
                "spacing": None}

    def summary(self) -> dict[str, Any]:
        return {"source": "MedMNIST", "file": Path(self.path).name, **self._counts}
