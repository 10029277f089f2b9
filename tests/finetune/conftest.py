"""Tiny fixtures for the few-label tests: a learnable fake MedMNIST file, CT-like box cubes for segmentation and
tiny exported ResNet / BasicUNet encoders (one with its BasicUNet decoder, for whole-network transfer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.data.nifti import write_nifti
from medssl.data.plan import PreprocessPlan
from medssl.models.hub import export_encoder
from medssl.models.registry import build_encoder
from medssl.models.resnet import ResNetEncoder

#: a ResNet small enough that a Lightning epoch over ~50 items takes well under a second on one thread
TINY_RESNET = {"in_channels": 1, "spatial_dims": 2, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
               "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}

CT = PreprocessPlan(intensity="ct_window")
CUBE_AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def write_box_cubes(root: Path, n: int = 6, seed: int = 1) -> None:
    """``n`` CT-like volumes (air -800 HU, a +200 HU box labelled 1) at 1.5 x 1.5 x 2 mm in ``root/img`` and their
    label maps in ``root/lab`` (``case<i>.nii.gz``): separable by intensity."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "lab").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = np.zeros((24, 24, 16), np.uint8)
        o = rng.integers(2, 10, 3)
        label[o[0]:o[0] + 10, o[1]:o[1] + 10, o[2]:o[2] + 6] = 1
        image = np.where(label > 0, rng.normal(200, 30, label.shape), rng.normal(-800, 30, label.shape))
        write_nifti(image.astype(np.float32), root / "img" / f"case{i}.nii.gz", CUBE_AFFINE)
        write_nifti(label, root / "lab" / f"case{i}.nii.gz", CUBE_AFFINE)


def export_tiny_basicunet(folder: Path) -> Path:
    """A tiny seeded BasicUNet encoder exported with a CT-window plan; returns the card path."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder("basicunet", {"in_channels": 1, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]})
    export_encoder(encoder, folder, method="test",
                   preprocessing={"kind": "plan", "plan": CT.to_dict(), "fingerprint": CT.fingerprint()})
    return folder / "encoder.json"


def export_tiny_genesis_basicunet(folder: Path) -> Path:
    """A tiny seeded Models-Genesis-style BasicUNet encoder + its BasicUNet decoder (whole-network transfer),
    exported with a CT-window plan; returns the card path."""
    from medssl.models.dense_transfer import export_decoder
    from medssl.models.restoration import RestorationModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder("basicunet", {"in_channels": 1, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]})
        model = RestorationModel(encoder, out_activation="sigmoid", decoder="basicunet")
    record = export_decoder(model.dense_decoder, folder, out_activation="sigmoid")
    export_encoder(encoder, folder, method="genesis", extra={"decoder": record},
                   preprocessing={"kind": "plan", "plan": CT.to_dict(), "fingerprint": CT.fingerprint()})
    return folder / "encoder.json"


def fake_medmnist(path: Path, sizes: dict[str, int], seed: int = 0, positive: float = 0.4) -> Path:
    """MedMNIST-format ``.npz``: noisy 28x28 images, class 1 has a bright centre square (an easy, learnable task)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes.items():
        labels = (np.arange(n) < round(positive * n)).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.normal(70, 20, size=(n, 28, 28))
        images[labels == 1, 9:19, 9:19] += 120
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def fake_npz(tmp_path_factory) -> Path:
    return fake_medmnist(tmp_path_factory.mktemp("medmnist") / "fakemnist.npz",
                         {"train": 60, "val": 24, "test": 30})


@pytest.fixture(scope="session")
def tiny_card(tmp_path_factory) -> Path:
    """Folder holding ``encoder.json`` + ``encoder.safetensors`` of a seeded random tiny 2D ResNet."""
    folder = tmp_path_factory.mktemp("encoder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = ResNetEncoder(**TINY_RESNET)
    export_encoder(encoder, folder, method="test", preprocessing={"kind": "medmnist"})
    return folder
