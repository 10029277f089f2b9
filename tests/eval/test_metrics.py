"""Segmentation metrics against hand-computed values on synthetic cubes and squares; empty-mask conventions.

Two equal cubes of side s, the second shifted by d >= s voxels along one axis: every surface voxel of one lies
exactly ``d - x`` voxels (x = its layer 0..s-1 along that axis) from the facing surface of the other, so the
largest directed distances are ``d`` (a whole face, 16 of the 56 surface voxels of a 4-cube, i.e. more than 5%):
HD95 = d voxels = d * spacing[axis] mm, Dice = 0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.eval.metrics import classification_metrics, segmentation_metrics
from medssl.eval.probe import classification_metrics as probe_metrics


def _cubes(shift: int, axis: int, dims: int = 3, side: int = 4, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    ref, pred = np.zeros((size,) * dims, np.int64), np.zeros((size,) * dims, np.int64)
    box = [slice(3, 3 + side)] * dims
    ref[tuple(box)] = 1
    box[axis] = slice(3 + shift, 3 + shift + side)
    pred[tuple(box)] = 1
    return pred, ref


def test_classification_metrics_is_the_probe_function():
    assert classification_metrics is probe_metrics


@pytest.mark.parametrize("dims, axis, shift, spacing, hd95", [
    (3, 2, 7, None, 7.0),
    (3, 2, 7, (1.0, 1.0, 2.5), 17.5),
    (3, 0, 5, (0.5, 2.0, 2.0), 2.5),
    (2, 1, 6, (2.0, 3.0), 18.0),
    (2, 0, 4, 1.5, 6.0),
])
def test_disjoint_shifted_cubes(dims, axis, shift, spacing, hd95):
    pred, ref = _cubes(shift, axis, dims)
    out = segmentation_metrics(pred, ref, num_classes=2, spacing=spacing)
    assert out["labels"] == [1] and out["dice"][1] == 0.0
    assert out["hd95"][1] == pytest.approx(hd95)
    assert out["hd95_unit"] == ("voxel" if spacing is None else "mm")


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_overlapping_cubes_dice(shift):
    pred, ref = _cubes(shift, axis=1)
    out = segmentation_metrics(torch.as_tensor(pred), torch.as_tensor(ref), num_classes=2)
    # overlap (4 - shift) * 16 voxels of 64 + 64
    assert out["dice"][1] == pytest.approx((4 - shift) / 4)


def test_one_voxel_shift_hd95_is_one_voxel():
    # every surface voxel of one cube is 0 or 1 voxel from the other's surface
    pred, ref = _cubes(1, axis=2)
    assert segmentation_metrics(pred, ref, 2)["hd95"][1] == pytest.approx(1.0)
    assert segmentation_metrics(ref, ref, 2, spacing=2.0) == {"dice": {1: 1.0}, "hd95": {1: 0.0}, "labels": [1],
                                                              "hd95_unit": "mm"}


def test_multilabel_and_empty_conventions():
    ref = np.zeros((20, 20), np.int64)
    ref[2:6, 2:6] = 1  # label 1 present in both, label 2 only predicted, label 3 in neither, label 4 only in ref
    ref[12:15, 12:15] = 4
    pred = ref.copy()
    pred[12:15, 12:15] = 0
    pred[15:18, 2:5] = 2
    out = segmentation_metrics(pred, ref, num_classes=5)
    assert out["labels"] == [1, 2, 3, 4]
    assert out["dice"] == {1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0}
    assert out["hd95"][1] == 0.0 and all(math.isnan(out["hd95"][c]) for c in (2, 3, 4))
    with_bg = segmentation_metrics(pred, ref, num_classes=5, include_background=True)
    assert with_bg["labels"][0] == 0 and 0 < with_bg["dice"][0] < 1


def test_invalid_inputs():
    a = np.zeros((8, 8), np.int64)
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(a, np.zeros((8, 9), np.int64), 2)
    with pytest.raises(ValueError, match="outside"):
        segmentation_metrics(a + 2, a, 2)
    with pytest.raises(ValueError, match="one label map"):
        segmentation_metrics(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), 2)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(a, a, 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="fractional"):
        segmentation_metrics(a + 0.5, a, 2)


def test_dice_only_leaves_hd95_undefined_and_dice_unchanged():
    """hd95=False (validation, the post-processing choice) skips the distance transforms, nothing else."""
    from medssl.eval.metrics import region_metrics

    pred, true = np.zeros((12, 12, 6), np.int64), np.zeros((12, 12, 6), np.int64)
    pred[2:6, 2:6, 1:4], true[3:7, 2:6, 1:4] = 1, 1
    pred[8:10, 8:10, 2:4], true[8:11, 8:11, 2:4] = 2, 2
    full, fast = (segmentation_metrics(pred, true, 3, spacing=(1.0, 1.0, 2.0), hd95=h) for h in (True, False))
    assert fast["dice"] == full["dice"] and all(math.isfinite(v) for v in full["hd95"].values())
    assert all(math.isnan(v) for v in fast["hd95"].values())
    masks = [np.stack([pred > 0, pred == 2]), np.stack([true > 0, true == 2])]
    full, fast = (region_metrics(*masks, ["WT", "ET"], spacing=1.0, hd95=h) for h in (True, False))
    assert fast["dice"] == full["dice"] and fast["absent"] == full["absent"] == []
    assert all(math.isfinite(v) for v in full["hd95"].values()) and all(math.isnan(v) for v in fast["hd95"].values())
