"""Loading exported encoders into MONAI segmentation / classification networks: per-family key maps and checks."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.networks.nets import UNETR, BasicUNet, ResNet, SegResNet, SwinUNETR, UNet, ViT
from torch import nn

from medssl.models.classifier import EncoderClassifier
from medssl.models.cnn import SegResNetEncoder
from medssl.models.hub import EncoderCardError, export_encoder, load_encoder
from medssl.models.pos_embed import interpolate_pos_embed
from medssl.models.resnet import ResNetEncoder
from medssl.models.swin import SwinEncoder
from medssl.models.transfer import target_family
from medssl.models.unet import BasicUNetEncoder
from medssl.models.vit import ViTEncoder

PLAN = {"kind": "plan", "plan": {"target_spacing": [1.0, 1.0, 1.0]}}
VIT = {"hidden_size": 24, "mlp_dim": 48, "num_heads": 2}  # UNETR has 12 layers and 16-voxel patches
SWIN = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 4}
RESNET = {"layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16], "conv1_t_size": 3, "conv1_t_stride": 1,
          "no_max_pool": True}
FEATURES = (4, 4, 8, 8, 16, 4)


def vit(d: int, img: int = 32, layers: int = 12, **kw) -> ViTEncoder:
    return ViTEncoder(in_channels=1, img_size=img, patch_size=16, num_layers=layers, spatial_dims=d, **{**VIT, **kw})


# (encoder factory, network factory, prefix, prefixes of the keys left to fine-tuning) per family
FAMILIES: dict[str, tuple[Callable[[int], nn.Module], Callable[[int], nn.Module], str, tuple[str, ...]]] = {
    "UNETR": (vit, lambda d: UNETR(1, 2, img_size=32, feature_size=4, spatial_dims=d, **VIT), "vit.",
              ("encoder", "decoder", "out.")),
    "ViT-classifier": (lambda d: vit(d, layers=2),
                       lambda d: ViT(1, 32, 16, num_layers=2, classification=True, num_classes=3, spatial_dims=d,
                                     **VIT),
                       "", ("cls_token", "classification_head.")),
    "SwinUNETR": (lambda d: SwinEncoder(1, spatial_dims=d, **SWIN),
                  lambda d: SwinUNETR(1, 2, spatial_dims=d, **SWIN), "swinViT.", ("encoder", "decoder", "out.")),
    "SegResNet": (lambda d: SegResNetEncoder(1, spatial_dims=d, init_filters=8, blocks_down=(1, 1, 1)),
                  lambda d: SegResNet(d, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1, 1),
                                      blocks_up=(1, 1)),
                  "", ("up_layers.", "up_samples.", "conv_final.")),
    "BasicUNet": (lambda d: BasicUNetEncoder(1, spatial_dims=d, features=FEATURES),
                  lambda d: BasicUNet(d, 1, 2, features=FEATURES), "", ("upcat_", "final_conv.")),
    "ResNet": (lambda d: ResNetEncoder(1, spatial_dims=d, **RESNET),
               lambda d: ResNet("basic", spatial_dims=d, n_input_channels=1, num_classes=3, **RESNET), "", ("fc.",)),
    "EncoderClassifier": (lambda d: SegResNetEncoder(1, spatial_dims=d, init_filters=8, blocks_down=(1, 1)),
                          lambda d: EncoderClassifier(SegResNetEncoder(1, spatial_dims=d, init_filters=8,
                                                                       blocks_down=(1, 1)), num_classes=3),
                          "encoder.", ("head.",)),
}


def export(encoder: nn.Module, folder) -> None:
    export_encoder(encoder, folder, method="test", preprocessing=PLAN)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_round_trip_places_every_encoder_tensor(tmp_path, family: str, dims: int) -> None:
    make_encoder, make_net, prefix, left = FAMILIES[family]
    torch.manual_seed(0)
    encoder, net = make_encoder(dims), make_net(dims)
    export(encoder, tmp_path)
    report = load_encoder(tmp_path, into=net)

    assert report.module is net and report.prefix == prefix
    assert len(report.matched) == len(encoder.state_dict())
    assert report.unexpected == report.mismatched == report.missing == report.reshaped == []
    own = net.state_dict()
    assert all(torch.equal(own[prefix + k], v) for k, v in encoder.state_dict().items())
    assert report.expected_missing and all(k.startswith(left) for k in report.expected_missing)
    assert set(report.matched) | set(report.expected_missing) == set(own)


def test_unetr_at_another_image_size_interpolates_the_position_table(tmp_path) -> None:
    torch.manual_seed(0)
    encoder = vit(2)  # pretrained on 32 x 32: a 2 x 2 patch grid
    export(encoder, tmp_path)
    net = UNETR(1, 2, img_size=(64, 48), feature_size=4, spatial_dims=2, **VIT)  # 4 x 3 grid
    report = load_encoder(tmp_path, into=net)
    key = "vit.patch_embedding.position_embeddings"
    assert report.reshaped == [key] and key in report.matched and not report.mismatched
    assert report.notes == [f"{key}: position embeddings interpolated from the pretraining patch grid [2, 2] "
                            "(img_size [32, 32]) to the network's grid [4, 3] (UNETR's feat_size)"]
    expected = interpolate_pos_embed(encoder.patch_embedding.position_embeddings.detach(), (2, 2), (4, 3))
    assert torch.equal(net.state_dict()[key], expected)
    assert net(torch.rand(1, 1, 64, 48)).shape == (1, 2, 64, 48)


def test_monai_vit_grid_is_recovered_when_isotropic(tmp_path) -> None:
    export(vit(3, layers=2), tmp_path)
    net = ViT(1, 48, 16, num_layers=2, classification=True, spatial_dims=3, **VIT)  # 3 x 3 x 3 grid
    report = load_encoder(tmp_path, into=net)
    assert report.reshaped == ["patch_embedding.position_embeddings"]
    assert "[3, 3, 3] (assumed isotropic" in report.notes[0]


def test_anisotropic_grid_that_cannot_be_recovered_is_refused(tmp_path) -> None:
    export(ViTEncoder(1, img_size=(32, 16), patch_size=16, num_layers=2, spatial_dims=2, **VIT), tmp_path)
    net = ViT(1, (64, 32), 16, num_layers=2, spatial_dims=2, **VIT)  # MONAI's ViT keeps no image size
    with pytest.raises(EncoderCardError, match="cannot tell the patch grid.*position_embeddings"):
        load_encoder(tmp_path, into=net)
    report = load_encoder(tmp_path, into=net, allow_partial=True)
    assert [k for k, _, _ in report.mismatched] == ["patch_embedding.position_embeddings"]


def test_wrong_hidden_size_names_the_keys(tmp_path) -> None:
    export(vit(3, hidden_size=36, num_heads=2), tmp_path)
    net = UNETR(1, 2, img_size=32, feature_size=4, **VIT)
    table = r"vit\.patch_embedding\.position_embeddings: \[1, 8, 36\] -> \[1, 8, 24\]"
    with pytest.raises(EncoderCardError, match=r"does not fit this UNETR.*shape-mismatched.*" + table):
        load_encoder(tmp_path, into=net)
    report = load_encoder(tmp_path, into=net, allow_partial=True)  # only what fits: the MLPs' first bias
    assert len(report.matched) == 12 and all(k.endswith("mlp.linear1.bias") for k in report.matched)
    export(vit(3, hidden_size=36, mlp_dim=60), tmp_path)
    with pytest.raises(EncoderCardError, match="no weight of the 'vit' encoder fits this UNETR"):
        load_encoder(tmp_path, into=net, allow_partial=True)


def test_attention_heads_differ_with_identical_shapes(tmp_path) -> None:
    export(vit(3, num_heads=4), tmp_path)  # same qkv shapes as 2 heads
    net = UNETR(1, 2, img_size=32, feature_size=4, **VIT)
    heads = r"vit\.blocks\.\*\.attn\.num_heads is 4 in the encoder but 2 in the network \(12 modules\)"
    with pytest.raises(EncoderCardError, match=heads):
        load_encoder(tmp_path, into=net)
    report = load_encoder(tmp_path, into=net, allow_partial=True)
    assert not report.mismatched and any("num_heads" in n for n in report.notes)


def test_qkv_bias_mismatch_is_unexpected(tmp_path) -> None:
    export(vit(3, qkv_bias=True), tmp_path)
    net = UNETR(1, 2, img_size=32, feature_size=4, **VIT)  # qkv_bias=False
    with pytest.raises(EncoderCardError, match=r"unexpected.*blocks\.0\.attn\.qkv\.bias"):
        load_encoder(tmp_path, into=net)
    report = load_encoder(tmp_path, into=net, allow_partial=True)
    assert sorted(report.unexpected) == sorted(f"blocks.{i}.attn.qkv.bias" for i in range(12))
    assert len(report.matched) == len(vit(3).state_dict())


def test_silent_structural_difference_is_caught(tmp_path) -> None:
    export(BasicUNetEncoder(1, spatial_dims=2, features=FEATURES), tmp_path)  # LeakyReLU, instance norm
    with pytest.raises(EncoderCardError, match="LeakyReLU in the encoder but a ReLU in the network"):
        load_encoder(tmp_path, into=BasicUNet(2, 1, 2, features=FEATURES, act="relu"))


def test_wrong_pairings_are_refused(tmp_path) -> None:
    export(SegResNetEncoder(1, spatial_dims=3, init_filters=8, blocks_down=(1, 1)), tmp_path)
    with pytest.raises(EncoderCardError, match="'segresnet' encoder cannot initialise this UNETR.*'vit'"):
        load_encoder(tmp_path, into=UNETR(1, 2, img_size=32, feature_size=4, **VIT), allow_partial=True)
    with pytest.raises(EncoderCardError, match="'segresnet' encoder cannot initialise this EncoderClassifier"):
        load_encoder(tmp_path, into=EncoderClassifier(ResNetEncoder(1, spatial_dims=3, **RESNET), 2))
    with pytest.raises(EncoderCardError, match="MONAI's UNet is built recursively.*BasicUNet"):
        load_encoder(tmp_path, into=UNet(3, 1, 2, channels=(4, 8), strides=(2,)))
    with pytest.raises(EncoderCardError, match="no key map for this network. Supported: UNETR"):
        load_encoder(tmp_path, into=nn.Sequential(nn.Conv3d(1, 8, 3)))


def test_input_channels_and_spatial_dims_are_checked_up_front(tmp_path) -> None:
    export(SegResNetEncoder(1, spatial_dims=3, init_filters=8, blocks_down=(1, 1)), tmp_path)
    net = SegResNet(3, init_filters=8, in_channels=4, out_channels=2, blocks_down=(1, 1), blocks_up=(1,))
    with pytest.raises(EncoderCardError, match="pretrained on 1 input channel.*SegResNet expects 4"):
        load_encoder(tmp_path, into=net)
    report = load_encoder(tmp_path, into=net, allow_partial=True)  # the stem stays random, the rest loads
    assert [k for k, _, _ in report.mismatched] == ["convInit.conv.weight"] and report.notes
    net2d = SegResNet(2, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1), blocks_up=(1,))
    with pytest.raises(EncoderCardError, match="pretrained in 3D, the SegResNet is 2D"):
        load_encoder(tmp_path, into=net2d, allow_partial=True)


def test_structure_check_leaves_the_random_stream_alone(tmp_path) -> None:
    export(vit(2), tmp_path)
    net = UNETR(1, 2, img_size=32, feature_size=4, spatial_dims=2, **VIT)
    torch.manual_seed(1)
    load_encoder(tmp_path, into=net)
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))


def test_family_lookup_prefers_registry_encoders_over_their_monai_base() -> None:
    assert target_family(vit(2, layers=1)).prefix == "" and "registry encoder 'vit'" in target_family(
        vit(2, layers=1)).name
    assert target_family(UNETR(1, 2, img_size=32, feature_size=4, spatial_dims=2, **VIT)).name == "UNETR"
