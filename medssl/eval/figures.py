"""Figures for fine-tuned and pretrained models: segmentation overlays and 2D maps of encoder features (PNG).

* :func:`segmentation_overlay` / :func:`segmentation_overlays`: image | ground truth | prediction, one row per
  case; 3D volumes are shown at the slice with the most ground-truth foreground (:func:`foreground_slice`). Label
  colours are blended onto the grey image with MONAI's ``blend_images`` and named in a legend.
* :func:`region_overlays`: for overlapping evaluation regions (BraTS whole tumour / tumour core / enhancing
  tumour, :mod:`medssl.finetune.regions`), one row per region: image (e.g. FLAIR) | ground truth | prediction,
  the region's mask blended in, its Dice in the title, at the slice with the most ground-truth foreground.
* :func:`embedding_map`: features ``(N, D)`` projected to 2D with scikit-learn (PCA or t-SNE), coloured by class.

Like :mod:`medssl.eval.plots`, figures are built on an Agg canvas without ``pyplot`` and written atomically. Row
names are shown as given: pass neutral ids (``"case 3"``), never patient identifiers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from monai.visualize.utils import blend_images

from medssl.eval.plots import save_png
from medssl.storage.hashing import PathLike

__all__ = ["FigureInputError", "as_numpy", "embedding_map", "foreground_slice", "label_colours", "overlay_rgb",
           "region_overlays", "robust_window", "segmentation_overlay", "segmentation_overlays"]

LABEL_ALPHA = 0.5


class FigureInputError(ValueError):
    """Arrays that cannot be drawn; ``field`` names the offending argument."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# tab20 without its two greys (invisible on a grey image): the nine strong colours, then their light twins
PALETTE, PALETTE_ORDER = "tab20", np.r_[0:14:2, 16:20:2, 1:14:2, 17:20:2]


def label_colours(n: int) -> np.ndarray:
    """RGB colours ``(n, 3)`` of labels ``1..n``: ``tab20`` less its greys, the nine strong colours (as in
    ``tab10``) first and their light twins after; cycled beyond 18 labels."""
    cmap = matplotlib.colormaps[PALETTE]
    return np.array([cmap(int(PALETTE_ORDER[i % len(PALETTE_ORDER)]))[:3] for i in range(n)])


def overlay_rgb(picture: np.ndarray, labels: np.ndarray, alpha: float = LABEL_ALPHA) -> np.ndarray:
    """``(H, W, 3)`` RGB: the grey ``picture`` (already in [0, 1]) with label ``i > 0`` blended in
    ``label_colours(i)[i - 1]`` at weight ``alpha``; background (0) left grey."""
    labels = np.asarray(labels)
    # blend_images colours a [0, 1] label map through a named colormap; a ListedColormap maps x to colour
    # floor(x * N), so label i -> centre of the bin of label_colours' colour i - 1; 0 stays 0 (transparent)
    n_bins = matplotlib.colormaps[PALETTE].N
    bins = PALETTE_ORDER[(np.maximum(labels, 1) - 1) % len(PALETTE_ORDER)]
    x = np.where(labels > 0, (bins + 0.5) / n_bins, 0.0)
    rgb = blend_images(picture[None].astype(np.float64), x[None], alpha=alpha, cmap=PALETTE,
                       rescale_arrays=False, transparent_background=True)
    return np.clip(np.moveaxis(np.asarray(rgb), 0, -1), 0.0, 1.0)


def foreground_slice(truth: np.ndarray, axis: int = 2) -> int:
    """Index along ``axis`` of the slice of a 3D label map with the most foreground (> 0) voxels (the middle one of
    tied slices); the middle slice when there is no foreground."""
    truth = np.asarray(truth)
    axis = axis % truth.ndim
    counts = (truth > 0).sum(axis=tuple(a for a in range(truth.ndim) if a != axis))
    if counts.max() == 0:
        return truth.shape[axis] // 2
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def robust_window(picture: np.ndarray) -> np.ndarray:
    """Grey values in [0, 1] from the 1st-99th percentile of the slice (robust to CT air and metal)."""
    lo, hi = np.nanpercentile(picture, [1, 99]) if picture.size else (0.0, 1.0)
    if not hi > lo:
        return np.full(picture.shape, 0.5)
    return np.clip((picture - lo) / (hi - lo), 0.0, 1.0)


def _dice(truth: np.ndarray, pred: np.ndarray) -> float | None:
    """Mean Dice over the foreground labels present in truth or prediction (whole volume); None if none is."""
    labels = sorted((set(np.unique(truth)) | set(np.unique(pred))) - {0})
    scores = [2 * np.sum((truth == k) & (pred == k)) / (np.sum(truth == k) + np.sum(pred == k)) for k in labels]
    return float(np.mean(scores)) if scores else None


def _prepare(case: Mapping[str, Any], axis: int) -> dict[str, Any]:
    """Validate one case and cut the 2D pictures shown for it."""
    image, truth, pred = (as_numpy(case[k]) for k in ("image", "truth", "pred"))
    if truth.ndim in (3, 4) and truth.shape[0] == 1:  # (1, *spatial) label map
        truth = truth[0]
    if pred.ndim == truth.ndim + 1 and pred.shape[0] == 1:
        pred = pred[0]
    spatial = truth.shape
    if truth.ndim not in (2, 3):
        raise FigureInputError("truth", f"expected a 2D or 3D label map, optionally (1, *spatial); got {spatial}")
    if pred.shape != spatial:
        raise FigureInputError("pred", f"shape {pred.shape} differs from the ground truth {spatial}")
    if image.shape[1:] == spatial:  # (C, *spatial): the first channel is shown
        image = image[0]
    if image.shape != spatial:
        raise FigureInputError("image", f"shape {image.shape} is neither {spatial} nor (C, *{spatial})")
    for name, lab in (("truth", truth), ("pred", pred)):
        if np.issubdtype(lab.dtype, np.floating) and not np.array_equal(lab, np.round(lab)):
            raise FigureInputError(name, "expected integer labels (argmax the logits first)")
    truth, pred = truth.astype(np.int64), pred.astype(np.int64)
    where = ""
    if truth.ndim == 3:
        k = foreground_slice(truth, axis)
        a = axis % 3
        image, truth_2d, pred_2d = (np.take(v, k, axis=a) for v in (image, truth, pred))
        where = f"slice {k + 1}/{spatial[a]}, axis {a}"
    else:
        truth_2d, pred_2d = truth, pred
    return {"image": robust_window(image.astype(np.float64)), "truth": truth_2d, "pred": pred_2d, "where": where,
            "dice": _dice(truth, pred), "max_label": int(max(truth.max(initial=0), pred.max(initial=0)))}


PANEL_INCHES = 2.6  # width of one image panel; the figure adds room for row names, titles and a legend


def _panel_grid(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]], shape: tuple[int, int],
                extra_height: float) -> Figure:
    """A figure of ``len(rows)`` rows of RGB panels: each row is ``(row name, [(picture, panel title), ...])``,
    the row name on the first panel's y axis. Panels are sized from the pictures' common ``(H, W)`` ``shape`` (a
    row 1.2 to 5 inches tall plus its title); ``extra_height`` (inches) leaves room for what the caller adds
    (legend, suptitle). Both overlay figures draw through here so their rows look alike."""
    h, w = shape
    row_h = float(np.clip(PANEL_INCHES * h / w, 1.2, 5.0)) + 0.35
    n_cols = max(len(panels) for _, panels in rows)
    fig = Figure(figsize=(n_cols * PANEL_INCHES + 0.6, row_h * len(rows) + extra_height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (row_name, panels) in enumerate(rows):
        for c, (picture, panel_title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(panel_title, fontsize=10)
        axes[r, 0].set_ylabel(row_name, fontsize=9)
    return fig


def segmentation_overlays(cases: Sequence[Mapping[str, Any]], path: PathLike, *,
                          label_names: Sequence[str] | None = None, axis: int = 2, title: str | None = None) -> Path:
    """One row per case (image | ground truth | prediction), written as PNG; returns ``path``.

    Each case is a dict with ``image`` (``(C, *spatial)`` or ``(*spatial)``, 2D or 3D; the first channel is shown),
    ``truth`` and ``pred`` (integer label maps ``(*spatial)`` or ``(1, *spatial)``) and an optional ``name`` (a
    neutral id; default ``case i``). 3D cases are cut along spatial ``axis`` at :func:`foreground_slice` of the
    truth. ``label_names[i]`` names label ``i`` (index 0 = background, not coloured); the prediction panel's title
    gives the volume's mean foreground Dice. Raises :class:`FigureInputError` on shapes that do not fit.
    """
    if not cases:
        raise FigureInputError("cases", "need at least one case")
    rows = [_prepare(case, axis) for case in cases]
    n_labels = max([r["max_label"] for r in rows] + [len(label_names or ()) - 1, 1])
    names = [label_names[i] if label_names and i < len(label_names) else f"label {i}" for i in range(n_labels + 1)]
    grid = []
    for r, (row, case) in enumerate(zip(rows, cases)):
        dice = "" if row["dice"] is None else f" (mean Dice {row['dice']:.2f})"
        label = str(case.get("name", f"case {r}"))
        grid.append((f"{label}\n{row['where']}" if row["where"] else label,
                     [(row["image"][..., None].repeat(3, -1), "image"),
                      (overlay_rgb(row["image"], row["truth"]), "ground truth"),
                      (overlay_rgb(row["image"], row["pred"]), "prediction" + dice)]))
    # below the rows: the legend (0.5 in) and the suptitle
    fig = _panel_grid(grid, rows[0]["image"].shape, 0.5 + (0.4 if title else 0.0))
    colours = label_colours(n_labels)
    handles = [Patch(facecolor=colours[i - 1], edgecolor="black", label=names[i]) for i in range(1, n_labels + 1)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    return save_png(fig, path)


def segmentation_overlay(image: Any, truth: Any, pred: Any, path: PathLike, *,
                         label_names: Sequence[str] | None = None, axis: int = 2, title: str | None = None) -> Path:
    """A single case as one row of :func:`segmentation_overlays`."""
    return segmentation_overlays([{"image": image, "truth": truth, "pred": pred}], path, label_names=label_names,
                                 axis=axis, title=title)


def region_overlays(image: Any, truth: Any, pred: Any, regions: Mapping[str, Sequence[int]], path: PathLike, *,
                    axis: int = 2, image_name: str = "image", title: str | None = None) -> Path:
    """One row per region (image | ground truth | prediction) of one case, written as PNG; returns ``path``.

    ``image`` is ``(C, *spatial)`` or ``(*spatial)`` (the first channel is shown, named ``image_name``, e.g.
    ``"FLAIR"``); ``truth`` and ``pred`` are label maps with the original label values (what ``medssl predict``
    writes); ``regions`` maps each region to its labels (``{"WT": [1, 2, 3, 4], ...}``). 3D volumes are cut along
    ``axis`` at the slice with the most ground-truth foreground (one slice for every row, so the rows compare).
    The prediction panel gives the region's whole-volume Dice ("absent" when neither map holds the region).
    """
    if not regions:
        raise FigureInputError("regions", "need at least one region")
    base = _prepare({"image": image, "truth": truth, "pred": pred}, axis)
    truth_v, pred_v = (as_numpy(v).astype(np.int64) for v in (truth, pred))
    truth_v, pred_v = (v[0] if v.ndim == 4 and v.shape[0] == 1 else v for v in (truth_v, pred_v))
    picture = base["image"]
    grid = []
    for r, (name, labels) in enumerate(regions.items()):
        values = [int(v) for v in labels]
        t3, p3 = np.isin(truth_v, values), np.isin(pred_v, values)
        t2, p2 = np.isin(base["truth"], values), np.isin(base["pred"], values)
        total = int(t3.sum() + p3.sum())
        dice = "absent" if total == 0 else f"Dice {2 * int((t3 & p3).sum()) / total:.2f}"
        colour = r + 1  # one colour per region, as label r + 1 of label_colours
        grid.append((f"{name} = labels {values}\n{base['where']}" if base["where"] else name,
                     [(picture[..., None].repeat(3, -1), image_name),
                      (overlay_rgb(picture, t2.astype(np.int64) * colour), f"{name} ground truth"),
                      (overlay_rgb(picture, p2.astype(np.int64) * colour), f"{name} prediction ({dice})")]))
    fig = _panel_grid(grid, picture.shape, 0.5 if title else 0.2)  # no legend: the row names give the labels
    if title:
        fig.suptitle(title, fontsize=12)
    return save_png(fig, path)


def embedding_map(features: Any, labels: Any, path: PathLike, *, method: str = "pca",
                  class_names: Sequence[str] | Mapping[Any, str] | None = None, seed: int = 0,
                  title: str | None = None, max_points: int = 5000) -> Path:
    """Scatter of ``features (N, D)`` projected to 2D by scikit-learn ``PCA`` or ``TSNE`` (``method``), one colour
    per class of ``labels (N,)`` with a legend. Over ``max_points`` points, a random subset (``seed``) is drawn.
    ``class_names`` maps a label value to its name (a sequence is indexed by the label). Returns ``path`` (PNG)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = as_numpy(features).astype(np.float64)
    y = as_numpy(labels)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2:
        raise FigureInputError("features", f"expected (N >= 3, D >= 2), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise FigureInputError("labels", f"expected ({x.shape[0]},) class labels, got {y.shape}")
    if not np.isfinite(x).all():
        raise FigureInputError("features", "contain NaN or inf")
    if method not in ("pca", "tsne"):
        raise FigureInputError("method", f"must be 'pca' or 'tsne', got {method!r}")
    n_all = len(x)
    if n_all > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n_all, max_points, replace=False))
        x, y = x[keep], y[keep]
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(x)
        xlabel, ylabel = (f"PC{i + 1} ({100 * v:.1f}% of variance)" for i, v in enumerate(pca.explained_variance_ratio_))
    else:
        perplexity = min(30.0, max(1.0, (len(x) - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(x)
        xlabel, ylabel = "t-SNE 1", "t-SNE 2"
    classes = list(np.unique(y))
    colours = label_colours(len(classes)) if len(classes) <= len(PALETTE_ORDER) else \
        matplotlib.colormaps["viridis"](np.linspace(0, 1, len(classes)))[:, :3]
    fig = Figure(figsize=(7.0, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    size = float(np.clip(3000 / len(x), 4, 40))
    for i, cls in enumerate(classes):
        mine = y == cls
        ax.scatter(xy[mine, 0], xy[mine, 1], s=size, color=colours[i], alpha=0.75, linewidths=0,
                   label=f"{_class_name(cls, class_names)} (n={int(mine.sum())})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, markerscale=max(1, 20 / size))
    shown = f"{len(x)} of {n_all}" if len(x) < n_all else f"{n_all}"
    ax.set_title(title or f"{'PCA' if method == 'pca' else 't-SNE'} of features (n = {shown}, D = {x.shape[1]})",
                 fontsize=12)
    return save_png(fig, path)


def _class_name(value: Any, class_names: Sequence[str] | Mapping[Any, str] | None) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(class_names, Mapping):
        return str(class_names.get(value, value))
    if class_names is not None and isinstance(value, (int, np.integer)) and 0 <= value < len(class_names):
        return str(class_names[value])
    return str(value)

