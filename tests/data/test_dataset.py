"""Tests for medssl.data.dataset: 2D slicing, 3D patches, label alignment, channels, determinism, index input."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandFlipd
from torch.utils.data import DataLoader

from medssl.data.cache import PreprocessCache, PreprocessPlan
from medssl.data.dataset import ScanDataset, plane_affine
from medssl.errors import NiftiError, Reason


def write(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


def random_volume(tmp_path: Path, name: str, shape: tuple[int, ...], seed: int = 0,
                  affine: np.ndarray | None = None) -> Path:
    arr = np.random.default_rng(seed).random(shape).astype(np.float32)
    return write(tmp_path / name, arr, affine)


@pytest.fixture
def cache(tmp_path: Path) -> PreprocessCache:
    return PreprocessCache(tmp_path / "cache", PreprocessPlan())


def test_2d_length_is_total_slices(tmp_path: Path, cache: PreprocessCache) -> None:
    a = random_volume(tmp_path, "a.nii", (6, 7, 3))
    b = random_volume(tmp_path, "b.nii", (6, 7, 5), seed=1)
    ds = ScanDataset([a, b], cache, spatial_dims=2)
    assert len(ds) == 8
    assert ds.locate(3) == (1, 0) and ds.locate(-1) == (1, 4)
    item = ds[4]
    assert item["image"].shape == (1, 6, 7) and item["image"].dtype == torch.float32
    assert (item["source_index"], item["slice_index"]) == (1, 1)
    np.testing.assert_array_equal(item["image"][0].numpy(), nib.load(b).get_fdata(dtype=np.float32)[:, :, 1])
    ds0 = ScanDataset([a, b], cache, spatial_dims=2, slice_axis=0)
    assert len(ds0) == 12 and ds0[0]["image"].shape == (1, 7, 3)
    with pytest.raises(IndexError):
        ds[8]


def test_2d_slice_affine_and_patches(tmp_path: Path, cache: PreprocessCache) -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    path = random_volume(tmp_path, "a.nii", (6, 7, 8), affine=affine)
    item = ScanDataset([path], cache, spatial_dims=2)[5]
    np.testing.assert_allclose(item["image"].affine.numpy(), [[2, 0, 1], [0, 3, 2], [0, 0, 1]])
    sagittal = ScanDataset([path], cache, spatial_dims=2, slice_axis=0)[2]
    np.testing.assert_allclose(sagittal["image"].affine.numpy(), [[3, 0, 2], [0, 4, 3], [0, 0, 1]])
    patch = ScanDataset([path], cache, spatial_dims=2, patch_size=(4, 9))[5]
    assert patch["image"].shape == (1, 4, 9)  # cropped along x, zero-padded along y
    oblique = torch.tensor([[0.0, 0.0, 2.0, 5.0], [3.0, 0.0, 0.0, 6.0], [0.0, 4.0, 0.0, 7.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(plane_affine(oblique, 2).numpy(), [[3, 0, 6], [0, 4, 7], [0, 0, 1]])


def test_3d_whole_volume_and_patches_with_padding(tmp_path: Path, cache: PreprocessCache) -> None:
    big = random_volume(tmp_path, "big.nii", (12, 10, 9))
    small = random_volume(tmp_path, "small.nii", (5, 10, 3), seed=1)
    whole = ScanDataset([big, small], cache)
    assert len(whole) == 2 and whole[1]["image"].shape == (1, 5, 10, 3) and "slice_index" not in whole[1]
    ds = ScanDataset([big, small], cache, patch_size=(8, 8, 8))
    assert ds[0]["image"].shape == (1, 8, 8, 8)
    padded = ds[1]["image"]
    assert padded.shape == (1, 8, 8, 8)
    assert torch.count_nonzero(padded) <= 5 * 8 * 3  # only the original voxels can be non-zero
    assert torch.all(padded[0, :, :, 0] == 0) and torch.all(padded[0, :, :, -1] == 0)  # z: 3 -> 8, padded


@pytest.mark.parametrize("spatial_dims,patch", [(3, (5, 5, 5)), (2, (5, 5)), (3, (20, 4, 4))])
def test_label_alignment_under_random_crops(tmp_path: Path, cache: PreprocessCache, spatial_dims: int,
                                            patch: tuple[int, ...]) -> None:
    label = np.random.default_rng(0).integers(0, 4, size=(12, 11, 10)).astype(np.int16)
    img = write(tmp_path / "img.nii", (label * 10).astype(np.float32))
    lab = write(tmp_path / "lab.nii", label)
    ds = ScanDataset([img], cache, spatial_dims=spatial_dims, patch_size=patch, label_sources=[lab], seed=3)
    starts = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(min(len(ds), 4)):
            item = ds[i]
            assert item["image"].shape[1:] == item["label"].shape[1:] == patch
            assert torch.equal(item["image"].as_tensor(), item["label"].as_tensor().float() * 10)
            assert torch.equal(item["image"].affine, item["label"].affine)
            starts.add(tuple(item["image"].affine[:-1, -1].tolist()))
    assert len(starts) > 1  # the crops really moved


def test_label_on_another_grid_raises(tmp_path: Path, cache: PreprocessCache) -> None:
    img = random_volume(tmp_path, "img.nii", (6, 6, 6))
    lab = write(tmp_path / "lab.nii", np.zeros((6, 6, 5), np.int16))
    with pytest.raises(NiftiError) as err:
        ScanDataset([img], cache, label_sources=[lab])[0]
    assert err.value.reason is Reason.SHAPE_MISMATCH
    with pytest.raises(NiftiError) as err:  # 2D: caught when counting slices, not at the last slice
        ScanDataset([img], cache, spatial_dims=2, label_sources=[lab])
    assert err.value.reason is Reason.SHAPE_MISMATCH


def test_multichannel_stacking_and_mismatch(tmp_path: Path, cache: PreprocessCache) -> None:
    flair = random_volume(tmp_path, "flair.nii", (6, 7, 8))
    t1c = random_volume(tmp_path, "t1c.nii", (6, 7, 8), seed=1)
    item = ScanDataset([(flair, t1c)], cache)[0]
    assert item["image"].shape == (2, 6, 7, 8)
    np.testing.assert_array_equal(item["image"][1].numpy(), nib.load(t1c).get_fdata(dtype=np.float32))
    slice_item = ScanDataset([(flair, t1c)], cache, spatial_dims=2)[3]
    assert slice_item["image"].shape == (2, 6, 7)
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    moved = random_volume(tmp_path, "moved.nii", (6, 7, 8), affine=shifted)
    smaller = random_volume(tmp_path, "small.nii", (6, 7, 7))
    for other in (moved, smaller):
        with pytest.raises(NiftiError) as err:
            ScanDataset([(flair, other)], cache)[0]
        assert err.value.reason is Reason.SHAPE_MISMATCH


def test_4d_time_points_become_channels(tmp_path: Path, cache: PreprocessCache) -> None:
    path = random_volume(tmp_path, "dwi.nii", (6, 7, 8, 3))
    assert ScanDataset([path], cache, patch_size=(4, 4, 4))[0]["image"].shape == (3, 4, 4, 4)
    assert ScanDataset([path], cache, spatial_dims=2)[0]["image"].shape == (3, 6, 7)


def test_determinism_seed_and_epoch(tmp_path: Path, cache: PreprocessCache) -> None:
    path = random_volume(tmp_path, "a.nii", (16, 16, 16))
    flip = RandFlipd(keys="image", prob=0.5, spatial_axis=0)

    def draw(seed: int, epoch: int) -> list[torch.Tensor]:
        ds = ScanDataset([path] * 4, cache, patch_size=(6, 6, 6), seed=seed, transform=flip)
        ds.set_epoch(epoch)
        return [ds[i]["image"].as_tensor() for i in range(len(ds))]

    def same(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
        return all(torch.equal(a, b) for a, b in zip(x, y))

    reference = draw(0, 0)
    assert same(reference, draw(0, 0))
    assert not same(reference, draw(0, 1)) and not same(reference, draw(1, 0))
    assert not all(torch.equal(reference[0], r) for r in reference[1:])  # items differ within an epoch
    ds = ScanDataset([path] * 4, cache, patch_size=(6, 6, 6), seed=0, transform=flip)
    loaded = [b["image"].as_tensor()[0] for b in DataLoader(ds, batch_size=1, num_workers=2)]
    assert same(reference, loaded)  # independent of which worker loads which item


def test_from_index(tmp_path: Path, cache: PreprocessCache) -> None:
    archive = tmp_path / "archive"
    (archive / "p1").mkdir(parents=True)
    (archive / "p2").mkdir()
    random_volume(archive / "p1", "t1.nii", (5, 5, 4))
    random_volume(archive / "p2", "ct.nii", (5, 5, 6), seed=1)
    (archive / "p2" / "junk.txt").write_text("x")
    index = tmp_path / "index"
    index.mkdir()
    with open(index / "series.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["series_key", "status", "n_files"], ["s1", "ok", 1], ["s2", "ok", 1],
                     ["s3", "missing_slice", 1]])
    with open(index / "files.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["path", "status", "series_key"], ["p1/t1.nii", "indexed", "s1"],
                     ["p2/ct.nii", "indexed", "s2"], ["p2/junk.txt", "not_dicom", ""], ["p3/x.dcm", "indexed", "s3"]])
    ds = ScanDataset.from_index(index, archive, cache, spatial_dims=2)
    assert ds.series_keys == ["s1", "s2"] and len(ds) == 10
    assert isinstance(ds[9]["image"], MetaTensor) and ds[9]["source_index"] == 1


def test_argument_validation(tmp_path: Path, cache: PreprocessCache) -> None:
    path = random_volume(tmp_path, "a.nii", (4, 4, 4))
    with pytest.raises(ValueError):
        ScanDataset([path], cache, spatial_dims=2, patch_size=(4, 4, 4))
    with pytest.raises(ValueError):
        ScanDataset([path], cache, label_sources=[])
