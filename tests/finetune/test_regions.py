"""Region mapping (BraTS WT / TC / ET), labels painted back, and per-region Dice / HD95 against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.eval.metrics import region_metrics, summarize_cases
from medssl.finetune.regions import BRATS_REGIONS, RegionError, RegionMap
from medssl.finetune.segmentation import SegmentationFinetuner

NAMES = ("WT", "TC", "ET")
BASICUNET = {"name": "basicunet", "kwargs": {"in_channels": 2, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]}}


def test_brats_regions_masks_and_labels_back():
    regions = RegionMap.from_config(BRATS_REGIONS)
    assert regions.names == NAMES and regions.paint_labels() == {"WT": 2, "TC": 1, "ET": 4}
    labels = torch.tensor([0, 1, 2, 3, 4]).reshape(1, 1, 5)
    masks = regions.masks(labels)
    assert masks.shape == (3, 1, 1, 5)
    assert masks[:, 0, 0].int().tolist() == [[0, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 0, 0, 0, 1]]
    # back to labels: 3 (non-enhancing) is "TC but not ET", written as the core label 1; the rest round-trips
    assert regions.to_labels(masks)[0, 0].tolist() == [0, 1, 2, 1, 4]
    # float labels (as BraTS stores them) and probabilities thresholded at 0.5
    assert regions.masks(labels.float()).equal(masks)
    assert regions.to_labels(masks.float() * 0.6 + 0.1)[0, 0].tolist() == [0, 1, 2, 1, 4]
    # ET predicted outside WT still gets 4 (sub-regions painted last): the written map stays nested
    odd = torch.zeros(3, 1, 1, 2, dtype=torch.bool)
    odd[2, 0, 0, 1] = True
    assert regions.to_labels(odd)[0, 0].tolist() == [0, 4]
    # another core label, and the mapping round trip
    core3 = RegionMap.from_config(BRATS_REGIONS, {"TC": 3})
    assert core3.to_labels(masks)[0, 0].tolist() == [0, 3, 2, 3, 4]
    assert RegionMap.from_config(regions.to_config(), regions.paint_labels()) == regions


@pytest.mark.parametrize("regions, paint, match", [
    ({}, None, "at least one"),
    ({"A": [0, 1]}, None, "positive"),
    ({"A": [1, 2], "B": [2, 3]}, None, "overlap without"),
    ({"A": [1, 2], "B": [2, 1]}, None, "same labels"),
    ({"A": [1, 2], "B": [1], "C": [2]}, None, "belongs to a sub-region"),
    (BRATS_REGIONS, {"TC": 4}, "none of its sub-regions"),
    (BRATS_REGIONS, {"XX": 1}, "unknown regions"),
])
def test_bad_region_mappings_raise(regions, paint, match):
    with pytest.raises(RegionError, match=match):
        RegionMap.from_config(regions, paint)


def _cube(shape, lo, hi):
    m = torch.zeros(shape, dtype=torch.bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_region_metrics_hand_computed():
    shape = (8, 6, 6)
    # WT: reference 2x2x2 cube, prediction the same cube shifted one voxel along x (2 mm): overlap 4 of 8 + 8
    true_wt, pred_wt = _cube(shape, (1, 1, 1), (3, 3, 3)), _cube(shape, (2, 1, 1), (4, 3, 3))
    # TC: identical single voxels; ET: absent from both; (a 4th region) predicted only
    true_tc = pred_tc = _cube(shape, (1, 1, 1), (2, 2, 2))
    empty = torch.zeros(shape, dtype=torch.bool)
    names = ("WT", "TC", "ET", "X")
    out = region_metrics(torch.stack([pred_wt, pred_tc, empty, pred_tc]), torch.stack([true_wt, true_tc, empty, empty]),
                         names, spacing=(2.0, 1.0, 1.0))
    assert out["dice"]["WT"] == pytest.approx(2 * 4 / (8 + 8))
    # every voxel of a 2-voxel-thick cube is a surface voxel: directed distances are 4 x 0 mm and 4 x 2 mm, both
    # ways; their 95th percentile (linear interpolation) is 2 mm
    assert out["hd95"]["WT"] == pytest.approx(2.0)
    assert out["dice"]["TC"] == 1.0 and out["hd95"]["TC"] == 0.0
    assert math.isnan(out["dice"]["ET"]) and math.isnan(out["hd95"]["ET"]) and out["absent"] == ["ET"]
    assert out["dice"]["X"] == 0.0 and math.isnan(out["hd95"]["X"]) and out["hd95_unit"] == "mm"

    # a second case where ET is present (Dice 2*1/(1+3) = 0.5): ET's mean stands for that case only
    et_true, et_pred = _cube(shape, (5, 1, 1), (6, 2, 2)), _cube(shape, (5, 1, 1), (6, 2, 4))
    second = region_metrics(torch.stack([true_wt, true_tc, et_pred, empty]),
                            torch.stack([true_wt, true_tc, et_true, empty]), names)
    assert second["dice"]["ET"] == pytest.approx(0.5) and second["absent"] == ["X"]
    summary = summarize_cases([out, second], names)
    assert summary["dice"]["WT"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["dice"]["ET"] == pytest.approx(0.5)  # not (NaN + 0.5) / 2, not (1 + 0.5) / 2
    assert summary["absent"] == {"WT": 0, "TC": 0, "ET": 1, "X": 1}
    assert summary["n_defined"] == {"WT": 2, "TC": 2, "ET": 1, "X": 1}
    assert summary["hd95_undefined"] == {"WT": 0, "TC": 0, "ET": 0, "X": 1}  # case 1: predicted, not there
    assert summary["dice"]["X"] == 0.0 and summary["hd95"]["X"] is None
    assert summary["mean_dice"] == pytest.approx(np.mean([0.75, 1.0, 0.5, 0.0]))
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary["dice"].values())


def test_region_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="R = 3"):
        region_metrics(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 4), NAMES)


def test_sigmoid_region_segmenter_outputs_loss_and_labels():
    module = SegmentationFinetuner(num_classes=5, init="scratch", architecture=BASICUNET, roi_size=(32, 16, 16),
                                   plan={"orientation": "RAS"}, regions=BRATS_REGIONS, channels=["FLAIR", "T1c"])
    assert module.net.final_conv.out_channels == 3 and module.hparams["regions"] == BRATS_REGIONS
    assert module.hparams["region_labels"] == {"WT": 2, "TC": 1, "ET": 4}
    label = torch.zeros(2, 1, 32, 16, 16, dtype=torch.int64)
    label[:, :, 8:20, 4:12, 4:12] = 2
    label[:, :, 10:16, 6:10, 6:10] = 1
    label[:, :, 12:14, 7:9, 7:9] = 4
    # loss of perfect logits is far below that of the opposite ones (Dice + BCE per region channel)
    target = module.regions.batch_masks(label)
    good, bad = module.compute_loss((target * 2 - 1) * 20, label), module.compute_loss((1 - target * 2) * 20, label)
    assert good < 0.01 < 1.5 < bad
    # logits -> original labels (3 would become 1); a whole (C, *S) image through the sliding window
    assert module.logits_to_labels(((target[0] * 2 - 1) * 5)).equal(label[0, 0])
    pred = module.predict_volume(torch.randn(2, 40, 20, 18))
    assert pred.shape == (40, 20, 18) and set(pred.unique().tolist()) <= {0, 1, 2, 4}
    with pytest.raises(ValueError, match="outside the 3 classes"):
        SegmentationFinetuner(num_classes=3, init="scratch", architecture=BASICUNET, roi_size=(32, 16, 16),
                              plan={"orientation": "RAS"}, regions=BRATS_REGIONS)


def test_class_trained_segmenter_scores_regions():
    module = SegmentationFinetuner(num_classes=5, init="scratch", architecture=BASICUNET, roi_size=(32, 16, 16),
                                   plan={"orientation": "RAS"}, regions=BRATS_REGIONS, region_training="classes")
    assert module.net.final_conv.out_channels == 5
    true = torch.zeros(6, 6, 6, dtype=torch.int64)
    true[1:5, 1:5, 1:5] = 2
    true[2:4, 2:4, 2:4] = 3  # TC only through label 3; ET absent
    pred = true.clone()
    pred[2:4, 2:4, 2:4] = 2  # the core missed: WT perfect, TC empty in the prediction
    m = module.case_metrics(pred, true)
    assert m["dice"]["WT"] == 1.0 and m["dice"]["TC"] == 0.0 and m["absent"] == ["ET"]
