"""Tumour protocol pieces on tiny synthetic 2-channel cases: crops inside brain masks, region training through the
protocol (records per region), the BraTS configs, and one real BraTS case when the shared data is there."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.data.cache import PreprocessCache
from medssl.data.plan import PreprocessPlan
from medssl.finetune.seg_cases import cases_from_msd
from medssl.finetune.seg_data import SegmentationPatches
from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol
from tests.finetune.test_channels import write_msd

BRATS = {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
ARCH = {"name": "basicunet", "kwargs": {"in_channels": 2, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]}}


def test_masked_crops_are_seeded_and_optional(tmp_path):
    root = write_msd(tmp_path / "msd", n=2, shape=(40, 32, 16))
    cases = cases_from_msd(root)
    for case in cases:  # shrink the masks to a small block: every background-centred crop must sit on it
        import nibabel as nib

        img = nib.load(case.mask)
        mask = np.zeros(img.shape, np.float32)
        mask[30:36, 4:10, 6:10] = 0.99999997  # BraTS masks hold ~1, not 1
        nib.save(nib.Nifti1Image(mask, img.affine), case.mask)
    cache = PreprocessCache(tmp_path / "cache", PreprocessPlan(orientation="RAS"))
    patches = SegmentationPatches(cases, cache, roi_size=(8, 8, 8), pos=0.0, neg=1.0, flip_prob=0.0, seed=0)
    assert patches.masked
    for epoch in range(3):
        patches.set_epoch(epoch)
        for i in range(len(patches)):
            item = patches[i]
            assert item["image"].shape == (2, 8, 8, 8) and item["label"].dtype == torch.int64
            # same seed and epoch: the same crop again (where it is: test_mask_crop_centres_by_position)
            assert torch.equal(item["image"], patches[i]["image"])
    unmasked = SegmentationPatches(cases, cache, roi_size=(8, 8, 8), use_masks=False)
    assert not unmasked.masked and unmasked[0]["image"].shape == (2, 8, 8, 8)


def test_mask_crop_centres_by_position(tmp_path):
    """The centre of every negative crop is a mask voxel: read back from a coordinate-valued image."""
    import nibabel as nib

    root = write_msd(tmp_path / "msd", n=1, shape=(40, 32, 16))
    case = cases_from_msd(root)[0]
    ref = nib.load(case.mask)
    coords = np.indices(ref.shape).astype(np.float32)  # channel 0 = x index, channel 1 = y index
    for ch in range(2):
        nib.save(nib.Nifti1Image(coords[ch], ref.affine), case.image[ch])
    mask = np.zeros(ref.shape, np.float32)
    mask[30:36, 4:10, 6:10] = 1.0
    nib.save(nib.Nifti1Image(mask, ref.affine), case.mask)
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.float32), ref.affine), case.label)  # no tumour: all negative
    patches = SegmentationPatches([case], PreprocessCache(tmp_path / "c", PreprocessPlan(orientation=None)),
                                  roi_size=(8, 8, 8), pos=1.0, neg=1.0, flip_prob=0.0, seed=0)
    for epoch in range(6):
        patches.set_epoch(epoch)
        img = patches[0]["image"]
        cx, cy = int(img[0, 4, 4, 4]), int(img[1, 4, 4, 4])
        assert 30 <= cx < 36 and 4 <= cy < 10


def test_region_protocol_records_dice_per_region(tmp_path):
    root = write_msd(tmp_path / "msd", n=4, shape=(32, 24, 16))
    cfg = SegProtocolConfig(root=str(root), dataset="tumour", split_file=str(tmp_path / "split.json"), n_val=1,
                            n_test=1, architecture=ARCH, plan={"orientation": "RAS"}, counts=[1], seeds=[0],
                            methods=["scratch"], roi_size=[32, 16, 16], regions=BRATS, epochs=1, min_steps=3,
                            batch_size=2, patience=None, hu_check=False, plot=False)
    records = run_seg_protocol(cfg, tmp_path / "out", progress=False)
    metrics = {r["metric"] for r in records}
    assert {"dice", "hd95", "dice_WT", "dice_TC", "dice_ET", "hd95_WT"} <= metrics
    result = json.loads((tmp_path / "out" / "label_efficiency_tumour.json").read_text())
    run = result["runs"][0]
    assert result["regions"] == BRATS and result["channels"] == ["FLAIR", "T1c"] and run["masked_crops"]
    m = run["metrics"]
    assert set(m["dice"]) == {"WT", "TC", "ET"} and m["n_cases"] == 1 and set(m["absent"]) == {"WT", "TC", "ET"}
    assert m["per_case"][0]["case_id"] in result["case_split"]["test"]
    table = (tmp_path / "out" / "label_efficiency_tumour.md").read_text()
    assert "dice_WT" in table and "dice_ET" in table


def test_brats_configs_parse():
    cfg = SegProtocolConfig.from_yaml("configs/finetune/brats_protocol.yaml", encoder="runs/enc/encoder.json")
    assert cfg.regions == BRATS and cfg.counts == [2] and cfg.n_val == 1 and cfg.n_test == 1
    assert cfg.methods == ["whole", "finetune", "scratch"] and cfg.postprocess == "auto" and len(cfg.class_ratios) == 5
    from medssl.finetune.run_config import FinetuneConfig

    one = FinetuneConfig.from_yaml("configs/finetune/brats_finetune.yaml", encoder="runs/enc/encoder.json")
    assert one.regions == BRATS and one.use_masks and one.adapt_channels is None
    split = json.loads(open("configs/finetune/brats_split.json").read())
    assert len(split["train"]) == 2 and len(split["val"]) == 1 and len(split["test"]) == 1


@pytest.mark.realdata
def test_real_brats_cases_have_two_named_channels_and_masks():
    from tests.conftest import require_shared

    root = require_shared("brats")
    cases = cases_from_msd(root)
    from medssl.finetune.seg_cases import msd_channel_names, num_channels

    assert len(cases) == 4 and all(num_channels(c) == 2 and c.mask is not None for c in cases)
    assert msd_channel_names(root) == ["FLAIR", "T1c (T1 post-contrast)"]


def test_region_overlay_figure(tmp_path):
    from medssl.eval.figures import FigureInputError, region_overlays

    truth = np.zeros((24, 20, 8), np.int64)
    truth[4:16, 4:14, 2:6] = 2
    truth[6:12, 6:10, 3:5] = 1
    truth[8:10, 7:9, 3:5] = 4
    pred = truth.copy()
    pred[pred == 4] = 1  # ET missed
    image = np.random.default_rng(0).normal(size=(2, 24, 20, 8))
    path = region_overlays(image, truth, pred, BRATS, tmp_path / "regions.png", image_name="FLAIR", title="case")
    assert path.is_file() and path.stat().st_size > 10_000
    with pytest.raises(FigureInputError):
        region_overlays(image, truth, pred[:5], BRATS, tmp_path / "bad.png")
