"""Pretraining augmentation: 2D/3D MetaTensors, determinism by seed, zero config is the identity, config builder."""
from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandFlipd, RandRotate90d

from medssl.transforms.augment import AugmentConfig, pretrain_augment

SHAPES = {2: (1, 8, 6), 3: (1, 6, 5, 4)}


def item(spatial_dims: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    affine = torch.eye(spatial_dims + 1, dtype=torch.float64)
    affine[:spatial_dims, spatial_dims] = torch.arange(1.0, spatial_dims + 1)  # a non-trivial origin
    return {"image": MetaTensor(torch.rand(SHAPES[spatial_dims], generator=g), affine=affine), "source_index": 0}


def run(transform, spatial_dims: int, seed: int) -> MetaTensor:
    transform.set_random_state(seed=seed)
    return transform(item(spatial_dims))["image"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_meta_and_determinism(spatial_dims):
    aug = pretrain_augment(spatial_dims, rotate90_prob=0.5, rotate90_axes=(0, 1) if spatial_dims == 2 else (1, 2),
                           noise_std=0.05)
    a, b = run(aug, spatial_dims, 7), run(aug, spatial_dims, 7)
    assert isinstance(a, MetaTensor) and a.dtype == torch.float32
    assert a.ndim == spatial_dims + 1 and a.affine.shape == (spatial_dims + 1, spatial_dims + 1)
    assert torch.equal(a.as_tensor(), b.as_tensor()) and torch.equal(a.affine, b.affine)
    outs = [run(aug, spatial_dims, s) for s in range(8)]
    assert any(not torch.equal(outs[0].as_tensor(), o.as_tensor()) for o in outs[1:])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_config_is_identity(spatial_dims):
    aug = pretrain_augment(spatial_dims, flip_prob=0.0, rotate90_prob=0.0, intensity_scale=0.0,
                           intensity_shift=0.0, noise_std=0.0)
    assert len(aug.transforms) == 0
    x = item(spatial_dims)
    out = aug(dict(x))["image"]
    assert torch.equal(out.as_tensor(), x["image"].as_tensor()) and torch.equal(out.affine, x["image"].affine)


def test_default_members_and_flip_axes():
    aug = pretrain_augment(3)
    flips = [t for t in aug.transforms if isinstance(t, RandFlipd)]
    assert [t.flipper.spatial_axis for t in flips] == [0, 1, 2]
    assert not any(isinstance(t, RandRotate90d) for t in aug.transforms)
    assert len(pretrain_augment(2, flip_axes=[1]).transforms) == 3  # one flip + scale + shift


def test_flip_moves_image_and_label_together_and_updates_affine():
    aug = pretrain_augment(2, flip_prob=1.0, flip_axes=(0,), intensity_scale=0.5, keys=("image", "label"),
                           intensity_keys=("image",))
    x = item(2)
    label = MetaTensor(torch.arange(48.0).reshape(1, 8, 6), affine=x["image"].affine.clone())
    out = aug({"image": x["image"], "label": label})
    assert torch.equal(out["label"].as_tensor(), label.as_tensor().flip(1))  # flipped, intensity untouched
    assert not torch.equal(out["image"].affine, x["image"].affine)  # MONAI tracked the flip in the affine


def test_config_builds_same_transform():
    cfg = AugmentConfig(flip_prob=0.3, rotate90_prob=0.2, noise_std=0.01)
    a, b = cfg.build(3), pretrain_augment(3, flip_prob=0.3, rotate90_prob=0.2, noise_std=0.01)
    assert [type(t) for t in a.transforms] == [type(t) for t in b.transforms]
    assert torch.equal(run(a, 3, 5).as_tensor(), run(b, 3, 5).as_tensor())


@pytest.mark.parametrize("kwargs", [{"flip_prob": 1.5}, {"noise_std": -0.1}, {"flip_axes": (2,)},
                                    {"rotate90_axes": (1, 1)}])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        pretrain_augment(2, **kwargs)
