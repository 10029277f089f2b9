"""The external peer of the label-efficiency benchmark: SimCLR pretrained with lightly, as a lightly user would.

lightly (https://github.com/lightly-ai/lightly) is the most used SSL library for images; a hospital group that
does not use medssl would most likely reach for it. This module pretrains SimCLR the way lightly's own examples
and benchmarks do, with lightly's pieces wherever lightly has them:

* **model**: the backbone is the *same* encoder architecture the medssl arms and the from-scratch baseline use
  (built from medssl's registry, so every arm is fine-tuned by the same code and the only difference is the
  pretraining), plus lightly's ``SimCLRProjectionHead`` (512 -> 128, as in lightly's SimCLR example);
* **loss**: lightly's ``NTXentLoss(temperature=0.5)`` (lightly's default; its ImageNet benchmark uses 0.1);
* **views (2D)**: lightly's ``SimCLRTransform(input_size=<image size>)`` with lightly's defaults (random resized
  crop with scale (0.08, 1), colour jitter, random grayscale, Gaussian blur, horizontal flip), on the 8-bit
  grayscale image as a PIL image; ``normalize=None`` because the images are 1-channel and every other arm sees
  them scaled to [0, 1], which is what ToTensor gives;
* **views (3D)**: lightly has no volumetric transforms. A lightly user would write their own; the peer uses
  medssl's :class:`~medssl.transforms.views.MultiViewTransform` with the settings of the medssl SimCLR data
  overlay (``views_3d``: two global views at the volume size), which gives the peer medssl's augmentations and isolates lightly's training recipe;
* **optimiser**: SGD, momentum 0.9, weight decay 5e-4, lr 0.06 x batch/128 with cosine annealing over the run:
  the recipe of lightly's CIFAR-10 / Imagenette benchmarks (``benchmarks/imagenet/...`` and the docs examples).

The run is a plain PyTorch loop (what lightly's examples show); the trained backbone is exported with medssl's
card (:func:`medssl.models.hub.export_encoder`, method ``"lightly_simclr"``), so the benchmark evaluates it with
exactly the same probes and fine-tuning code as every other arm.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

PEER = "lightly_simclr"


class _TwoViews2D(Dataset):
    """Train images of a MedMNIST ``.npz`` (8-bit, (N, H, W)) -> two lightly SimCLR views of each."""

    def __init__(self, images: np.ndarray, size: int):
        from lightly.transforms import SimCLRTransform

        self.images = images
        self.transform = SimCLRTransform(input_size=size, normalize=None)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        views = self.transform(Image.fromarray(self.images[i], mode="L"))
        return views[0], views[1]


class _TwoViews3D(Dataset):
    """Train volumes (8-bit, (N, D, H, W)) -> two medssl global views (lightly has no 3D transforms)."""

    def __init__(self, images: np.ndarray, views: dict[str, Any], seed: int):
        from medssl.transforms.views import MultiViewTransform

        self.images = images
        self.transform = MultiViewTransform(**{**views, "spatial_dims": 3, "num_global": 2, "num_local": 0,
                                               "global_size": list(images.shape[1:])})
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.transform.set_random_state(seed=int(np.random.SeedSequence([self.seed, self.epoch, i])
                                                 .generate_state(1)[0]))
        image = torch.from_numpy(self.images[i].astype(np.float32) / 255.0)[None]
        views = self.transform({"image": image})["global_views"]
        return torch.as_tensor(views[0]), torch.as_tensor(views[1])


class _SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, proj_hidden: int = 512, proj_out: int = 128):
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.feature_dim, proj_hidden, proj_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))


def pretrain_lightly_simclr(npz: str | Path, architecture: dict[str, Any], out_dir: str | Path, *, epochs: int,
                            batch_size: int, views_3d: dict[str, Any] | None = None, seed: int = 0,
                            max_items: int | None = None,
                            max_steps: int | None = None, num_workers: int = 0,
                            temperature: float = 0.5) -> dict[str, Any]:
    """Pretrain the peer on the train split of ``npz`` (labels unused); export ``out_dir/encoder.json``.

    ``views_3d``: the ``MultiViewTransform`` arguments of the medssl arms' data overlay (3D only; two global views
    at the full volume size). ``max_items`` / ``max_steps`` shorten the run (smoke tests). Returns the card path, steps, wall seconds and
    the mean loss of the first and last epoch.
    """
    from lightly.loss import NTXentLoss

    from medssl.data.medmnist import load_medmnist_split
    from medssl.models.hub import export_encoder
    from medssl.models.registry import build_encoder

    t0 = time.perf_counter()
    images, _ = load_medmnist_split(npz, "train", with_labels=False)
    if max_items is not None:
        images = images[:max_items]
    dims = int(architecture["kwargs"]["spatial_dims"])
    if images.ndim - 1 != dims:
        raise ValueError(f"{npz}: {images.ndim - 1}D images for a {dims}D encoder (RGB MedMNIST is not supported "
                         "by the peer)")
    torch.manual_seed(seed)
    backbone = build_encoder(**architecture)
    model = _SimCLR(backbone)
    if dims == 3 and views_3d is None:
        raise ValueError("3D pretraining needs views_3d (lightly has no volumetric transforms)")
    data = _TwoViews2D(images, images.shape[1]) if dims == 2 else _TwoViews3D(images, views_3d, seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen,
                        num_workers=num_workers, persistent_workers=num_workers > 0)
    steps_per_epoch = len(loader) if max_steps is None else min(len(loader), max_steps)
    criterion = NTXentLoss(temperature=temperature)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * batch_size / 128, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps_per_epoch))
    epoch_losses = []
    steps = 0
    model.train()
    for epoch in range(epochs):
        if isinstance(data, _TwoViews3D):
            data.epoch = epoch
        total, n = 0.0, 0
        for step, (x0, x1) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            loss = criterion(model(x0), model(x1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, n, steps = total + float(loss), n + 1, steps + 1
        epoch_losses.append(total / max(n, 1))
        print(f"  {PEER} epoch {epoch + 1}/{epochs}: loss {epoch_losses[-1]:.4f}", flush=True)
    if not all(math.isfinite(v) for v in epoch_losses):
        raise FloatingPointError(f"{PEER}: non-finite loss {epoch_losses}")
    wall = time.perf_counter() - t0
    preprocessing = {"source": "medmnist", "scale": "uint8 / 255", "spatial_dims": dims}
    card = export_encoder(backbone.eval(), out_dir, method=PEER, preprocessing=preprocessing,
                          training={"library": "lightly", "epochs": epochs, "global_step": steps,
                                    "batch_size": batch_size, "seed": seed, "loss_first_epoch": epoch_losses[0],
                                    "loss_last_epoch": epoch_losses[-1], "wall_s": round(wall, 2)})
    return {"card": str(card), "steps": steps, "epochs": epochs, "wall_s": round(wall, 2),
            "loss_first_epoch": epoch_losses[0], "loss_last_epoch": epoch_losses[-1]}
