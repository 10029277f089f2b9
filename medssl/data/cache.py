"""Content-hashed preprocessing cache in a safe on-disk format (safetensors, never pickle).

An entry is keyed by ``sha256(content_hash(source) + plan.fingerprint())``: the *bytes* of every source file and
the exact preprocessing plan, never a path or an mtime, so an edited file or a changed plan can never reuse a stale
entry. Hashing bytes on every access would be slow, so a memo maps a stat fingerprint of the source files
(hashed path, size, mtime_ns, ctime_ns, inode) to the content hash. ``ctime`` cannot be set from user space, so a
file rewritten with the same size and a restored mtime still misses the memo; files modified within
:data:`RACY_WINDOW_NS` of the lookup are never memoised (git's "racy clean" rule: timestamps can be coarser than
writes). The memo is a hint only; ``trust_stat=False`` re-hashes every time.

Entries hold the array and the affine as tensors plus string metadata (spacing, shape, dtype, plan fingerprint,
content hash, number of source files: no paths, no patient data). They are written to a temp file in the same
folder and ``os.replace``-d into place, so concurrent DataLoader workers computing the same key are harmless
(last writer wins, readers see a complete file). A truncated, corrupt or mismatching entry is logged, deleted and
recomputed; the caller never sees an error for it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar, Union

import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, ScaleIntensityRange, ScaleIntensityRangePercentiles
from monai.transforms import Spacing
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medssl.errors import CacheError, MedsslError, Reason

log = logging.getLogger(__name__)

#: Bump when the entry layout or the meaning of a plan field changes: every old entry becomes a miss.
CACHE_FORMAT_VERSION = 1
#: Files changed this recently (mtime or ctime) are re-hashed instead of memoised (timestamp granularity).
RACY_WINDOW_NS = 2_000_000_000
CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]
#: A NIfTI file, a DICOM series folder, or a list of (DICOM) files forming one volume.
Source = Union[PathLike, Sequence[PathLike]]

INTENSITY_MODES = ("none", "ct_window", "percentile", "zscore")
INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": 3}  # bicubic: spline order 3 (scipy)
DTYPES = {n: getattr(torch, n) for n in ("float32", "float16", "float64", "uint8", "int16", "int32", "int64")}
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel convention: letters name where the axis points to


@dataclass(frozen=True)
class PreprocessPlan:
    """What is done to a volume before it is cached; its :meth:`fingerprint` is part of every cache key."""

    target_spacing: tuple[float, ...] | None = None  # mm; None keeps the native grid
    orientation: str | None = "RAS"
    intensity: str = "none"  # "none" | "ct_window" | "percentile" | "zscore"
    window: tuple[float, float] = (-1000.0, 1000.0)  # HU, ct_window -> [0, 1], clipped
    percentiles: tuple[float, float] = (0.5, 99.5)  # percentile -> [0, 1], clipped
    interpolation: str = "bilinear"  # "nearest" | "bilinear" | "bicubic"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # canonical types, so (1, 1, 1) and (1.0, 1.0, 1.0) give the same fingerprint
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", tuple(float(s) for s in self.target_spacing))
        object.__setattr__(self, "window", tuple(float(w) for w in self.window))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        w, p, ts = self.window, self.percentiles, self.target_spacing
        problems = [
            (self.intensity not in INTENSITY_MODES, f"intensity must be one of {INTENSITY_MODES}"),
            (self.interpolation not in INTERPOLATIONS, f"interpolation must be one of {tuple(INTERPOLATIONS)}"),
            (self.dtype not in DTYPES, f"dtype must be one of {tuple(DTYPES)}"),
            (len(w) != 2 or w[0] >= w[1], "window must be (low, high) with low < high"),
            (len(p) != 2 or not 0 <= p[0] < p[1] <= 100, "percentiles must be (low, high), 0 <= low < high <= 100"),
            (ts is not None and any(s <= 0 for s in ts), "target_spacing must be positive"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(f"{message}; got {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessPlan:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        d = dict(d)
        for k in ("target_spacing", "window", "percentiles"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def for_labels(self, dtype: str = "int16") -> PreprocessPlan:
        """Same geometry for label maps: no intensity change, nearest-neighbour resampling, integer dtype."""
        return replace(self, intensity="none", interpolation="nearest", dtype=dtype)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the plan and :data:`CACHE_FORMAT_VERSION`."""
        blob = json.dumps({"format": CACHE_FORMAT_VERSION, "plan": self.to_dict()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def apply(self, volume: MetaTensor) -> MetaTensor:
        """Reorient, resample and normalise a (X, Y, Z) or (X, Y, Z, T) volume; returns the same layout.

        MONAI transforms work on a leading channel dim: a 3D volume gets one, a 4D volume's time axis becomes it
        (all time points share one resampling and one intensity mapping).
        """
        vol = volume if isinstance(volume, MetaTensor) else MetaTensor(torch.as_tensor(volume))
        if vol.ndim not in (3, 4):
            raise ValueError(f"expected a (X, Y, Z) or (X, Y, Z, T) volume, got shape {tuple(vol.shape)}")
        img = vol.float().unsqueeze(0) if vol.ndim == 3 else vol.float().movedim(-1, 0)
        if self.orientation:
            img = Orientation(axcodes=self.orientation, labels=RAS_LABELS)(img)
        if self.target_spacing is not None:
            # scale_extent: the output covers the input field of view (4 x 2 mm -> 8 x 1 mm, not 7)
            img = Spacing(pixdim=self.target_spacing, mode=INTERPOLATIONS[self.interpolation],
                          padding_mode="border", scale_extent=True)(img)
        if self.intensity == "ct_window":
            img = ScaleIntensityRange(*self.window, b_min=0.0, b_max=1.0, clip=True)(img)
        elif self.intensity == "percentile":
            img = ScaleIntensityRangePercentiles(*self.percentiles, b_min=0.0, b_max=1.0, clip=True)(img)
        elif self.intensity == "zscore":
            img = NormalizeIntensity()(img)
        arr = torch.as_tensor(img).squeeze(0) if vol.ndim == 3 else torch.as_tensor(img).movedim(0, -1)
        return make_volume(_cast(arr, self.dtype), torch.as_tensor(img.affine))


def _cast(arr: torch.Tensor, dtype: str) -> torch.Tensor:
    """Cast to ``dtype``; integer targets are rounded and must not overflow (labels would silently wrap)."""
    target = DTYPES[dtype]
    if target.is_floating_point:
        return arr.to(target)
    arr = torch.round(arr)
    info = torch.iinfo(target)
    if arr.numel() and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(f"values [{arr.min().item()}, {arr.max().item()}] do not fit dtype {dtype}")
    return arr.to(target)


def make_volume(array: torch.Tensor, affine: torch.Tensor) -> MetaTensor:
    """A medssl volume: spatial dims first, 4x4 float64 affine, meta ``spacing`` derived from the affine."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    spacing = tuple(float(s) for s in torch.linalg.norm(affine[:3, :3], dim=0))
    return MetaTensor(torch.as_tensor(array).contiguous(), affine=affine, meta={"spacing": spacing})


# ------------------------------------------------------------------ content hashing


def source_files(source: Source) -> list[Path]:
    """The files a source consists of, sorted by absolute path (a folder is walked recursively)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            if not files:
                raise MedsslError(Reason.EMPTY_SERIES, "source folder holds no files", [p])
        elif p.is_file():
            files = [p]
        else:
            raise MedsslError(Reason.UNREADABLE, "source does not exist", [p])
    else:
        files = [Path(f) for f in source]
        if not files:
            raise MedsslError(Reason.EMPTY_SERIES, "empty list of source files")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise MedsslError(Reason.UNREADABLE, "source file does not exist", missing)
    return sorted({Path(os.path.abspath(f)) for f in files}, key=str)


def _hash_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.digest()


def _stat_key(files: Sequence[Path]) -> tuple[str, bool]:
    """(sha256 of hashed paths + size/mtime/ctime/inode, whether any file changed within the racy window)."""
    h = hashlib.sha256()
    newest = 0
    for f in files:
        st = f.stat()
        h.update(hashlib.sha256(str(f).encode()).digest())
        h.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev};".encode())
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return h.hexdigest(), time.time_ns() - newest < RACY_WINDOW_NS


def content_hash(source: Source, memo_dir: PathLike | None = None) -> str:
    """sha256 over the bytes of every file of ``source`` (per-file digests, in sorted-path order).

    With ``memo_dir``, a JSON memo keyed on the files' stat fingerprint skips re-hashing unchanged files.
    """
    files = source_files(source)
    memo = None
    if memo_dir is not None:
        key, racy = _stat_key(files)
        memo = None if racy else Path(memo_dir) / f"{key}.json"
        if memo is not None and memo.is_file():
            try:
                return str(json.loads(memo.read_text())["content_hash"])
            except (ValueError, KeyError, OSError):
                memo.unlink(missing_ok=True)
    h = hashlib.sha256(f"{len(files)};".encode())
    for f in files:
        h.update(_hash_file(f))
    digest = h.hexdigest()
    if memo is not None and _stat_key(files)[0] == key:  # unchanged while we were reading it
        _atomic_write(memo, lambda tmp: Path(tmp).write_text(json.dumps({"content_hash": digest})))
    return digest


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Write via a temp file in the same folder, then ``os.replace`` (atomic on POSIX and Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ the cache


@dataclass
class CacheStats:
    """Counters of one cache object (per process). Every access is a hit or a miss; a corrupt entry is a miss that
    is also counted in ``recomputed_corrupt``."""

    hits: int = 0
    misses: int = 0
    recomputed_corrupt: int = 0


_CORRUPT = (SafetensorError, CacheError, OSError, ValueError, KeyError, RuntimeError)
#: safetensors header dtype codes of the plan dtypes
_ST_CODES = {"float32": "F32", "float16": "F16", "float64": "F64", "uint8": "U8", "int16": "I16", "int32": "I32",
             "int64": "I64"}
T = TypeVar("T")


class PreprocessCache:
    """``get(source)`` returns ``plan.apply(loader(source))``, computed once per (file bytes, plan).

    Layout: ``root/entries/<key[:2]>/<key>.safetensors`` and the stat memo ``root/hashes/<stat key>.json``.
    ``loader`` defaults to :func:`medssl.data.loading.load_volume`; ``trust_stat=False`` disables the memo.
    """

    def __init__(self, root: PathLike, plan: PreprocessPlan, loader: Callable[[Source], MetaTensor] | None = None,
                 trust_stat: bool = True):
        self.root = Path(root)
        self.plan = plan
        self.loader = loader
        self.trust_stat = trust_stat
        self.stats = CacheStats()
        self._fingerprint = plan.fingerprint()

    def key(self, source: Source) -> tuple[str, str]:
        """(entry key, content hash) of ``source`` under this plan."""
        chash = content_hash(source, self.root / "hashes" if self.trust_stat else None)
        return hashlib.sha256((chash + self._fingerprint).encode()).hexdigest(), chash

    def contains(self, source: Source) -> bool:
        """Whether an entry exists for the current content of ``source`` (not validated)."""
        return self._path(self.key(source)[0]).is_file()

    def get(self, source: Source) -> MetaTensor:
        """The preprocessed volume, from the cache when a valid entry exists, else computed and stored."""

        def read(path: str, f: Any) -> MetaTensor:
            tensors = load_file(path)
            return make_volume(tensors["image"], tensors["affine"])

        return self._access(source, read, lambda vol: vol)

    def shape(self, source: Source) -> tuple[int, ...]:
        """Shape of the preprocessed volume, read from the entry header (computes the entry if needed)."""
        return self._access(source, lambda path, f: tuple(f.get_slice("image").get_shape()),
                            lambda vol: tuple(vol.shape))

    def get_slice(self, source: Source, axis: int, index: int) -> MetaTensor:
        """``volume.select(axis, index)``, read from the entry without loading the whole volume.

        The affine is the volume's 4x4 affine with its origin moved to the slice (through-plane column kept).
        """

        def read(path: str, f: Any) -> MetaTensor:
            image = f.get_slice("image")
            if not 0 <= index < image.get_shape()[axis]:
                raise IndexError(f"slice {index} out of range for axis {axis} of {image.get_shape()}")
            arr = image[(slice(None),) * axis + (index,)]
            return _slice_volume(arr, f.get_tensor("affine"), axis, index)

        return self._access(source, read, lambda vol: _slice_volume(vol.as_tensor().select(axis, index),
                                                                     vol.affine, axis, index))

    def clear(self) -> None:
        """Delete every entry and the hash memo."""
        for sub in ("entries", "hashes"):
            shutil.rmtree(self.root / sub, ignore_errors=True)

    # -- internals
    def _path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.safetensors"

    def _access(self, source: Source, read: Callable[[str, Any], T], from_volume: Callable[[MetaTensor], T]) -> T:
        """Validate the entry header and ``read`` it; on a missing or corrupt entry compute, store, convert."""
        key, chash = self.key(source)
        path = self._path(key)
        if path.is_file():
            try:
                with safe_open(str(path), framework="pt") as f:
                    self._check(f, key, chash)
                    out = read(str(path), f)
                self.stats.hits += 1
                return out
            except _CORRUPT as err:  # IndexError (a caller's mistake) is deliberately not caught
                log.warning("corrupt cache entry %s (%s: %s); recomputing", path.name, type(err).__name__, err)
                path.unlink(missing_ok=True)
                self.stats.recomputed_corrupt += 1
        self.stats.misses += 1
        return from_volume(self._compute(source, key, chash))

    def _check(self, f: Any, key: str, chash: str) -> None:
        """Raise :class:`CacheError` unless the header matches the key, the plan and the stored tensors."""
        meta = f.metadata() or {}
        expected = {"format": str(CACHE_FORMAT_VERSION), "key": key, "content_hash": chash,
                    "plan": self._fingerprint, "dtype": self.plan.dtype}
        bad = [k for k, v in expected.items() if meta.get(k) != v]
        image = f.get_slice("image")
        if json.loads(meta.get("shape", "null")) != list(image.get_shape()):
            bad.append("shape")
        if image.get_dtype() != _ST_CODES[self.plan.dtype]:
            bad.append("image dtype")
        affine = f.get_slice("affine")
        if list(affine.get_shape()) != [4, 4] or affine.get_dtype() != "F64":
            bad.append("affine")
        if bad:
            raise CacheError(Reason.CACHE_CORRUPT, f"entry does not match its key: {bad}")

    def _compute(self, source: Source, key: str, chash: str) -> MetaTensor:
        loader = self.loader
        if loader is None:
            from medssl.data.loading import load_volume  # lazy: written by the loader layer, heavy imports

            loader = load_volume
        out = self.plan.apply(loader(source))
        array = out.as_tensor().contiguous()
        affine = out.affine.to(torch.float64).contiguous()
        meta = {"format": str(CACHE_FORMAT_VERSION), "key": key, "content_hash": chash,
                "plan": self._fingerprint, "plan_json": json.dumps(self.plan.to_dict(), sort_keys=True),
                "dtype": self.plan.dtype, "shape": json.dumps(list(array.shape)),
                "spacing": json.dumps(list(out.meta["spacing"])),
                "source_count": str(len(source_files(source)))}
        _atomic_write(self._path(key), lambda tmp: save_file({"image": array, "affine": affine}, tmp, metadata=meta))
        return make_volume(array, affine)


def _slice_volume(arr: torch.Tensor, affine: torch.Tensor, axis: int, index: int) -> MetaTensor:
    """Wrap a slice with the volume affine translated to the slice position (through-plane column kept)."""
    affine = torch.as_tensor(affine, dtype=torch.float64).clone()
    affine[:3, 3] += affine[:3, axis] * index
    return MetaTensor(torch.as_tensor(arr).contiguous(), affine=affine)
