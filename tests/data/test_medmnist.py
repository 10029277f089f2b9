"""MedMNIST .npz dataset: item format for 2D grey / 2D RGB / 3D, scaling, labels, subsets, errors, real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandFlipd

from medssl.data.medmnist import MedMNISTDataset, load_medmnist_split
from tests.conftest import require_shared

SIZES = {"train": 6, "val": 3, "test": 4}


def write_npz(path: Path, image_shape: tuple[int, ...], *, label_cols: int = 1, n_classes: int = 3,
              drop: tuple[str, ...] = (), image_dtype=np.uint8, seed: int = 0) -> Path:
    """A tiny MedMNIST-like file: uint8 images of ``image_shape`` and (N, label_cols) labels per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        images = rng.integers(0, 256, (n, *image_shape)).astype(image_dtype)
        images[0].flat[0], images[0].flat[1] = 0, 255  # the extremes appear
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = rng.integers(0, 2 if label_cols > 1 else n_classes, (n, label_cols)).astype(
            np.uint8)
    arrays["train_labels"][0, 0] = n_classes - 1 if label_cols == 1 else 1
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return path


@pytest.mark.parametrize("image_shape,spatial_dims,item_shape", [
    ((5, 7), 2, (1, 5, 7)),
    ((5, 7, 3), 2, (3, 5, 7)),
    ((4, 5, 6), 3, (1, 4, 5, 6)),
], ids=["2d-grey", "2d-rgb", "3d"])
def test_items_shapes_scaling_and_affine(tmp_path, image_shape, spatial_dims, item_shape):
    path = write_npz(tmp_path / "x.npz", image_shape)
    raw, _ = load_medmnist_split(path, "val")
    ds = MedMNISTDataset(path, "val")
    assert len(ds) == SIZES["val"]
    assert ds.spatial_dims == spatial_dims and ds.image_shape == item_shape
    item = ds[1]
    image = item["image"]
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32 and tuple(image.shape) == item_shape
    expected = raw[1] / 255.0
    expected = np.moveaxis(expected, -1, 0) if len(image_shape) == 3 and spatial_dims == 2 else expected[None]
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)
    assert torch.equal(image.affine, torch.eye(spatial_dims + 1, dtype=torch.float64))
    assert item["source_index"] == 1
    first = ds[0]["image"]
    assert float(first.min()) == 0.0 and float(first.max()) == 1.0


def test_labels_single_and_multi(tmp_path):
    single = MedMNISTDataset(write_npz(tmp_path / "s.npz", (4, 4), n_classes=5), "train")
    lab = single[0]["label"]
    assert lab.dtype == torch.long and lab.ndim == 0 and int(lab) == 4
    assert single.num_classes == 5 and not single.multilabel
    multi = MedMNISTDataset(write_npz(tmp_path / "m.npz", (4, 4), label_cols=6), "test")
    lab = multi[2]["label"]
    assert lab.dtype == torch.long and lab.shape == (6,)
    np.testing.assert_array_equal(lab.numpy(), load_medmnist_split(multi.path, "test")[1][2])
    assert multi.num_classes == 6 and multi.multilabel
    unlabelled = MedMNISTDataset(single.path, with_labels=False)
    assert "label" not in unlabelled[0] and unlabelled.num_classes == 5


def test_subset_indices_keep_source_index(tmp_path):
    path = write_npz(tmp_path / "x.npz", (4, 5))
    full = MedMNISTDataset(path)
    sub = MedMNISTDataset(path, indices=[4, 1])
    assert len(sub) == 2
    assert [sub[i]["source_index"] for i in range(2)] == [4, 1]
    assert torch.equal(sub[0]["image"], full[4]["image"]) and torch.equal(sub[-1]["label"], full[1]["label"])
    with pytest.raises(ValueError, match="out of range"):
        MedMNISTDataset(path, indices=[0, 6])
    with pytest.raises(IndexError):
        sub[2]


def test_subset_shares_arrays_composes_positions_and_takes_its_own_transform(tmp_path):
    path = write_npz(tmp_path / "x.npz", (4, 5))
    outer = MedMNISTDataset(path, indices=[5, 3, 1])
    flip = RandFlipd(["image"], prob=1.0, spatial_axis=0)
    sub = outer.subset([2, 0], transform=flip, seed=7)
    assert sub.images is outer.images and sub.labels is outer.labels  # not read from the file again
    assert [sub[i]["source_index"] for i in range(2)] == [1, 5]  # positions of ``outer``, split indices kept
    assert torch.equal(sub[0]["image"], torch.flip(outer[2]["image"], dims=[1]))
    assert sub.seed == 7 and outer.transform is None and outer.seed == 0 and len(outer) == 3
    with pytest.raises(ValueError, match="out of range"):
        outer.subset([3])


def test_transform_seeded_per_item_and_epoch(tmp_path):
    path = write_npz(tmp_path / "x.npz", (4, 5, 6))
    ds = MedMNISTDataset(path, transform=RandFlipd(["image"], prob=0.5, spatial_axis=0), seed=3)
    draw = [ds[i]["image"].clone() for i in range(len(ds))]
    again = [ds[i]["image"] for i in reversed(range(len(ds)))][::-1]  # order of access does not matter
    assert all(torch.equal(a, b) for a, b in zip(draw, again))
    epochs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        epochs.append(torch.stack([ds[i]["image"].as_tensor() for i in range(len(ds))]))
    assert any(not torch.equal(epochs[0], e) for e in epochs[1:])


@pytest.mark.parametrize("kwargs,drop,match", [
    ({"split": "val"}, ("val_images",), "val_images"),
    ({"split": "test"}, ("test_labels",), "test_labels"),
    ({"split": "valid"}, (), "split must be one of"),
    ({"spatial_dims": 3}, (), "contradicts"),
])
def test_errors_name_file_and_problem(tmp_path, kwargs, drop, match):
    path = write_npz(tmp_path / "bad.npz", (4, 5), drop=drop)
    with pytest.raises(ValueError, match=match) as info:
        MedMNISTDataset(path, **kwargs)
    assert "bad.npz" in str(info.value)


def test_errors_missing_file_dtype_and_3d_as_2d(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        MedMNISTDataset(tmp_path / "nothere.npz")
    with pytest.raises(ValueError, match="must be uint8"):
        MedMNISTDataset(write_npz(tmp_path / "f.npz", (4, 5), image_dtype=np.float32))
    with pytest.raises(ValueError, match="contradicts"):
        MedMNISTDataset(write_npz(tmp_path / "v.npz", (4, 5, 6)), spatial_dims=2)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        MedMNISTDataset(tmp_path / "junk.npz")
    # labels may be omitted from the file when not asked for
    ds = MedMNISTDataset(write_npz(tmp_path / "nolab.npz", (4, 5), drop=("train_labels",)), with_labels=False)
    assert "label" not in ds[0]


@pytest.mark.realdata
@pytest.mark.parametrize("name,sizes,shape", [
    ("pneumoniamnist.npz", (4708, 524, 624), (1, 28, 28)),
    ("adrenalmnist3d.npz", (1188, 98, 298), (1, 28, 28, 28)),
])
def test_real_medmnist_split_sizes_and_shapes(name, sizes, shape):
    path = require_shared("medmnist", name)
    for split, n in zip(("train", "val", "test"), sizes):
        ds = MedMNISTDataset(path, split)
        assert len(ds) == n and ds.image_shape == shape and ds.spatial_dims == len(shape) - 1
    item = ds[0]
    assert tuple(item["image"].shape) == shape and 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
    assert item["label"].ndim == 0 and ds.num_classes == 2


def test_batches_through_dataloader_with_augmentation(tmp_path):
    from torch.utils.data import DataLoader

    from medssl.transforms.augment import pretrain_augment

    ds = MedMNISTDataset(write_npz(tmp_path / "x.npz", (4, 5, 6)), transform=pretrain_augment(3))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 1, 4, 5, 6) and batch["label"].shape == (4,)
    assert batch["label"].dtype == torch.long and batch["source_index"].tolist() == [0, 1, 2, 3]
