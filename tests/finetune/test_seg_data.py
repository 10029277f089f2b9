"""Segmentation cases, recorded splits, plan resolution, contradiction checks and the crop / volume datasets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.data.cache import PreprocessCache
from medssl.data.nifti import write_nifti
from medssl.data.phantoms import generate_phantoms
from medssl.data.plan import PreprocessPlan
from medssl.errors import MedsslError, NiftiError
from medssl.finetune.seg_cases import (SegmentationCase, SegmentationDataError, cases_from_glob, cases_from_msd,
                                       labelled_subset, msd_label_names, num_channels, select_cases, split_cases)
from medssl.finetune.seg_data import (SegmentationPatches, SegmentationVolumes, check_card_dims, check_cases,
                                      class_ratios_error, flip_axes_error, resolve_plan)

CT = PreprocessPlan(intensity="ct_window")
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def card_of(plan: PreprocessPlan, **extra) -> dict:
    return {"spatial_dims": 3, "in_channels": 1, **extra,
            "preprocessing": {"kind": "plan", "plan": plan.to_dict(), "fingerprint": plan.fingerprint()}}


def write_case(root: Path, name: str, image: np.ndarray, label: np.ndarray, affine=AFFINE) -> SegmentationCase:
    root.mkdir(parents=True, exist_ok=True)
    write_nifti(image.astype(np.float32), root / f"{name}_0000.nii.gz", affine)
    write_nifti(label.astype(np.uint8), root / f"{name}.nii.gz", affine)
    return SegmentationCase((root / f"{name}_0000.nii.gz",), root / f"{name}.nii.gz", name)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, n=4, seed=0, shape=(24, 24, 12))
    return root / "nifti"


def test_msd_cases_and_label_names(phantoms):
    cases = cases_from_msd(phantoms)
    assert [c.case_id for c in cases] == [f"phantom_{i:03d}" for i in range(4)]
    assert cases[0].image == (phantoms / "imagesTr" / "phantom_000_0000.nii.gz",) and num_channels(cases[0]) == 1
    assert msd_label_names(phantoms) == ["background", "organ", "tumour"]
    globbed = cases_from_glob(str(phantoms / "imagesTr" / "*.nii.gz"), str(phantoms / "labelsTr" / "*.nii.gz"))
    assert globbed == cases


def test_multichannel_cases(tmp_path):
    img, lab = np.zeros((8, 8, 4)), np.zeros((8, 8, 4))
    for c in range(2):
        write_nifti(img.astype(np.float32), tmp_path / "imagesTr" / f"a_{c:04d}.nii.gz", AFFINE)
    write_nifti(np.zeros((8, 8, 4, 3), np.float32), tmp_path / "imagesTr" / "b.nii.gz", AFFINE)  # 4-D: 3 channels
    for name in ("a", "b"):
        write_nifti(lab.astype(np.uint8), tmp_path / "labelsTr" / f"{name}.nii.gz", AFFINE)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "T1", "1": "T2"}, "training": [
        {"image": "./imagesTr/a_0000.nii.gz", "label": "./labelsTr/a.nii.gz"},
        {"image": ["./imagesTr/a_0000.nii.gz", "./imagesTr/a_0001.nii.gz"], "label": "./labelsTr/a.nii.gz"},
        {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}]}))
    a, a_list, b = cases_from_msd(tmp_path)
    assert a.image == a_list.image == (tmp_path / "imagesTr/a_0000.nii.gz", tmp_path / "imagesTr/a_0001.nii.gz")
    assert (num_channels(a), num_channels(b)) == (2, 3)
    by_pattern = cases_from_glob(str(tmp_path / "imagesTr" / "a_*.nii.gz"), str(tmp_path / "labelsTr" / "a.nii.gz"))
    assert by_pattern == [a]
    with pytest.raises(SegmentationDataError, match="without a full case") as err:
        cases_from_glob(str(tmp_path / "imagesTr" / "*.nii.gz"), str(tmp_path / "labelsTr" / "a.nii.gz"))
    assert any(f.endswith("b.nii.gz") for f in err.value.files)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "./x.nii.gz", "label": "./y.nii.gz"}]}))
    with pytest.raises(SegmentationDataError, match="do not exist") as err:
        cases_from_msd(tmp_path)
    assert err.value.files == [str(tmp_path / "x.nii.gz"), str(tmp_path / "y.nii.gz")]


def test_recorded_split_is_deterministic_and_disjoint(phantoms):
    many = [SegmentationCase(c.image, c.label, f"case_{i:02d}") for i, c in enumerate(cases_from_msd(phantoms) * 5)]
    split = split_cases(many, n_val=4, n_test=5, seed=3)
    assert split == split_cases(list(reversed(many)), n_val=4, n_test=5, seed=3)  # ids and seed only
    assert split != split_cases(many, n_val=4, n_test=5, seed=4)
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [11, 4, 5] and set.union(*parts) == {c.case_id for c in many}
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert json.loads(json.dumps(split)) == split
    train = select_cases(many, split["train"])
    small, large = labelled_subset(train, 3, seed=1), labelled_subset(train, 6, seed=1)
    assert set(small) <= set(large) and small == labelled_subset(train, 3, seed=1)
    with pytest.raises(ValueError, match="count"):
        labelled_subset(train, 12)


def test_plan_comes_from_the_card_unless_overridden(tmp_path):
    path = tmp_path / "encoder.json"
    plan, record = resolve_plan(card_of(CT), path)
    assert plan == CT and record["source"] == "card"
    assert resolve_plan(card_of(CT), path, CT.to_dict())[0] == CT  # the same plan, given again
    other = PreprocessPlan(intensity="zscore")
    with pytest.raises(SegmentationDataError, match=r"differs from the card's.*intensity.*zscore") as err:
        resolve_plan(card_of(CT), path, other)
    assert err.value.files == [str(path)] and err.value.reason.value == "bad_config"
    plan, record = resolve_plan(card_of(CT), path, other, override_plan=True)
    assert plan == other and record["source"] == "override" and record["card_preprocessing"]["plan"] == CT.to_dict()
    medmnist = {"spatial_dims": 2, "in_channels": 1, "preprocessing": {"kind": "medmnist"}}
    with pytest.raises(SegmentationDataError, match="MedMNIST arrays") as err:
        resolve_plan(medmnist, path)
    assert err.value.files == [str(path)]
    edited = card_of(CT)
    edited["preprocessing"]["plan"]["window"] = [-100, 100]
    with pytest.raises(SegmentationDataError, match="does not hash to the fingerprint"):
        resolve_plan(edited, path)
    with pytest.raises(SegmentationDataError, match="needs plan="):
        resolve_plan(None, None)
    assert resolve_plan(None, None, other)[1]["source"] == "config"
    with pytest.raises(SegmentationDataError, match="card is 3-D but the task is 2-D") as err:
        check_card_dims(card_of(CT), path, 2)
    assert err.value.files == [str(path)]


def test_contradictions_name_the_file(tmp_path, phantoms):
    cases = cases_from_msd(phantoms)
    check_cases(cases, plan=CT, in_channels=1)  # phantom CT in HU: fine
    card = tmp_path / "encoder.json"
    with pytest.raises(SegmentationDataError, match="1 image channel.*expects 2") as err:
        check_cases(cases, plan=CT, in_channels=2, card_path=card)
    assert err.value.files == [str(cases[0].image[0]), str(card)]
    zero = np.zeros((8, 8, 4))
    shifted = write_case(tmp_path / "grid", "g", zero, zero)
    write_nifti(zero.astype(np.uint8), shifted.label, np.diag([1.5, 1.5, 3.0, 1.0]))
    with pytest.raises(NiftiError, match="affines") as err:
        check_cases([shifted], plan=CT, in_channels=1)
    assert err.value.files == [str(shifted.image[0]), str(shifted.label)]
    rng = np.random.default_rng(0)
    mr = write_case(tmp_path / "mr", "mr", rng.uniform(0, 900, (8, 8, 4)), zero)  # MR-like: nothing below 0
    scaled = write_case(tmp_path / "scaled", "s", rng.uniform(-1, 1, (8, 8, 4)), zero)  # already normalised
    for case in (mr, scaled):
        with pytest.raises(SegmentationDataError, match="not HU") as err:
            check_cases([case], plan=CT, in_channels=1)
        assert err.value.files == [str(case.image[0])] and isinstance(err.value, MedsslError)
        check_cases([case], plan=CT, in_channels=1, hu_check=False)
        check_cases([case], plan=PreprocessPlan(intensity="zscore"), in_channels=1)


def test_training_crops(tmp_path):
    label = np.zeros((20, 12, 6))
    label[2:5, 2:5, 1:3] = 1  # a small object in a volume smaller than the roi along two axes
    case = write_case(tmp_path / "c", "c", np.where(label > 0, 300.0, -900.0), label)
    cache = PreprocessCache(tmp_path / "cache", CT)
    ds = SegmentationPatches([case] * 3, cache, roi_size=(16, 16, 8), pos=1.0, neg=0.0, seed=0)
    items = [ds[i] for i in range(3)]
    assert all(it["image"].shape == (1, 16, 16, 8) and it["image"].dtype == torch.float32 for it in items)
    assert all(it["label"].shape == (1, 16, 16, 8) and it["label"].dtype == torch.int64 for it in items)
    assert all(it["label"].sum() == 18 for it in items)  # pos only: every crop holds the whole object
    assert all(torch.equal((it["image"] > 0.5).long(), it["label"]) for it in items)  # pixels and labels together
    again = SegmentationPatches([case] * 3, cache, roi_size=(16, 16, 8), seed=0)
    same = SegmentationPatches([case] * 3, cache, roi_size=(16, 16, 8), seed=0)
    assert torch.equal(again[1]["image"], same[1]["image"]) and torch.equal(again[1]["label"], same[1]["label"])
    draws = []
    for epoch in range(4):
        again.set_epoch(epoch)
        draws.append(again[0]["image"])
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # new crops / flips per epoch
    slices = SegmentationPatches([case], cache, roi_size=(16, 16), spatial_dims=2, seed=0)
    assert len(slices) == 6 and slices[1]["image"].shape == (1, 16, 16)


def test_flips_only_along_the_allowed_axes(tmp_path):
    """Labels with a direction (anterior = 1 in the low half of axis 1, posterior = 2 in the high half) keep their
    places when only axis 0 may flip; with every axis allowed some epochs swap them (pixels go along)."""
    label = np.ones((8, 8, 4))
    label[:, 4:] = 2
    label[:, :, 0] = 0
    case = write_case(tmp_path / "c", "c", label * 100.0 - 900.0, label)
    cache = PreprocessCache(tmp_path / "cache", CT)

    def corners(**kw) -> set[tuple[int, int]]:
        ds = SegmentationPatches([case], cache, roi_size=(8, 8, 4), seed=0, **kw)
        seen = set()
        for epoch in range(12):
            ds.set_epoch(epoch)
            item = ds[0]
            image, lab = item["image"][0], item["label"][0]
            assert bool((image[lab == 2] > image[lab == 1].max()).all())  # the pixels moved with their labels
            seen.add((int(lab[0, 0, 2]), int(lab[0, 7, 2])))
        return seen

    assert corners(flip_axes=[0]) == {(1, 2)}
    assert corners(flip_axes=[]) == {(1, 2)}
    assert (2, 1) in corners()  # default: every axis, the parts swap in some epochs
    with pytest.raises(ValueError, match="flip_axes"):
        SegmentationPatches([case], cache, roi_size=(8, 8, 4), flip_axes=[3])
    assert flip_axes_error(None, 3) is None and flip_axes_error([0, 2], 3) is None
    for bad in ([0, 0], [-1], [True], "0", [0.0]):
        assert flip_axes_error(bad, 3) is not None


def test_whole_volumes_keep_geometry(tmp_path, phantoms):
    cases = cases_from_msd(phantoms)[:2]
    plan = PreprocessPlan(target_spacing=(2.0, 2.0, 3.0), intensity="ct_window")
    volumes = SegmentationVolumes(cases, PreprocessCache(tmp_path / "cache", plan))
    item = volumes[1]
    assert item["case_id"] == "phantom_001" and item["image"].shape[0] == 1
    assert item["label"].shape == (1, *item["image"].shape[1:]) and item["label"].dtype == torch.int64
    assert item["spacing"].tolist() == pytest.approx([2.0, 2.0, 3.0])
    assert set(item["label"].unique().tolist()) <= {0, 1, 2}


def test_class_balanced_crops_find_a_small_structure(tmp_path):
    """A 2-voxel label 2 in a large label-1 organ: foreground / background crops centre on it about 2/200 of the
    time; class_ratios [1e-9, 0, 1] centre (all but) every crop on it, and [1, 1, 2] about half of them."""
    label = np.zeros((40, 40, 8))
    label[5:35, 5:35, 2:6] = 1
    label[30:32, 30, 4] = 2
    case = write_case(tmp_path / "c", "c", label * 100.0 - 900.0, label)
    cache = PreprocessCache(tmp_path / "cache", CT)

    def share_with_2(n: int = 40, **kw) -> float:
        ds = SegmentationPatches([case], cache, roi_size=(8, 8, 4), seed=0, flip_axes=[], **kw)
        hits = 0
        for epoch in range(n):
            ds.set_epoch(epoch)
            hits += int((ds[0]["label"] == 2).any())
        return hits / n

    assert share_with_2(class_ratios=[1e-9, 0, 1]) == 1.0
    assert 0.3 <= share_with_2(class_ratios=[1, 1, 2]) <= 0.85
    assert share_with_2(pos=1.0, neg=1.0) <= 0.2
    assert SegmentationPatches([case], cache, roi_size=(8, 8, 4), class_ratios=[1, 1, 2]).class_ratios == [1, 1, 2]
    # a class absent from a case gets no crops from it (no error, no warning reaching the user)
    empty = write_case(tmp_path / "e", "e", label * 0 - 900.0, label * 0)
    ds = SegmentationPatches([empty], cache, roi_size=(8, 8, 4), class_ratios=[1, 1, 2])
    assert ds[0]["label"].sum() == 0
    for bad in ([1], "1,1", [1, -1], [1, 0, 0], [True, 1], [1, float("nan")], [0, 1]):
        assert class_ratios_error(bad) is not None
        with pytest.raises(ValueError, match="class_ratios"):
            SegmentationPatches([case], cache, roi_size=(8, 8, 4), class_ratios=bad)
    assert class_ratios_error(None) is None and class_ratios_error([1, 1]) is None
