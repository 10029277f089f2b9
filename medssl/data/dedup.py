"""Duplicates in an archive (``medssl index --dedup``): byte-identical files, the same pixels under other UIDs, and
near-identical volumes.

Three kinds, each reported in ``duplicates.csv`` (``kind, series_key, duplicate_of, distance``; every key a salted
hash) and counted in ``index.json``:

- ``file``: byte-identical files (sha256 of the bytes; only files whose size collides are hashed, and a file
  unchanged since the last run is not read again: its salted digest is kept in the index's header cache). The
  first by relative path is kept; every later copy is **skipped** in ``files.csv`` with reason
  ``duplicate_file`` *before* files are grouped into series, so a copied slice never makes its series look like it
  has two slices at one position, and a copied folder yields its series once. For this kind ``series_key`` and
  ``duplicate_of`` are file keys, :func:`file_key` of the copy's and the original's relative paths.
- ``series``: a series whose decoded, rescaled voxels equal those of an earlier one (re-exported with new UIDs,
  re-encoded in another transfer syntax, stored in another slice order): sha256 of the array in canonical (closest
  RAS) axis order plus its shape and spacing (1 µm), see :func:`exact_hash`.
- ``near``: a volume within :data:`NEAR_MAX_DISTANCE` bits (Hamming) of an earlier kept one under a 3D perceptual
  hash (:func:`perceptual_hash`): area-averaged to :data:`NEAR_GRID` ³ in canonical axis order, 3D DCT, the
  :data:`NEAR_COEFFS` ³ lowest frequencies without DC compared to their median -> 511 bits. Invariant to global
  intensity shifts and scales. Calibrated on the phantoms of :mod:`medssl.data.phantoms`, which differ from each
  other far less than patients do: any two different phantoms (30 at 48x48x32, 435 pairs; 12 at 32x32x16 to
  48x48x24) were at least 140 bits apart; copies with an intensity shift or scale were 0 bits, with Gaussian noise
  of 10 HU (plus a shift) at most 56 bits at 48x48x24 and 84 at 32x32x16, a 1-voxel roll or a dropped slice at most
  98. Heavier noise (30 HU) on small volumes reaches 140 bits: not reliably caught. The DCT sign bits of a nearly
  symmetric body flip easily, so the hash is for light changes (re-exports, re-scaling, mild denoising).

Series and near duplicates get ``status`` ``duplicate`` / ``near_duplicate`` in ``series.csv``; their files stay
``indexed`` (they are valid DICOM), and :meth:`ScanDataset.from_index <medssl.data.dataset.ScanDataset.from_index>`
and the ``ArchiveIndex`` source use only ``ok`` / ``ok_with_warnings`` series, so a duplicate can never sit on the
other side of a train/val/test split from its original. The kept one is the first by the smallest relative path
of its files; a volume is compared with kept volumes only (chains do not propagate). Decoding happens only with
``--dedup``; a series that fails to decode here is left as indexed and counted as ``not_compared``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from medssl.data.deid import hash_identifier
from medssl.storage.hashing import file_sha256

DUPLICATES_COLUMNS = ("kind", "series_key", "duplicate_of", "distance")
NEAR_GRID = 32
NEAR_COEFFS = 8
NEAR_BITS = NEAR_COEFFS ** 3 - 1
#: Hamming distance (of 511 bits) at or below which two volumes are near duplicates (see module docstring).
NEAR_MAX_DISTANCE = 112
#: series.csv status of each duplicate kind (kind ``file`` is a files.csv skip reason instead)
STATUS = {"series": "duplicate", "near": "near_duplicate"}


def file_key(rel: str, salt: str) -> str:
    """Salted key of a file (its relative path), as used for ``kind == "file"`` rows of duplicates.csv."""
    return hash_identifier("file:" + rel, salt)


def content_digest(path: str, salt: str) -> str:
    """Salted digest of a file's bytes (sha256 under the archive's salt): what ``file`` duplicates compare, and what
    the index's header cache keeps so that an unchanged file is not read again by the next ``--dedup`` run."""
    return hash_identifier("sha256:" + file_sha256(path), salt, 32)


def duplicate_files(candidates: Sequence[tuple[str, str, int]], salt: str,
                    known: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``(rel, path, size)`` -> ``({copy rel: original rel}, {rel: content digest})`` for byte-identical files; the
    original is the first by relative path. Only files sharing a size are compared; ``known`` holds the digests
    (:func:`content_digest`) of files unchanged since they were computed, which are not read again. The second
    dict holds the digest of every file compared (for the cache)."""
    known = known or {}
    by_size: dict[int, list[tuple[str, str]]] = {}
    for rel, path, size in candidates:
        by_size.setdefault(size, []).append((rel, path))
    copies: dict[str, str] = {}
    digests: dict[str, str] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        first: dict[str, str] = {}
        for rel, path in sorted(group):
            digest = known.get(rel)
            if digest is None:
                try:
                    digest = content_digest(path, salt)
                except OSError:
                    continue  # vanished or unreadable since its header was read: not a duplicate of anything
            digests[rel] = digest
            if digest in first:
                copies[rel] = first[digest]
            else:
                first[digest] = rel
    return copies, digests


# ------------------------------------------------------------------------------------------------- fingerprints
def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """``array`` (X, Y, Z[, T]) permuted/flipped to the closest RAS axis order, and its spacing in that order."""
    from nibabel.orientations import apply_orientation, io_orientation

    affine = np.asarray(affine, dtype=np.float64)
    ornt = io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        out_spacing[int(target)] = float(spacing[axis])
    return apply_orientation(np.asarray(array), ornt), tuple(out_spacing)


def exact_hash(array: np.ndarray, spacing: Sequence[float]) -> str:
    """sha256 of shape, spacing (to 1 µm) and the voxel values as float64 (so int16 5 and float32 5.0 agree),
    hashed slab by slab along the last axis (no float64 copy of the whole volume)."""
    h = hashlib.sha256(f"{tuple(array.shape)}|{tuple(round(float(s), 3) for s in spacing)}|".encode())
    arr = np.moveaxis(np.asarray(array), 2, 0)  # slices first (4D: time points stay last)
    for slab in arr:
        h.update(np.ascontiguousarray(slab, dtype=np.float64).tobytes())
    return h.hexdigest()


def perceptual_hash(array: np.ndarray) -> np.ndarray | None:
    """511-bit DCT hash of a canonical volume (4D: its mean over time), or None for a constant volume."""
    import torch
    from scipy.fft import dctn

    vol = np.asarray(array, dtype=np.float32)
    vol = vol.mean(axis=3) if vol.ndim == 4 else vol
    pooled = torch.nn.functional.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(vol))[None, None],
                                                     NEAR_GRID)[0, 0].double().numpy()
    coeffs = dctn(pooled, norm="ortho")[:NEAR_COEFFS, :NEAR_COEFFS, :NEAR_COEFFS].ravel()[1:]
    if not np.any(np.abs(coeffs) > 1e-6 * max(1.0, float(np.abs(pooled).max()))):
        return None
    return coeffs > np.median(coeffs)


@dataclass(frozen=True)
class Fingerprint:
    """What dedup knows of one series: exact hash and perceptual bits, or the reason it could not decode."""

    exact: str = ""
    bits: np.ndarray | None = None
    reason: str = ""


def fingerprint(source: Any, policy: dict[str, str]) -> Fingerprint:
    """Decode one series (with the index's reader policy) and fingerprint it; never raises for bad data."""
    from medssl.data.loading import load_volume
    from medssl.errors import MedsslError, Reason

    try:
        vol = load_volume(source, **policy)
        array, spacing = canonical(vol.as_tensor().numpy(), vol.affine.numpy())
    except MedsslError as exc:
        return Fingerprint(reason=exc.reason.value)
    except Exception:  # noqa: BLE001 - a decoder failure costs this series its comparison, not the index
        return Fingerprint(reason=Reason.UNDECODABLE.value)
    return Fingerprint(exact_hash(array, spacing), perceptual_hash(array))


def _fingerprint_job(key: str, source: Any, policy: dict[str, str]) -> tuple[str, Fingerprint]:
    return key, fingerprint(source, policy)


def fingerprint_all(jobs: Sequence[tuple[str, Any]], policy: dict[str, str], workers: int,
                    show: bool, options: dict[str, dict] | None = None) -> dict[str, Fingerprint]:
    """``(series key, source)`` -> fingerprints, decoded in a process pool when ``workers > 1``, behind a rich
    progress bar (``show``). ``options``: extra reader options per series key (which stack of a file that holds
    several: ``{"series": key, "salt": salt}``)."""
    options = options or {}
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    out: dict[str, Fingerprint] = {}
    columns = (TextColumn("decoding series (dedup)"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
        task = bar.add_task("dedup", total=len(jobs))
        if workers <= 1 or len(jobs) < 2:
            for key, source in jobs:
                out[key] = fingerprint(source, {**policy, **options.get(key, {})})
                bar.advance(task)
        else:
            with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
                futures = [pool.submit(_fingerprint_job, key, source, {**policy, **options.get(key, {})})
                           for key, source in jobs]
                for fut in as_completed(futures):
                    key, fp = fut.result()
                    out[key] = fp
                    bar.advance(task)
    return out


class _KeptBits:
    """The perceptual hashes kept so far, bit-packed in one growing array: the nearest kept hash of a new volume
    is one vectorised XOR + popcount over all of them (eight 64-bit words per hash), without re-stacking the kept
    list for every volume. Every volume is still compared with every kept one (a near-duplicate radius of ~22% of
    the bits leaves no exact sub-quadratic index), at 40-100 ns per pair (``benchmarks/dedup_search.py``)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._packed = np.zeros((64, (NEAR_BITS + 63) // 64 * 8), dtype=np.uint8)  # whole 64-bit words

    def nearest(self, bits: np.ndarray) -> tuple[int, int]:
        """(position, Hamming distance) of the earliest of the closest kept hashes; (-1, NEAR_BITS + 1) if none."""
        n = len(self.keys)
        if not n:
            return -1, NEAR_BITS + 1
        dist = _popcount(np.bitwise_xor(self._packed[:n], self._pack(bits)))
        best = int(np.argmin(dist))
        return best, int(dist[best])

    def add(self, key: str, bits: np.ndarray) -> None:
        n = len(self.keys)
        if n == len(self._packed):
            self._packed = np.concatenate([self._packed, np.zeros_like(self._packed)])
        self._packed[n] = self._pack(bits)
        self.keys.append(key)

    def _pack(self, bits: np.ndarray) -> np.ndarray:
        row = np.zeros(self._packed.shape[1], dtype=np.uint8)
        packed = np.packbits(bits)
        row[:packed.size] = packed
        return row


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _popcount(rows: np.ndarray) -> np.ndarray:
    """Number of set bits of each row of a uint8 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0; 8 bytes at a time
        return np.bitwise_count(rows.view(np.uint64)).sum(axis=1, dtype=np.int64)
    return _BYTE_POPCOUNT[rows].sum(axis=1, dtype=np.int64)


def find_duplicates(order: Sequence[str], prints: dict[str, Fingerprint],
                    max_distance: int = NEAR_MAX_DISTANCE) -> list[dict]:
    """duplicates.csv rows (kinds ``series`` and ``near``) for series keys in keep-first ``order``."""
    rows: list[dict] = []
    exact_first: dict[str, str] = {}
    kept = _KeptBits()
    for key in order:
        fp = prints.get(key)
        if fp is None or not fp.exact:
            continue
        if fp.exact in exact_first:
            rows.append({"kind": "series", "series_key": key, "duplicate_of": exact_first[fp.exact], "distance": 0})
            continue
        exact_first[fp.exact] = key
        if fp.bits is None:
            continue
        best, dist = kept.nearest(fp.bits)
        if dist <= max_distance:
            rows.append({"kind": "near", "series_key": key, "duplicate_of": kept.keys[best], "distance": dist})
            continue
        kept.add(key, fp.bits)
    return rows


def mark_duplicates(found: Sequence[Any], placed: dict[str, tuple[str, str, str]], series: list[dict],
                    copies: dict[str, str], salt: str, policy: dict[str, str], *, workers: int, show: bool,
                    max_distance: int = NEAR_MAX_DISTANCE) -> tuple[list[dict], int]:
    """The index's dedup pass over its crawl (``found``: ``.rel`` / ``.path``), file placements (path ->
    ``(status, reason, series key)``) and series.csv rows: duplicates.csv rows (file copies, then series and near
    duplicates, whose series rows get their :data:`STATUS` here) and the number of series that did not decode."""
    members: dict[str, list[tuple[str, str]]] = {}
    options: dict[str, dict] = {}  # stacks of an enhanced file that holds several: read by their key
    for f in found:
        state = placed.get(f.path)
        if state and state[0] == "indexed":
            keys = state[2].split(";")  # (files.csv lists every stack of such a file)
            for key in keys:
                members.setdefault(key, []).append((f.rel, f.path))
                if len(keys) > 1:
                    options[key] = {"series": key, "salt": salt}
    order = sorted((s["series_key"] for s in series), key=lambda k: min(members[k]))  # keep the first by path
    prints = fingerprint_all([(k, [p for _, p in sorted(members[k])]) for k in order], policy, workers, show,
                             options)
    rows = [{"kind": "file", "series_key": file_key(rel, salt), "duplicate_of": file_key(orig, salt), "distance": 0}
            for rel, orig in sorted(copies.items())]
    found_series = find_duplicates(order, prints, max_distance)
    status = {r["series_key"]: STATUS[r["kind"]] for r in found_series}
    for s in series:
        s["status"] = status.get(s["series_key"], s["status"])
    return rows + found_series, sum(not prints[k].exact for k in order)
