"""Evaluation metrics of the fine-tuning protocols: classification (from :mod:`medssl.eval.probe`) and segmentation.

* :func:`classification_metrics` is :func:`medssl.eval.probe.classification_metrics` (accuracy, balanced accuracy,
  AUROC from class probabilities), re-exported here so that protocols import every metric from one place.
* :func:`segmentation_metrics` gives the Dice coefficient and the 95th-percentile Hausdorff distance (HD95) of
  each foreground label of one predicted label map against the reference, through MONAI's ``compute_dice`` and
  ``compute_hausdorff_distance(percentile=95)`` on one-hot tensors. HD95 is symmetric (the larger of the two
  directed 95th percentiles of the distances between the masks' surface voxels), in millimetres when ``spacing``
  is given, else in voxels.

Empty masks, per label (MONAI's defaults would give NaN Dice and a warning instead):

* prediction and reference both empty: Dice 1.0 (nothing to find, nothing found), HD95 NaN (no surface);
* exactly one of them empty: Dice 0.0, HD95 NaN (a distance to nothing is undefined, not infinite);
* both present: Dice ``2|P and R| / (|P| + |R|)`` and the HD95 above.

Average over cases and labels with ``np.nanmean`` and report how many NaN HD95 values were left out.

**Regions** (overlapping masks such as BraTS' whole tumour / tumour core / enhancing tumour, see
:mod:`medssl.finetune.regions`): :func:`region_metrics` takes ``(R, *spatial)`` boolean masks. A region absent from
both the prediction and the reference of a case has no defined Dice or HD95 there (a perfect "nothing" says nothing
about segmenting it): both are NaN and the region is listed in ``absent``. :func:`summarize_cases` averages such
per-case results over cases while leaving NaN out, and counts per region the cases left out (``absent``: both
empty; ``hd95_undefined``: exactly one empty, where Dice is 0 and HD95 undefined), so a mean never hides how many
cases it stands for (``n_cases`` per region).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medssl.eval.probe import classification_metrics

__all__ = ["classification_metrics", "region_metrics", "segmentation_metrics", "summarize_cases"]


def _label_map(value: Any, name: str) -> torch.Tensor:
    arr = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if hasattr(arr, "as_tensor"):  # MetaTensor: the metric needs plain values only
        arr = arr.as_tensor()
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be one label map of shape (H, W) or (H, W, D), got {tuple(arr.shape)}")
    if arr.is_floating_point():
        if not torch.all(arr == arr.round()):
            raise ValueError(f"{name} must hold whole class indices, found fractional values")
    elif arr.dtype == torch.bool:
        arr = arr.to(torch.int64)
    return arr.to(torch.int64)


def segmentation_metrics(pred_labels: Any, true_labels: Any, num_classes: int,
                         spacing: float | Sequence[float] | None = None,
                         include_background: bool = False, hd95: bool = True) -> dict[str, Any]:
    """Per-label Dice and HD95 of one case (see module docstring for the empty-mask conventions).

    Args:
        pred_labels: predicted label map ``(H, W)`` or ``(H, W, D)`` of class indices (numpy or torch).
        true_labels: reference label map of the same shape.
        num_classes: number of classes including the background (label 0).
        spacing: voxel size per axis (or one number, isotropic) in mm; HD95 is then in mm, otherwise in voxels.
        include_background: also report label 0.
        hd95: compute HD95 (a distance transform per label); False leaves it NaN, for callers that read only Dice.

    Returns:
        ``{"dice": {label: float}, "hd95": {label: float}, "labels": [labels], "hd95_unit": "mm" | "voxel"}``.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    pred, true = _label_map(pred_labels, "pred_labels"), _label_map(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ValueError(f"pred_labels {tuple(pred.shape)} and true_labels {tuple(true.shape)} differ in shape")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one label), got {num_classes}")
    for name, arr in (("pred_labels", pred), ("true_labels", true)):
        if arr.numel() and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
            raise ValueError(f"{name} holds labels {int(arr.min())}..{int(arr.max())}, outside 0..{num_classes - 1}")
    dims = pred.ndim
    if spacing is not None:
        spacing = [float(spacing)] * dims if np.isscalar(spacing) else [float(s) for s in spacing]
        if len(spacing) != dims or any(s <= 0 for s in spacing):
            raise ValueError(f"spacing must be one positive number or {dims} of them, got {spacing}")
    # (1, C, *spatial) one-hot, as MONAI's metrics expect
    p1h = one_hot(pred[None, None], num_classes=int(num_classes), dim=1).bool()
    t1h = one_hot(true[None, None], num_classes=int(num_classes), dim=1).bool()
    dice = compute_dice(p1h.float(), t1h.float(), include_background=True, ignore_empty=False,
                        num_classes=int(num_classes))[0]
    labels = list(range(0 if include_background else 1, int(num_classes)))
    out: dict[str, Any] = {"dice": {}, "hd95": {}, "labels": labels, "hd95_unit": "voxel" if spacing is None else "mm"}
    for c in labels:
        out["dice"][c] = float(dice[c])
        if not (hd95 and p1h[0, c].any() and t1h[0, c].any()):
            out["hd95"][c] = math.nan
            continue
        with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes to itself
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd = compute_hausdorff_distance(p1h[:, c:c + 1].float(), t1h[:, c:c + 1].float(),
                                            include_background=True, percentile=95, spacing=spacing)
        out["hd95"][c] = float(hd[0, 0])
    return out


def _spacing(spacing: float | Sequence[float] | None, dims: int) -> list[float] | None:
    if spacing is None:
        return None
    out = [float(spacing)] * dims if np.isscalar(spacing) else [float(s) for s in spacing]
    if len(out) != dims or any(s <= 0 for s in out):
        raise ValueError(f"spacing must be one positive number or {dims} of them, got {out}")
    return out


def _hd95(pred: torch.Tensor, true: torch.Tensor, spacing: list[float] | None) -> float:
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes to itself
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = compute_hausdorff_distance(pred[None, None].float(), true[None, None].float(), include_background=True,
                                        percentile=95, spacing=spacing)
    return float(hd[0, 0])


def region_metrics(pred_masks: Any, true_masks: Any, names: Sequence[str],
                   spacing: float | Sequence[float] | None = None, hd95: bool = True) -> dict[str, Any]:
    """Per-region Dice and HD95 of one case from ``(R, *spatial)`` boolean masks (see module docstring); with
    ``hd95=False`` HD95 is left NaN (no distance transforms), for callers that read only Dice.

    Returns ``{"dice": {name: float}, "hd95": {name: float}, "absent": [names], "hd95_unit": "mm" | "voxel"}``;
    Dice ``2|P and R| / (|P| + |R|)`` (0 when exactly one is empty), NaN for both metrics of absent regions.
    """
    pred, true = (torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m).bool().cpu()
                  for m in (pred_masks, true_masks))
    if pred.shape != true.shape or pred.shape[0] != len(names) or pred.ndim not in (3, 4):
        raise ValueError(f"need (R, *spatial) masks of one shape with R = {len(names)} names and 2 or 3 spatial "
                         f"axes, got {tuple(pred.shape)} and {tuple(true.shape)}")
    spacing = _spacing(spacing, pred.ndim - 1)
    out: dict[str, Any] = {"dice": {}, "hd95": {}, "absent": [], "hd95_unit": "voxel" if spacing is None else "mm"}
    for name, p, t in zip(names, pred, true):
        np_, nt = int(p.sum()), int(t.sum())
        if np_ == 0 and nt == 0:
            out["dice"][name], out["hd95"][name] = math.nan, math.nan
            out["absent"].append(name)
            continue
        out["dice"][name] = 2.0 * int((p & t).sum()) / (np_ + nt)
        out["hd95"][name] = _hd95(p, t, spacing) if hd95 and np_ and nt else math.nan
    return out


def summarize_cases(cases: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Means over cases of :func:`region_metrics` results, NaN left out and counted (see module docstring).

    Returns ``dice`` / ``hd95`` ``{name: mean or None}``, ``mean_dice`` / ``mean_hd95`` (over the regions with a
    value, None when none has), ``n_cases``, and per region ``n_defined`` (cases in the Dice mean), ``absent``
    and ``hd95_undefined`` counts.
    """
    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else None

    dice = {n: mean([c["dice"][n] for c in cases]) for n in names}
    hd95 = {n: mean([c["hd95"][n] for c in cases]) for n in names}
    absent = {n: sum(n in c["absent"] for c in cases) for n in names}
    undefined = {n: sum(math.isnan(c["hd95"][n]) and n not in c["absent"] for c in cases) for n in names}
    defined = [v for v in dice.values() if v is not None]
    hds = [v for v in hd95.values() if v is not None]
    return {"dice": dice, "hd95": hd95, "mean_dice": float(np.mean(defined)) if defined else None,
            "mean_hd95": float(np.mean(hds)) if hds else None, "hd95_unit": cases[0]["hd95_unit"] if cases else None,
            "n_cases": len(cases), "n_defined": {n: len(cases) - absent[n] for n in names}, "absent": absent,
            "hd95_undefined": undefined}
