"""build_segmenter: the MONAI network each registry encoder loads into, 100% of the encoder keys placed."""
from __future__ import annotations

import pytest
import torch

from medssl.errors import MedsslError
from medssl.models.hub import export_encoder, load_encoder
from medssl.models.registry import build_encoder, encoder_spec
from medssl.models.segmenter import SEGMENTERS, SegmenterError, build_segmenter, segmenter_spec

PLAN = {"kind": "plan", "plan": {"target_spacing": [1.0, 1.0, 1.0]}}
#: tiny encoders of every family that segments, and a roi each network accepts
TINY = {
    "vit": ({"img_size": 32, "patch_size": 16, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2, "num_layers": 12},
            32),
    "swin": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4}, 64),
    "segresnet": ({"init_filters": 8, "blocks_down": [1, 1, 1]}, 16),
    "basicunet": ({"features": [4, 4, 8, 8, 16, 4]}, 32),
}


def _encoder(name: str, dims: int, **kw):
    torch.manual_seed(0)
    return build_encoder(name, {**TINY[name][0], "in_channels": 1, "spatial_dims": dims, **kw})


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_encoder_key_is_placed(tmp_path, name: str, dims: int) -> None:
    encoder = _encoder(name, dims)
    export_encoder(encoder, tmp_path, method="test", preprocessing=PLAN)
    roi = TINY[name][1]
    net = build_segmenter(encoder_spec(encoder), num_classes=3, spatial_dims=dims, in_channels=1, img_size=roi)
    assert type(net).__name__ == SEGMENTERS[name]
    report = load_encoder(tmp_path, into=net)
    assert len(report.matched) == len(encoder.state_dict())  # 100% of the encoder's tensors
    assert not (report.missing or report.unexpected or report.mismatched or report.reshaped or report.notes)
    own = net.state_dict()
    assert all(torch.equal(own[report.prefix + k], v) for k, v in encoder.state_dict().items())
    if dims == 2:  # one forward per family is enough to show the network works at that roi
        assert net(torch.rand(2, 1, roi, roi)).shape == (2, 3, roi, roi)


@pytest.mark.parametrize("name", sorted(TINY))
def test_spec_rebuilds_the_same_network(name: str) -> None:
    net = build_segmenter(encoder_spec(_encoder(name, 2)), num_classes=2, spatial_dims=2, in_channels=1,
                          img_size=[TINY[name][1], 2 * TINY[name][1]])
    spec = segmenter_spec(net)
    assert spec["img_size"] == [TINY[name][1], 2 * TINY[name][1]] and spec["architecture"]["name"] == name
    torch.save(spec, "/dev/null")  # plain containers only
    again = build_segmenter(**spec)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_unetr_position_table_follows_the_roi(tmp_path) -> None:
    encoder = _encoder("vit", 3)  # pretrained on 32^3
    export_encoder(encoder, tmp_path, method="test", preprocessing=PLAN)
    net = build_segmenter(encoder_spec(encoder), num_classes=2, spatial_dims=3, in_channels=1, img_size=(64, 32, 32))
    report = load_encoder(tmp_path, into=net)
    assert report.reshaped == ["vit.patch_embedding.position_embeddings"]
    assert len(report.matched) == len(encoder.state_dict())


def test_decoder_options_are_passed_and_checked() -> None:
    arch = encoder_spec(_encoder("vit", 2))
    net = build_segmenter(arch, num_classes=2, spatial_dims=2, in_channels=1, img_size=32,
                          options={"feature_size": 8})
    assert net.encoder1.layer.conv1.conv.out_channels == 8
    with pytest.raises(SegmenterError, match="unknown UNETR options.*blocks_up"):
        build_segmenter(arch, num_classes=2, spatial_dims=2, in_channels=1, img_size=32, options={"blocks_up": [1]})


def test_refusals_say_why() -> None:
    resnet = {"name": "resnet", "kwargs": {"in_channels": 1, "spatial_dims": 3}}
    with pytest.raises(SegmenterError, match="'resnet' encoder has no segmentation network.*basicunet -> BasicUNet"):
        build_segmenter(resnet, num_classes=2, spatial_dims=3, in_channels=1, img_size=32)
    vit = {"name": "vit", "kwargs": {**TINY["vit"][0], "in_channels": 1, "spatial_dims": 3}}
    with pytest.raises(SegmenterError, match=r"cannot initialise MONAI's UNETR: patch_size \[8, 8, 8\]"):
        build_segmenter({"name": "vit", "kwargs": {**vit["kwargs"], "patch_size": 8}}, num_classes=2,
                        spatial_dims=3, in_channels=1, img_size=32)
    with pytest.raises(SegmenterError, match="num_layers 4"):
        build_segmenter({"name": "vit", "kwargs": {**vit["kwargs"], "num_layers": 4}}, num_classes=2,
                        spatial_dims=3, in_channels=1, img_size=32)
    with pytest.raises(SegmenterError, match="in_channels=2 contradicts"):
        build_segmenter(vit, num_classes=2, spatial_dims=3, in_channels=2, img_size=32)
    unet = {"name": "basicunet", "kwargs": {"features": [4, 4, 8, 8, 16, 4]}}
    with pytest.raises(SegmenterError, match="multiple of 16"):
        build_segmenter(unet, num_classes=2, spatial_dims=3, in_channels=1, img_size=(32, 24, 32))
    with pytest.raises(SegmenterError, match="one voxel at BasicUNet's deepest level"):
        build_segmenter(unet, num_classes=2, spatial_dims=3, in_channels=1, img_size=16)
    assert issubclass(SegmenterError, MedsslError)
