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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from monai.data import MetaTensor
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medssl.storage.hashing import (  # noqa: F401 - re-exported: the cache's public vocabulary
    CHUNK, RACY_WINDOW_NS, PathLike, Source, _atomic_write, _hash_file, _stat_key, content_hash, source_files,
)
from medssl.data.plan import (  # noqa: F401
    CACHE_FORMAT_VERSION, DTYPES, INTENSITY_MODES, INTERPOLATIONS, RAS_LABELS, PreprocessPlan, _cast, make_volume,
)
from medssl.errors import CacheError, Reason

log = logging.getLogger(__name__)


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
