"""Map-style dataset of preprocessed scans: whole volumes, random 3D patches, or 2D slices.

Every item is a MONAI-style dict ``{"image": MetaTensor (C, *spatial) float32, "source_index": int}`` (plus
``"slice_index"`` in 2D and ``"label"`` when label sources are given); the image carries its affine (4x4 in 3D, the
3x3 in-plane affine in 2D). Volumes come from a :class:`~medssl.data.cache.PreprocessCache`, so preprocessing
happens once per file content and plan.

A *scan source* is one volume source (a NIfTI path, a DICOM folder, a list of DICOM files) or a **tuple** of such
sources: co-registered volumes (e.g. FLAIR and T1c) stacked as channels. A 4D (X, Y, Z, T) volume contributes its
T time points as channels.

With ``skip_unreadable`` a scan that cannot be read any more (a file that was corrupted, truncated or removed after
training started) does not stop training: the failure is logged with its reason code (scan number and series key,
never a path), the scan is not tried again in that process, and the item is replaced by the next readable one.
Every item then carries ``"replaced"`` (1 for a substitute, else 0), which the training engine counts and reports.

Randomness (patch position, the optional ``transform``) is seeded from ``(seed, epoch, index)``: an item is the
same whatever the worker that loads it, and :meth:`ScanDataset.set_epoch` gives a new, reproducible draw per epoch
(set it before the DataLoader iterator is created; persistent workers keep the epoch they were started with).
"""
from __future__ import annotations

import csv
import json
import logging
from functools import partial
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandSpatialCropd, SpatialPadd
from torch.utils.data import Dataset

from medssl.data.cache import PathLike, PreprocessCache, Source
from medssl.data.lock import DEFAULT_TIMEOUT_S, folder_lock
from medssl.data.names import archive_path
from medssl.errors import MedsslError, NiftiError, Reason

log = logging.getLogger(__name__)

#: One volume source, or a tuple of co-registered volume sources stacked as channels.
ScanSource = Union[Source, tuple[Source, ...]]
#: Channel grids must agree to this tolerance (mm) to be stacked.
AFFINE_TOL = 1e-4


class ScanDataset(Dataset):
    """Scans through a preprocessing cache, as whole volumes, random patches (3D) or slices (2D).

    Args:
        sources: scan sources (see module docstring).
        cache: cache holding the image preprocessing plan.
        spatial_dims: 3 (volumes/patches) or 2 (one item per slice along ``slice_axis``).
        patch_size: random crop size (length ``spatial_dims``), zero-padded where the image is smaller;
            None returns the whole volume / slice.
        slice_axis: spatial axis (0, 1, 2) sliced in 2D mode.
        transform: optional MONAI dictionary transform applied last (re-seeded per item if randomizable).
        seed: base seed of all randomness.
        label_sources: optional label map per scan, cropped together with the image.
        label_cache: cache for labels; default: same root, ``cache.plan.for_labels()``.
        skip_unreadable: replace items of scans that fail to read with typed errors by the next readable item
            (logged with the reason code; see module docstring) instead of raising.
    """

    def __init__(self, sources: Sequence[ScanSource], cache: PreprocessCache, *, spatial_dims: int = 3,
                 patch_size: Sequence[int] | None = None, slice_axis: int = 2,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, seed: int = 0,
                 label_sources: Sequence[Source] | None = None, label_cache: PreprocessCache | None = None,
                 skip_unreadable: bool = False):
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        if patch_size is not None and len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} does not have {spatial_dims} dims")
        if label_sources is not None and len(label_sources) != len(sources):
            raise ValueError(f"{len(label_sources)} label sources for {len(sources)} sources")
        self.sources = list(sources)
        self.cache = cache
        self.spatial_dims = spatial_dims
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.slice_axis = slice_axis
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.label_sources = None if label_sources is None else list(label_sources)
        if self.label_sources is not None and label_cache is None:
            label_cache = PreprocessCache(cache.root, cache.plan.for_labels(), cache.loader, cache.trust_stat)
        self.label_cache = label_cache
        self.series_keys: list[str] | None = None  # set by from_index
        self.skip_unreadable = skip_unreadable
        #: scans found unreadable in this process: source index -> reason code
        self.unreadable: dict[int, str] = {}
        self._offsets: np.ndarray | None = None
        if spatial_dims == 2:  # number of slices per scan, from the cached shapes (computed once)
            shapes = [cache.shape(_channels(src)[0])[:3] for src in self.sources]
            for i, lab in enumerate(self.label_sources or []):
                if self.label_cache.shape(lab)[:3] != shapes[i]:
                    raise NiftiError(Reason.SHAPE_MISMATCH, f"label grid {self.label_cache.shape(lab)[:3]} != "
                                     f"image grid {shapes[i]} (source {i})")
            self._offsets = np.cumsum([0, *(shape[slice_axis] for shape in shapes)])

    @classmethod
    def from_index(cls, index_dir: PathLike, archive_root: PathLike, cache: PreprocessCache, *,
                   lock_timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> ScanDataset:
        """Dataset of the series indexed by the crawler: ``series.csv`` (series_key, status, ...) and
        ``files.csv`` (path, status, series_key), paths relative to ``archive_root``; usable series (status ok*)
        and their indexed files only: duplicates marked by ``medssl index --dedup`` (status ``duplicate`` /
        ``near_duplicate``) are left out. ``patient_keys`` holds each series' hashed patient key (its series key
        for indexes without that column). The manifests are read under the index folder's shared lock
        (:func:`~medssl.data.lock.folder_lock`), so a ``medssl index`` run rewriting them is waited for (up to
        ``lock_timeout_s``, then :class:`~medssl.data.lock.IndexLockedError`) instead of read half-way."""
        index_dir, archive_root = Path(index_dir), Path(archive_root)
        if not (index_dir / "series.csv").is_file():
            raise FileNotFoundError(f"{index_dir} holds no series.csv: not an index folder (run medssl index)")
        with folder_lock(index_dir, shared=True, timeout_s=lock_timeout_s):
            with open(index_dir / "series.csv", newline="") as fh:
                usable = [r for r in csv.DictReader(fh) if r["status"] in ("ok", "ok_with_warnings")]
            keys = [r["series_key"] for r in usable]
            patient_of = {r["series_key"]: r.get("patient_key") or r["series_key"] for r in usable}
            files: dict[str, list[Path]] = defaultdict(list)
            wanted = set(keys)
            shared: set[str] = set()  # stacks of enhanced files that hold several (files.csv keys "k1;k2")
            with open(index_dir / "files.csv", newline="") as fh:
                for r in csv.DictReader(fh):
                    row_keys = r["series_key"].split(";")
                    if len(row_keys) > 1:
                        shared.update(row_keys)
                    elif r["status"] == "indexed" and r["series_key"] in wanted:
                        files[r["series_key"]].append(archive_path(archive_root, r["path"]))
            policy = _index_policy(index_dir)
        left_out = [k for k in keys if k in shared]
        if left_out:
            # the preprocessing cache keys a volume by its files' bytes, which the stacks of one file share: reading
            # them needs a source that names the stack (a follow-up); said here rather than dropped silently
            log.warning("%d series are stacks of enhanced multi-frame files that hold several stacks; the dataset "
                        "cannot read those yet and leaves them out (series keys %s)", len(left_out),
                        ", ".join(left_out[:5]) + (" ..." if len(left_out) > 5 else ""))
        keys = [k for k in keys if files[k]]
        if policy and cache.loader is None:
            # series the crawler accepted only under an opt-in policy (tilt correction, resampling) must be read
            # with the same policy, or the strict default reader would reject them
            from medssl.data.loading import load_volume

            cache = PreprocessCache(cache.root, cache.plan, loader=partial(load_volume, **policy),
                                    trust_stat=cache.trust_stat)
        sources: list[Source] = []
        for k in keys:
            paths = sorted(files[k], key=str)
            is_nifti = len(paths) == 1 and paths[0].name.lower().endswith((".nii", ".nii.gz"))
            sources.append(paths[0] if is_nifti else paths)
        ds = cls(sources, cache, **kwargs)
        ds.series_keys = keys
        ds.patient_keys = [patient_of[k] for k in keys]
        return ds

    def set_epoch(self, epoch: int) -> None:
        """Select the random draw (patch positions, transform randomness) of this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sources) if self._offsets is None else int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int | None]:
        """(source index, slice index or None in 3D) of dataset item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        index %= n
        if self._offsets is None:
            return index, None
        src = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return src, index - int(self._offsets[src])

    def describe(self, src: int) -> str:
        """A patient-free name of scan ``src`` for logs: its number and, for indexed series, the salted key."""
        key = f" (series {self.series_keys[src]})" if self.series_keys is not None else ""
        return f"scan {src} of {len(self.sources)}{key}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_unreadable:
            return self._item(index)
        n = len(self)
        for attempt in range(n):
            candidate = (index + attempt) % n
            src, _ = self.locate(candidate)
            if src in self.unreadable:
                continue
            try:
                data = self._item(candidate)
            except MedsslError as err:
                self.unreadable[src] = err.reason.value
                log.warning("skipping unreadable %s: [%s]; its items are replaced by the next readable ones",
                            self.describe(src), err.reason.value)
                continue
            data["replaced"] = int(attempt > 0)
            return data
        raise MedsslError(Reason.UNREADABLE, f"none of the {len(self.sources)} scans of this dataset can be read "
                          f"any more (reasons: {sorted(set(self.unreadable.values()))})")

    def _item(self, index: int) -> dict[str, Any]:
        src, k = self.locate(index)
        index %= len(self)
        image, affine = self._read(self.cache, _channels(self.sources[src]), k)
        data: dict[str, Any] = {"image": image.to(torch.float32), "source_index": src}
        if k is not None:
            data["slice_index"] = k
        if self.label_sources is not None:
            label, label_affine = self._read(self.label_cache, (self.label_sources[src],), k)
            _check_grid([image, label], [affine, label_affine], [self.sources[src], self.label_sources[src]])
            data["label"] = label
        if k is not None:
            affine = plane_affine(affine, self.slice_axis)
        for key in ("image", "label"):
            if key in data:
                data[key] = MetaTensor(data[key], affine=affine)
        crop_seed, transform_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)
        if self.patch_size is not None:
            keys = [key for key in ("image", "label") if key in data]
            data = SpatialPadd(keys, spatial_size=self.patch_size)(data)
            crop = RandSpatialCropd(keys, roi_size=self.patch_size, random_size=False)
            crop.set_random_state(seed=int(crop_seed))
            data = crop(data)
        if self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=int(transform_seed))
            data = self.transform(data)
        return data

    def _read(self, cache: PreprocessCache, sources: Sequence[Source], k: int | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel-stacked (C, *spatial) array and 4x4 affine of one scan (of slice ``k`` in 2D)."""
        parts, affines = [], []
        for s in sources:
            vol = cache.get(s) if k is None else cache.get_slice(s, self.slice_axis, k)
            arr = vol.as_tensor()
            arr = arr.unsqueeze(0) if arr.ndim == self.spatial_dims else arr.movedim(-1, 0)  # T -> channels
            parts.append(arr)
            affines.append(torch.as_tensor(vol.affine, dtype=torch.float64))
        _check_grid(parts, affines, sources)
        return torch.cat(parts, dim=0), affines[0]


def _channels(source: ScanSource) -> tuple[Source, ...]:
    """The per-channel volume sources of a scan source (a tuple means channels; a list is one DICOM series)."""
    return source if isinstance(source, tuple) else (source,)


def _check_grid(arrays: Sequence[torch.Tensor], affines: Sequence[torch.Tensor], sources: Sequence[Any]) -> None:
    """Raise ``NiftiError(SHAPE_MISMATCH)`` unless all arrays share spatial shape and affine."""
    shape0, aff0 = tuple(arrays[0].shape[1:]), affines[0]
    for arr, aff, src in zip(arrays[1:], affines[1:], sources[1:]):
        if tuple(arr.shape[1:]) != shape0 or not torch.allclose(aff, aff0, atol=AFFINE_TOL):
            files = [s if isinstance(s, (str, Path)) else f"<{len(s)} files>" for s in (sources[0], src)]
            raise NiftiError(Reason.SHAPE_MISMATCH, f"channels are not on one grid: shape {tuple(arr.shape[1:])}"
                             f" vs {shape0} or affines differ by more than {AFFINE_TOL}", files)


def plane_affine(affine: torch.Tensor, slice_axis: int) -> torch.Tensor:
    """3x3 in-plane affine of a slice whose 4x4 affine (origin at the slice) is ``affine``.

    The voxel columns are the two in-plane axes; the world rows are the two axes other than the one the slice
    normal points along most (the z row for an axial slice of a RAS volume), so the in-plane geometry is exact for
    axis-aligned volumes.
    """
    affine = torch.as_tensor(affine, dtype=torch.float64)
    cols = [i for i in range(3) if i != slice_axis]
    drop = int(torch.argmax(affine[:3, slice_axis].abs()))
    rows = [i for i in range(3) if i != drop]
    out = torch.eye(3, dtype=torch.float64)
    out[:2, :2] = affine[rows][:, cols]
    out[:2, 2] = affine[rows, 3]
    return out


def _index_policy(index_dir: Path) -> dict[str, str]:
    """Non-default reader options the crawler used (from ``index.json``), e.g. ``{"tilt": "correct"}``."""
    info = index_dir / "index.json"
    if not info.is_file():
        return {}
    settings = json.loads(info.read_text()).get("settings", {})
    defaults = {"tilt": "error", "uneven": "error", "fourd": "stack"}
    return {k: settings[k] for k in defaults if k in settings and settings[k] != defaults[k]}
