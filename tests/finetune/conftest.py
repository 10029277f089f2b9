"""Tiny fixtures for the few-label tests: a learnable fake MedMNIST file and a tiny exported ResNet encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.models.hub import export_encoder
from medssl.models.resnet import ResNetEncoder

#: a ResNet small enough that a Lightning epoch over ~50 items takes well under a second on one thread
TINY_RESNET = {"in_channels": 1, "spatial_dims": 2, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
               "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}


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
