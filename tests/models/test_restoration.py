"""Restoration decoder: image-shaped output from every CNN registry encoder, 2D and 3D, odd sizes, with and without
skip connections; clear errors for encoders without multi-scale features; the BasicUNet (dense) decoder option."""
from __future__ import annotations

import pytest
import torch

from medssl.models.registry import build_encoder
from medssl.models.restoration import DenseDecoderError, RestorationDecoder, RestorationModel
from medssl.models.unet import BasicUNetDecoder

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    # (encoder, kwargs, image size): CIFAR-stem ResNet at MedMNIST's odd 28 px, ImageNet stem (stride 4 first map)
    ("resnet", {"spatial_dims": 2, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16], "conv1_t_size": 3,
                "conv1_t_stride": 1, "no_max_pool": True}, 28),
    ("resnet", {"spatial_dims": 3, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16]}, 16),
    ("segresnet", {"spatial_dims": 3, "init_filters": 8, "blocks_down": [1, 1, 1]}, 12),
    ("basicunet", {"spatial_dims": 2, "features": [4, 4, 8, 8, 16, 4]}, 32),
]


@pytest.mark.parametrize("name, kwargs, size", CASES)
@pytest.mark.parametrize("skips", [True, False])
def test_output_has_the_input_shape_and_trains_the_encoder(name, kwargs, size, skips):
    torch.manual_seed(0)
    encoder = build_encoder(name, {"in_channels": 2, **kwargs})
    model = RestorationModel(encoder, skips=skips, out_activation="sigmoid")
    x = torch.rand(2, 2, *(size,) * kwargs["spatial_dims"])
    y = model(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    torch.nn.functional.mse_loss(y, x).backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_custom_channels_and_linear_output():
    decoder = RestorationDecoder(2, [4, 8, 16], out_channels=3, channels=[6, 5, 99])
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    out = decoder(feats, (8, 8))
    assert out.shape == (2, 3, 8, 8) and out.min() < 0  # no activation
    assert decoder.head.in_channels == 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="multi-scale forward_features"):
        RestorationModel(build_encoder("vit", {"in_channels": 1, "spatial_dims": 2, "img_size": 16, "patch_size": 4}))
    with pytest.raises(ValueError, match="channels must have one positive entry"):
        RestorationDecoder(2, [4, 8], channels=[4])
    with pytest.raises(ValueError, match="out_activation"):
        RestorationDecoder(2, [4, 8], out_activation="tanh")
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        RestorationDecoder(2, [4, 8])([torch.randn(1, 4, 4, 4)], (4, 4))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_basicunet_decoder_restores_with_sigmoid_and_trains_both_halves(spatial_dims):
    torch.manual_seed(0)
    encoder = build_encoder("basicunet", {"in_channels": 2, "spatial_dims": spatial_dims,
                                          "features": [4, 4, 8, 8, 16, 4]})
    model = RestorationModel(encoder, out_activation="sigmoid", decoder="basicunet")
    assert isinstance(model.decoder, BasicUNetDecoder) and model.dense_decoder is model.decoder
    assert model.decoder.final_conv.out_channels == 2  # restores the image channels
    x = torch.rand(2, 2, *(36, 20, 16)[:spatial_dims])  # odd pooling sizes: BasicUNet pads, the shape is kept
    y = model(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    torch.nn.functional.mse_loss(y, x).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert RestorationModel(build_encoder("basicunet", {"spatial_dims": 2, "features": [4, 4, 8, 8, 16, 4]})) \
        .dense_decoder is None  # the default restoration decoder is not a segmenter's: nothing to export


def test_dense_decoder_refuses_other_encoders_and_settings():
    resnet = build_encoder(*CASES[0][:2])
    with pytest.raises(DenseDecoderError, match="needs a 'basicunet' encoder") as err:
        RestorationModel(resnet, decoder="basicunet")
    assert err.value.reason.value == "bad_config"
    unet = build_encoder("basicunet", {"spatial_dims": 2, "features": [4, 4, 8, 8, 16, 4]})
    with pytest.raises(DenseDecoderError, match="skips"):
        RestorationModel(unet, skips=False, decoder="basicunet")
    with pytest.raises(DenseDecoderError, match="upsample"):
        RestorationModel(unet, decoder="basicunet", upsample="bilinear")
    with pytest.raises(ValueError, match="decoder must be one of"):
        RestorationModel(unet, decoder="unet")
