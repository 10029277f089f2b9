"""Multi-view transform: shapes and collation (2D/3D), determinism, recorded parameters reproduce the views against a
plain-torch reference, controlled overlap, window, conservative defaults, identity config, validation, data module."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch.utils.data import default_collate

from medssl.transforms.views import (
    PARAM_KEYS, MultiViewTransform, ViewConfig, ViewParams, apply_view, crop_overlap, sample_crop,
)

SHAPES = {2: (1, 32, 32), 3: (1, 24, 20, 16)}  # non-cubic 3D input: nothing may assume equal sides
QUIET = {"intensity_prob": 0.0, "gamma_prob": 0.0, "blur_prob": 0.0, "noise_prob": 0.0}  # geometry only


def item(spatial_dims: int, seed: int = 0, channels: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, 3] = torch.tensor([1.0, 2.0, 3.0])  # a non-trivial origin
    shape = (channels, *SHAPES[spatial_dims][1:])
    return {"image": MetaTensor(torch.rand(shape, generator=g), affine=affine), "label": 3, "source_index": seed}


def run(transform: MultiViewTransform, data: dict, seed: int) -> dict:
    transform.set_random_state(seed=seed)
    return transform(data)


def dino(spatial_dims: int, **kw) -> MultiViewTransform:
    g, loc = ([16, 16], [8, 8]) if spatial_dims == 2 else ([16, 12, 12], [8, 8, 8])
    return ViewConfig.dino(g, loc, num_local=3, **kw).build(spatial_dims)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_counts_meta_and_params(spatial_dims):
    t = dino(spatial_dims)
    out = run(t, item(spatial_dims, channels=2), 0)
    assert set(out) == {"label", "source_index", "global_views", "local_views", "view_params"}
    g, loc = t.config.global_size, t.config.local_size
    assert [tuple(v.shape) for v in out["global_views"]] == [(2, *g)] * 2
    assert [tuple(v.shape) for v in out["local_views"]] == [(2, *loc)] * 3
    for v in out["global_views"] + out["local_views"]:
        assert isinstance(v, MetaTensor) and v.dtype == torch.float32 and torch.isfinite(v).all()
        assert v.affine.shape == (4, 4)
    params = out["view_params"]
    assert len(params["global"]) == 2 and len(params["local"]) == 3
    for p in params["global"] + params["local"]:
        assert tuple(p) == PARAM_KEYS
        assert all(p[k].shape == (spatial_dims,) and p[k].dtype == torch.long for k in ("crop_start", "crop_size"))
        assert ViewParams.from_dict(p).to_dict().keys() == p.keys()
    assert params["global"][0]["overlap"] == 1.0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_collation_into_batches(spatial_dims):
    t = dino(spatial_dims)
    batch = default_collate([run(t, item(spatial_dims, seed=s), s) for s in range(3)])
    g, loc = t.config.global_size, t.config.local_size
    assert [tuple(v.shape) for v in batch["global_views"]] == [(3, 1, *g)] * 2
    assert [tuple(v.shape) for v in batch["local_views"]] == [(3, 1, *loc)] * 3
    assert batch["label"].tolist() == [3, 3, 3] and batch["source_index"].tolist() == [0, 1, 2]
    p = batch["view_params"]["global"][1]
    assert p["crop_start"].shape == (3, spatial_dims) and p["flip"].shape == (3, spatial_dims)
    assert p["rot90_k"].shape == (3,) and p["gamma"].shape == (3,) and p["overlap"].shape == (3,)
    no_local = ViewConfig(global_size=g).build(spatial_dims)
    batch = default_collate([run(no_local, item(spatial_dims, seed=s), s) for s in range(2)])
    assert batch["local_views"] == [] and batch["view_params"]["local"] == []


def test_determinism_and_seeds():
    t = dino(3, flip_axes=[0, 1, 2], rotate90_prob=0.5, rotate90_axes=(1, 2))
    x = item(3)
    a, b = run(t, x, 11), run(t, x, 11)
    for va, vb in zip(a["global_views"] + a["local_views"], b["global_views"] + b["local_views"]):
        assert torch.equal(va.as_tensor(), vb.as_tensor()) and torch.equal(va.affine, vb.affine)
    assert [ViewParams.from_dict(p) for p in a["view_params"]["global"]] == \
        [ViewParams.from_dict(p) for p in b["view_params"]["global"]]
    c = run(t, x, 12)
    assert not torch.equal(a["global_views"][0].as_tensor(), c["global_views"][0].as_tensor())
    assert not torch.equal(a["global_views"][0].as_tensor(), a["global_views"][1].as_tensor())  # views differ
    assert torch.equal(x["image"].as_tensor(), item(3)["image"].as_tensor())  # input untouched


def reference_view(image: torch.Tensor, p: dict, size, plane) -> torch.Tensor:
    """Plain-torch re-implementation of crop -> resize -> flip -> rot90 -> window -> scale/shift -> gamma."""
    n = image.ndim - 1
    start, crop = p["crop_start"].tolist(), p["crop_size"].tolist()
    x = torch.as_tensor(image)[(slice(None), *(slice(s, s + c) for s, c in zip(start, crop)))][None].float()
    if list(size) != crop:
        grows = any(o > c for o, c in zip(size, crop))
        mode = ("bilinear" if n == 2 else "trilinear") if grows else "area"
        x = F.interpolate(x, size=list(size), mode=mode, align_corners=False if grows else None)
    x = x[0]
    dims = [a + 1 for a, f in enumerate(p["flip"].tolist()) if f]
    if dims:
        x = x.flip(dims)
    x = torch.rot90(x, p["rot90_k"], dims=(plane[0] + 1, plane[1] + 1))
    if np.isfinite(p["window_lo"]):
        x = ((x - p["window_lo"]) / (p["window_hi"] - p["window_lo"])).clamp(0, 1)
    x = x * p["scale"] + p["shift"]
    lo, rng = x.min(), x.max() - x.min()
    return ((x - lo) / (rng + 1e-7)) ** p["gamma"] * rng + lo


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_recorded_params_reproduce_views(spatial_dims):
    plane = (0, 1) if spatial_dims == 2 else (1, 2)
    # local views of 12 voxels upsample small crops (linear) and downsample big ones (area)
    g, loc = ([16, 16], [12, 12]) if spatial_dims == 2 else ([16, 12, 12], [12, 12, 12])
    t = MultiViewTransform(spatial_dims, global_size=g, num_local=2, local_size=loc,
                           flip_axes=list(range(spatial_dims)), rotate90_prob=0.75, rotate90_axes=plane, window=(0.2, 0.8), intensity_prob=1.0,
                           gamma_prob=0.7, blur_prob=0.0, noise_prob=0.0)
    seen = {"flip": 0, "rot": 0, "gamma": 0}
    for seed in range(6):
        x = item(spatial_dims, seed)
        out = run(t, x, seed)
        for kind, size in (("global", g), ("local", loc)):
            for view, p in zip(out[f"{kind}_views"], out["view_params"][kind]):
                ref = reference_view(x["image"].as_tensor(), p, size, plane)
                torch.testing.assert_close(view.as_tensor(), ref, atol=1e-5, rtol=1e-5)
                again = apply_view(x["image"], ViewParams.from_dict(p), size, rotate90_axes=plane)
                assert torch.equal(again.as_tensor(), view.as_tensor()) and torch.equal(again.affine, view.affine)
                seen["flip"] += int(p["flip"].any())
                seen["rot"] += int(p["rot90_k"] != 0)
                seen["gamma"] += int(p["gamma"] != 1.0)
    assert all(v > 0 for v in seen.values()), seen  # every operation was exercised


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("bounds", [(0.3, 0.6), (0.8, 1.0)])
def test_overlap_constraint(spatial_dims, bounds):
    t = ViewConfig(num_local=1, min_overlap=bounds[0], max_overlap=bounds[1]).build(spatial_dims)
    for seed in range(100):
        t.set_random_state(seed=seed)
        params = t.randomize(SHAPES[spatial_dims][1:])
        p0, p1 = params["global"]
        ov = crop_overlap(p0.crop_start, p0.crop_size, p1.crop_start, p1.crop_size)
        assert bounds[0] <= ov <= bounds[1] and ov == p1.overlap
        loc = params["local"][0]
        assert loc.overlap == crop_overlap(p0.crop_start, p0.crop_size, loc.crop_start, loc.crop_size)


def test_crop_geometry():
    rng = np.random.RandomState(0)
    assert crop_overlap((0, 0), (4, 4), (2, 2), (4, 4)) == 0.25 and crop_overlap((0, 0), (2, 2), (2, 0), (2, 2)) == 0
    assert crop_overlap((0, 0, 0), (8, 8, 8), (1, 2, 3), (2, 2, 2)) == 1.0  # containment
    fracs = []
    for _ in range(200):
        start, size = sample_crop(rng, (24, 20, 16), (0.2, 0.5), (0.75, 1.3333))
        assert all(0 <= s and s + c <= d and c >= 1 for s, c, d in zip(start, size, (24, 20, 16)))
        fracs.append(np.prod(size) / (24 * 20 * 16))
    assert 0.15 < min(fracs) and max(fracs) < 0.6  # the volume fraction follows `scale` up to rounding
    assert sample_crop(rng, (24, 20, 16), (1.0, 1.0), (1.0, 1.0)) == ((0, 0, 0), (24, 20, 16))


def test_window_clamps_to_unit_range():
    t = ViewConfig(global_size=[16, 16], num_local=2, local_size=[8, 8], window=(0.3, 0.6), window_jitter=0.2,
                   **QUIET).build(2)
    for seed in range(5):
        out = run(t, item(2, seed), seed)
        for v, p in zip(out["global_views"] + out["local_views"],
                        out["view_params"]["global"] + out["view_params"]["local"]):
            assert v.min() >= 0.0 and v.max() <= 1.0
            width = p["window_hi"] - p["window_lo"]
            assert 0.3 * 0.8 - 1e-9 <= width <= 0.3 * 1.2 + 1e-9
            assert abs((p["window_lo"] + p["window_hi"]) / 2 - 0.45) <= 0.2 * 0.3 + 1e-9
        assert (out["global_views"][0] == 0).any() and (out["global_views"][0] == 1).any()


def test_defaults_do_not_flip_or_rotate():
    t = MultiViewTransform(3, global_size=[12, 12, 12], num_local=2, local_size=[8, 8, 8])
    assert t.config == ViewConfig(global_size=[12, 12, 12], num_local=2, local_size=[8, 8, 8])
    for seed in range(20):
        t.set_random_state(seed=seed)
        params = t.randomize(SHAPES[3][1:])
        for p in params["global"] + params["local"]:
            assert p.flip == (0, 0, 0) and p.rot90_k == 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_identity_config_returns_resized_full_image(spatial_dims):
    ident = dict(global_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), flip_axes=list(range(spatial_dims)),
                 flip_prob=0.0, **QUIET)
    x = item(spatial_dims)
    out = run(ViewConfig(**ident).build(spatial_dims), x, 3)
    for v in out["global_views"]:
        assert torch.equal(v.as_tensor(), x["image"].as_tensor()) and torch.equal(v.affine, x["image"].affine)
    p = out["view_params"]["global"][1]
    assert p["crop_start"].tolist() == [0] * spatial_dims and p["crop_size"].tolist() == list(SHAPES[spatial_dims][1:])
    assert (p["scale"], p["shift"], p["gamma"], p["noise_std"], p["blur_sigma"]) == (1.0, 0.0, 1.0, 0.0, 0.0)
    assert (p["window_lo"], p["window_hi"], p["rot90_k"], p["overlap"]) == (-np.inf, np.inf, 0, 1.0)
    size = [8] * spatial_dims
    out = run(ViewConfig(global_size=size, **ident).build(spatial_dims), x, 3)
    want = F.interpolate(x["image"].as_tensor()[None], size=size, mode="area")[0]
    torch.testing.assert_close(out["global_views"][0].as_tensor(), want)


def test_blur_and_noise_fire_and_keep_image():
    t = ViewConfig(global_size=[16, 16], intensity_prob=0.0, gamma_prob=0.0, blur_prob=1.0, noise_prob=1.0,
                   keep_image=True).build(2)
    x = item(2)
    out = run(t, x, 0)
    assert out["image"] is x["image"]
    p = out["view_params"]["global"][0]
    assert 0.1 <= p["blur_sigma"] <= 1.0 and 0.0 < p["noise_std"] <= 0.05
    quiet = apply_view(x["image"], dataclasses.replace(ViewParams.from_dict(p), noise_std=0.0), [16, 16])
    assert 0 < (out["global_views"][0] - quiet).abs().max() < 0.5  # noise was added on top of the blurred crop
    with pytest.raises(ValueError, match="rng"):
        apply_view(x["image"], ViewParams.from_dict(p), [16, 16])


def test_transform_and_config_share_defaults():
    sig = inspect.signature(MultiViewTransform.__init__).parameters
    assert set(sig) - {"self", "spatial_dims"} == {f.name for f in dataclasses.fields(ViewConfig)}
    assert MultiViewTransform(2).config == ViewConfig()
    assert ViewConfig.simclr([16, 16]).build(2).config.num_local == 0


@pytest.mark.parametrize("kwargs", [
    {"rotate90_prob": 0.5, "global_size": [16, 12]},  # rotation would change the shape
    {"rotate90_prob": 0.5},  # output size unknown, so squareness cannot be checked
    {"rotate90_prob": 0.5, "global_size": [16, 16], "num_local": 2, "local_size": [8, 6]},
    {"global_scale": (0.6, 0.4)}, {"global_scale": (0.0, 1.0)}, {"local_scale": (0.1, 1.5)},
    {"aspect_ratio": (0.0, 2.0)}, {"min_overlap": 0.7, "max_overlap": 0.5}, {"max_overlap": 1.2},
    {"num_global": 1, "min_overlap": 0.3}, {"num_global": 0}, {"num_local": -1},
    {"global_size": [16, 16, 16]}, {"local_size": [8]}, {"global_size": [0, 16]},
    {"flip_axes": [2]}, {"flip_axes": [0, 0]}, {"rotate90_axes": (1, 1)}, {"flip_prob": 1.5},
    {"window": (1.0, 0.0)}, {"window_jitter": 1.0}, {"intensity_scale": 1.0}, {"noise_std": -0.1},
    {"gamma_range": (0.0, 1.0)}, {"blur_sigma": (1.0, 0.5)}, {"keys": ("image", "label")},
])
def test_invalid_settings_raise_at_construction(kwargs):
    with pytest.raises(ValueError):
        MultiViewTransform(2, **kwargs)


def test_invalid_spatial_dims_and_image():
    with pytest.raises(ValueError):
        ViewConfig().build(4)
    with pytest.raises(ValueError, match="spatial dims"):
        ViewConfig().build(3)(item(2))


def test_yaml_class_path_configures_the_data_module():
    from jsonargparse import ArgumentParser

    from medssl.data.datamodule import PretrainDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(PretrainDataModule, "data")
    cfg = parser.parse_string("""
data:
  source: {class_path: medssl.data.sources.Phantoms, init_args: {n: 2}}
  views:
    class_path: medssl.transforms.views.MultiViewTransform
    init_args: {spatial_dims: 3, global_size: [16, 16, 16], num_local: 2, local_size: [8, 8, 8], window: [0, 1]}
""")
    views = parser.instantiate(cfg).data.views
    assert isinstance(views, MultiViewTransform) and views.config.window == (0.0, 1.0)
    assert views.config.local_size == [8, 8, 8] and views.spatial_dims == 3


def test_pretrain_data_module_batch(tmp_path):
    from medssl.data.datamodule import PretrainDataModule
    from medssl.data.sources import Phantoms

    source = Phantoms(root=str(tmp_path / "phantoms"), n=3, shape=(24, 24, 16), cache_dir=str(tmp_path / "cache"),
                      val_fraction=0.3)
    views = ViewConfig.dino([12, 12, 8], [6, 6, 4], num_local=2).build(3)
    dm = PretrainDataModule(source, spatial_dims=3, batch_size=2, views=views)
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    b = 2  # two training scans, one validation scan
    assert len(dm.train_set) == b
    assert [tuple(v.shape) for v in batch["global_views"]] == [(b, 1, 12, 12, 8)] * 2
    assert [tuple(v.shape) for v in batch["local_views"]] == [(b, 1, 6, 6, 4)] * 2
    assert "image" not in batch and batch["view_params"]["global"][0]["crop_start"].shape == (b, 3)
