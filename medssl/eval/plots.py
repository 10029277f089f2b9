"""Figures for pretraining runs: reconstruction grids and training curves, written as PNG.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through ``pyplot``: no global
figure registry, no backend switch, nothing left open after a call (safe in workers, callbacks and tests).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medssl.storage.atomic import atomic_write
from medssl.storage.hashing import PathLike

__all__ = ["DPI", "reconstruction_grid", "save_png", "training_curves"]

DPI = 120


def display_slice(image: torch.Tensor) -> np.ndarray:
    """The 2D picture shown for one sample ``(C, *spatial)``: the first channel; for 3D ``(C, D, H, W)``, the
    middle slice along the last spatial axis (``W // 2``), shown as a ``(D, H)`` image."""
    arr = torch.as_tensor(image).detach().cpu().float()[0]
    while arr.ndim > 2:
        arr = arr[..., arr.shape[-1] // 2]
    return arr.numpy()


def reconstruction_grid(columns: Mapping[str, torch.Tensor], path: PathLike, *, max_rows: int = 8,
                        title: str | None = None) -> Path:
    """One row per sample, one column per entry of ``columns`` (e.g. input / masked / reconstruction).

    Every tensor is a batch ``(B, C, *spatial)`` (2D or 3D; see :func:`display_slice` for what is shown); all
    share ``B``, of which the first ``max_rows`` are drawn. Each row uses the grey intensity range of its first
    column, so a reconstruction is judged on the input's scale. Returns ``path`` (PNG).
    """
    if not columns:
        raise ValueError("reconstruction_grid needs at least one column")
    batch = {len(t) for t in columns.values()}
    if len(batch) != 1:
        raise ValueError(f"columns have different batch sizes: { {k: len(t) for k, t in columns.items()} }")
    for name, t in columns.items():
        if t.ndim not in (4, 5):
            raise ValueError(f"column {name!r}: expected (B, C, H, W) or (B, C, D, H, W), got {tuple(t.shape)}")
    rows = min(batch.pop(), max_rows)
    if rows < 1:
        raise ValueError("reconstruction_grid got empty batches")
    names = list(columns)
    fig = Figure(figsize=(2.0 * len(names), 2.0 * rows + (0.4 if title else 0.0)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(names), squeeze=False)
    for r in range(rows):
        pictures = [display_slice(columns[name][r]) for name in names]
        vmin, vmax = float(np.nanmin(pictures[0])), float(np.nanmax(pictures[0]))
        if not vmax > vmin:  # constant first column: centre a unit range on it
            vmin, vmax = vmin - 0.5, vmin + 0.5
        for c, (name, picture) in enumerate(zip(names, pictures)):
            ax = axes[r, c]
            ax.imshow(picture, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=11)
            if c == 0:
                ax.set_ylabel(f"#{r}", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return save_png(fig, path)


def read_metrics_csv(metrics_csv: PathLike) -> dict[str, np.ndarray]:
    """Columns of a Lightning ``CSVLogger`` ``metrics.csv`` as float arrays (empty cells -> NaN)."""
    with open(metrics_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        names = list(reader.fieldnames or [])
        rows = list(reader)
    return {n: np.array([_to_float(r.get(n)) for r in rows], dtype=np.float64) for n in names}


def training_curves(metrics_csv: PathLike, path: PathLike, *, keys: Sequence[str] | None = None,
                    title: str | None = None) -> Path:
    """Plot every column of ``metrics_csv`` whose name contains ``"loss"`` (or the given ``keys``) against
    ``step``, each over its own non-NaN rows (Lightning writes train and val metrics on separate rows).

    The y axis is logarithmic when all plotted values are positive and span more than a factor 10. Raises
    ValueError when the CSV has no ``step`` column, no such metric column, or a requested key is absent.
    """
    metrics = read_metrics_csv(metrics_csv)
    if "step" not in metrics:
        raise ValueError(f"{metrics_csv}: no 'step' column (columns: {sorted(metrics)})")
    if keys is None:
        names = [n for n in metrics if "loss" in n.lower()]
        if not names:
            raise ValueError(f"{metrics_csv}: no column containing 'loss' (columns: {sorted(metrics)})")
    else:
        names = list(keys)
        missing = [k for k in names if k not in metrics]
        if missing:
            raise ValueError(f"{metrics_csv}: no column(s) {missing} (columns: {sorted(metrics)})")
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    step, plotted = metrics["step"], []
    for name in names:
        keep = ~np.isnan(metrics[name]) & ~np.isnan(step)
        if not keep.any():
            continue
        x, y = step[keep], metrics[name][keep]
        ax.plot(x, y, label=name, marker="o" if len(x) <= 30 else None, markersize=3, linewidth=1.2)
        plotted.append(y)
    if not plotted:
        raise ValueError(f"{metrics_csv}: columns {names} hold no values")
    values = np.concatenate(plotted)
    if values.min() > 0 and values.max() > 10 * values.min():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" if all("loss" in n.lower() for n in names) else "value")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "training curves", fontsize=12)
    return save_png(fig, path)


def _to_float(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def save_png(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`, atomically (a reader never sees half a picture); returns ``path``.
    Every medssl figure is saved through this."""
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"), suffix=".png")
