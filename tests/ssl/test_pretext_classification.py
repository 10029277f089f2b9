"""Rotation prediction and jigsaw / Rubik's cube: finite losses with gradients in 2D and 3D, the loss equals a
naive per-item / per-tile reference, both overfit one batch (2D and 3D), the permutation set is a fixed buffer,
encoders export, bad configs raise typed errors."""
from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from medssl.errors import MedsslError
from medssl.models.hub import export_encoder, load_encoder
from medssl.ssl.jigsaw import Jigsaw
from medssl.ssl.rotation import RotationPrediction
from medssl.training.optim import OptimConfig
from medssl.transforms.jigsaw import hamming_permutations, random_jigsaw
from medssl.transforms.rotation import random_rotation
from tests.ssl.overfit import fit_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet(spatial_dims: int) -> dict:
    return {"in_channels": 1, "spatial_dims": spatial_dims, "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 16, 32],
            "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}


def rotation(spatial_dims: int, **kwargs) -> RotationPrediction:
    return RotationPrediction(encoder="resnet", encoder_kwargs=resnet(spatial_dims), head_hidden_dim=32,
                              optim=OptimConfig(lr=1e-2, warmup=0), **kwargs)


def jigsaw(spatial_dims: int, **kwargs) -> Jigsaw:
    kwargs = {"num_permutations": 8, "tile_dim": 16, "head_hidden_dim": 32, "jitter": 1, **kwargs}
    return Jigsaw(encoder="resnet", encoder_kwargs=resnet(spatial_dims), optim=OptimConfig(lr=1e-2, warmup=0),
                  **kwargs)


def images(n: int, spatial_dims: int, size: int, seed: int = 0) -> dict:
    """Smooth random images (upsampled coarse noise), so that orientation and tile position are learnable."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, *(4,) * spatial_dims, generator=g)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return {"image": F.interpolate(coarse, size=(size,) * spatial_dims, mode=mode, align_corners=False)}


CASES = [(rotation, 2, 16), (rotation, 3, 12), (jigsaw, 2, 18), (jigsaw, 3, 12)]


@pytest.mark.parametrize("make, spatial_dims, size", CASES)
def test_loss_finite_and_backward(make, spatial_dims: int, size: int) -> None:
    torch.manual_seed(0)
    method = make(spatial_dims)
    out = method.compute_loss(images(4, spatial_dims, size), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0 and 0 <= out["accuracy"] <= 1
    assert {"embedding_std", "embedding_rank"} <= set(out)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.encoder.parameters())


def test_rotation_classes_and_loss_against_reference() -> None:
    assert rotation(2).num_classes == 4 and rotation(3).num_classes == 10
    torch.manual_seed(0)
    method = rotation(3).eval()
    batch = images(5, 3, 8)
    with torch.no_grad():
        out = method.compute_loss(batch, torch.Generator().manual_seed(4))
        rotated, labels = random_rotation(batch["image"], torch.Generator().manual_seed(4))
        per_item = [-torch.log_softmax(method.head(method.encoder(rotated[i:i + 1])), 1)[0, labels[i]]
                    for i in range(5)]
    assert out["loss"].item() == pytest.approx(torch.stack(per_item).mean().item(), rel=1e-5)


@pytest.mark.parametrize("spatial_dims, orientation", [(2, False), (3, True)])
def test_jigsaw_loss_against_per_tile_reference(spatial_dims: int, orientation: bool) -> None:
    torch.manual_seed(0)
    method = jigsaw(spatial_dims, orientation=orientation, orientation_weight=0.5).eval()
    batch = images(3, spatial_dims, 12)
    with torch.no_grad():
        out = method.compute_loss(batch, torch.Generator().manual_seed(2))
        s = random_jigsaw(batch["image"], method.grid, method.permutations, torch.Generator().manual_seed(2),
                          method.jitter, orientation)
        ce, bce = [], []
        for b in range(3):
            feats = torch.stack([method.encoder(s.tiles[b, i][None])[0] for i in range(s.tiles.shape[1])])
            logits, orient = method.head(feats[None])
            ce.append(-torch.log_softmax(logits, 1)[0, s.labels[b]])
            if orientation:
                p, t = torch.sigmoid(orient[0]), s.flips[b].float()
                bce.append(-(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean())
    expected = torch.stack(ce).mean() + (0.5 * torch.stack(bce).mean() if orientation else 0)
    assert out["loss"].item() == pytest.approx(float(expected), rel=1e-4)
    assert ("orientation_loss" in out) == orientation


def _eval_loss(method: L.LightningModule, batch: dict) -> float:
    method.eval()
    with torch.no_grad():  # the same draws every time: a fixed set of rotations / permutations of the batch
        losses = [method.compute_loss(batch, torch.Generator().manual_seed(s))["loss"] for s in range(4)]
    method.train()
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("make, spatial_dims, size", CASES)
def test_overfits_one_batch_and_exports(make, spatial_dims: int, size: int, tmp_path) -> None:
    torch.manual_seed(0)
    method = make(spatial_dims)
    batch = images(8, spatial_dims, size)
    before = _eval_loss(method, batch)
    fit_one_batch(method, batch, 60)
    after = _eval_loss(method, batch)
    assert after < 0.7 * before, (make.__name__, spatial_dims, before, after)
    card = export_encoder(method.encoder_module, tmp_path, method=method.method_name, preprocessing={})
    report = load_encoder(card)
    assert not report.missing and not report.unexpected
    state = method.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in report.module.state_dict().items())


def test_permutation_set_is_a_fixed_buffer() -> None:
    method = jigsaw(2, grid=[3, 3], num_permutations=10, permutation_seed=3)
    assert torch.equal(method.permutations, hamming_permutations(9, 10, 3))
    assert "permutations" in method.state_dict()
    assert jigsaw(3).grid == [2, 2, 2] and jigsaw(2).grid == [3, 3] and jigsaw(2, grid=2).grid == [2, 2]


def test_non_cubic_rotation_inputs_are_cropped_or_rejected() -> None:
    batch = {"image": torch.rand(2, 1, 12, 8, 10)}
    assert torch.isfinite(rotation(3).compute_loss(batch, torch.Generator())["loss"])
    with pytest.raises(ValueError, match="center_crop_to_cube"):
        for seed in range(10):  # some draw is a quarter turn
            rotation(3, crop_to_cube=False).compute_loss(batch, torch.Generator().manual_seed(seed))


def test_bad_jigsaw_configs_are_typed_errors() -> None:
    with pytest.raises(MedsslError, match="grid"):
        jigsaw(3, grid=[2, 2])
    with pytest.raises(MedsslError, match="jitter"):
        jigsaw(2, jitter=-1)
