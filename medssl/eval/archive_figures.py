"""Figures for looking at an archive before training on it: the index accounting and orthogonal views of a volume.

* :func:`index_accounting`: two bar charts from an index folder written by ``medssl index`` — every file seen,
  split into indexed and skipped-by-reason-code, and every series, split into accepted and rejected-by-reason. The
  counts are read from ``files.csv`` and ``rejected_series.csv``/``series.csv``, so the picture is the manifest.
* :func:`volume_planes`: the three orthogonal mid-planes of a 3D volume (a MetaTensor from
  :func:`medssl.data.dicom.read_dicom_series` / :func:`medssl.data.nifti.read_nifti`, or an array with
  ``spacing``) in the radiological convention, drawn with the physical aspect ratio of each plane so anisotropic
  voxels do not distort anatomy.

Both write a PNG (Agg canvas, atomic write) and return its path. Titles and labels hold reason codes and counts
only; series keys are salted hashes, never patient identifiers.
"""
from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medssl.eval.figures import FigureInputError, as_numpy
from medssl.eval.plots import save_png
from medssl.storage.hashing import PathLike

__all__ = ["index_accounting", "orthogonal_planes", "volume_planes"]

#: colours of the accepted bar and of the skipped/rejected bars
OK_COLOUR, SKIP_COLOUR = "#2a9d8f", "#e76f51"


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FigureInputError("index_dir", f"{path.name} is missing from {path.parent} (not a medssl index folder?)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _bars(ax: Any, counts: dict[str, int], ok_label: str, title: str, unit: str) -> None:
    """Horizontal bars: the accepted count first (teal), then each reason code by count (orange)."""
    names = list(counts)
    values = [counts[n] for n in names]
    colours = [OK_COLOUR if n == ok_label else SKIP_COLOUR for n in names]
    ypos = np.arange(len(names))[::-1]
    ax.barh(ypos, values, color=colours)
    ax.set_yticks(ypos, labels=names, fontsize=9)
    top = max(values) if values else 1
    for y, v in zip(ypos, values):
        ax.text(v + 0.01 * top, y, str(v), va="center", fontsize=9)
    ax.set_xlim(0, top * 1.15 + 1)
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)


def index_accounting(index_dir: PathLike, path: PathLike, *, title: str | None = None) -> Path:
    """Bar charts of what ``medssl index`` did with every file and every series of an archive (see module doc)."""
    index_dir = Path(index_dir)
    files = _rows(index_dir / "files.csv")
    series = _rows(index_dir / "series.csv")
    rejected = _rows(index_dir / "rejected_series.csv")
    indexed = sum(r["status"] == "indexed" for r in files)
    skipped = Counter(r["reason"] for r in files if r["status"] != "indexed")
    file_counts = {"indexed": indexed, **dict(skipped.most_common())}
    series_counts = {"accepted": len(series), **dict(Counter(r["reason"] for r in rejected).most_common())}
    fig = Figure(figsize=(11.0, 0.35 * max(len(file_counts), len(series_counts)) + 2.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    _bars(left, file_counts, "indexed", f"files: {len(files)} seen = {indexed} indexed + {sum(skipped.values())} "
          "skipped", "files")
    _bars(right, series_counts, "accepted", f"series: {len(series)} accepted, {len(rejected)} rejected", "series")
    fig.suptitle(title or "Archive index: every file and series accounted for", fontsize=12)
    return save_png(fig, path)


def orthogonal_planes(volume: Any, *, spacing: Sequence[float] | None = None, channel: int = 0
                      ) -> tuple[list[tuple[str, np.ndarray, float]], tuple[float, float, float], str]:
    """The pictures :func:`volume_planes` draws: ``([(name, picture (rows, cols), aspect), ...] for axial, coronal,
    sagittal, spacing in L-P-S order, note)``; ``aspect`` is row spacing / column spacing."""
    import nibabel as nib

    arr = as_numpy(volume).astype(np.float64)
    if arr.ndim == 4:
        if not 0 <= channel < arr.shape[0]:
            raise FigureInputError("channel", f"{channel} is out of range for {arr.shape[0]} channels")
        arr = arr[channel]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise FigureInputError("volume", f"expected a 3D volume (X, Y, Z) or (C, X, Y, Z), got {arr.shape}")
    affine = getattr(volume, "affine", None)
    if affine is not None and spacing is None:
        a = as_numpy(affine).astype(np.float64)
        if a.shape != (4, 4) or not np.isfinite(a).all():
            raise FigureInputError("volume", f"its affine must be a finite 4x4 matrix, got shape {a.shape}")
        voxel_size = np.linalg.norm(a[:3, :3], axis=0)
        transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(a),
                                                    nib.orientations.axcodes2ornt(("L", "P", "S")))
        arr = nib.orientations.apply_orientation(arr, transform)
        sizes = [0.0, 0.0, 0.0]
        for axis, (to, _) in enumerate(transform):
            sizes[int(to)] = float(voxel_size[axis])
        spacing, note = sizes, "L-P-S display"
    elif spacing is None:
        spacing, note = (1.0, 1.0, 1.0), "spacing unknown, drawn isotropic"
    else:
        note = "as stored"
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise FigureInputError("spacing", f"expected three positive spacings, got {tuple(spacing)}")
    sx, sy, sz = (float(s) for s in spacing)
    cx, cy, cz = (n // 2 for n in arr.shape)
    planes = [(f"axial (slice {cz} of {arr.shape[2]})", arr[:, :, cz].T, sy / sx),
              (f"coronal (slice {cy} of {arr.shape[1]})", arr[:, cy, :].T[::-1], sz / sx),
              (f"sagittal (slice {cx} of {arr.shape[0]})", arr[cx, :, :].T[::-1], sz / sy)]
    return planes, (sx, sy, sz), note


def volume_planes(volume: Any, path: PathLike, *, spacing: Sequence[float] | None = None,
                  title: str | None = None, channel: int = 0) -> Path:
    """Axial, coronal and sagittal mid-planes of ``volume`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``), each at its
    physical aspect ratio.

    With an affine (a MetaTensor from medssl's readers, RAS world coordinates) the volume is first turned to the
    nearest L-P-S voxel order, so the planes show the radiological convention whatever the stored orientation:
    patient left on the picture's right, anterior up in the axial plane, superior up in the coronal and sagittal
    planes (oblique volumes: the nearest axes). Spacing comes from the affine. A plain array is drawn as stored;
    give ``spacing`` for it (else isotropic is assumed, and the title says so)."""
    planes, spacing, note = orthogonal_planes(volume, spacing=spacing, channel=channel)
    # one grey window for the three planes (1st-99th percentile of all their pixels), so a plane that misses the
    # bright structures is not stretched to white
    lo, hi = np.nanpercentile(np.concatenate([p.reshape(-1) for _, p, _ in planes]), [1, 99])
    hi = hi if hi > lo else lo + 1.0
    fig = Figure(figsize=(12.0, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, picture, aspect) in zip(axes, planes):
        ax.imshow(picture, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    (ny, nx), nz = planes[0][1].shape, planes[1][1].shape[0]  # axial picture is (Y, X), coronal (Z, X)
    shape = f"{nx}x{ny}x{nz}"
    size = "spacing " + " x ".join(f"{s:.3g}" for s in spacing) + " mm"
    fig.suptitle(f"{title + ': ' if title else ''}{shape} voxels, {size} ({note})", fontsize=12)
    return save_png(fig, path)
