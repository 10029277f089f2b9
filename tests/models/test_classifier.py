"""EncoderClassifier: a registry encoder plus a linear head, built and loaded from an encoder card."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.models.classifier import EncoderClassifier
from medssl.models.hub import EncoderCardError, export_encoder
from medssl.models.resnet import ResNetEncoder
from medssl.models.vit import ViTEncoder

RESNET = {"layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16], "conv1_t_size": 3, "conv1_t_stride": 1,
          "no_max_pool": True}


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_shape(dims: int) -> None:
    model = EncoderClassifier(ResNetEncoder(2, spatial_dims=dims, **RESNET), num_classes=5, dropout=0.1)
    assert model(torch.rand(3, 2, *(16,) * dims)).shape == (3, 5)
    assert model.head.in_features == 16 and (model.spatial_dims, model.in_channels) == (dims, 2)


def test_from_card_loads_the_encoder_and_leaves_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder(1, spatial_dims=2, **RESNET)
    export_encoder(encoder, tmp_path, method="simclr", preprocessing={})
    model = EncoderClassifier.from_card(tmp_path, num_classes=3)
    assert type(model.encoder) is ResNetEncoder and model.head.out_features == 3
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in encoder.state_dict().items())
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval().encoder(x), encoder.eval()(x))


def test_from_card_at_another_image_size_interpolates(tmp_path) -> None:
    encoder = ViTEncoder(1, img_size=32, patch_size=16, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2,
                         spatial_dims=2)
    export_encoder(encoder, tmp_path, method="mae", preprocessing={})
    model = EncoderClassifier.from_card(tmp_path / "encoder.json", num_classes=2, img_size=64)
    assert model.encoder.grid_shape == (4, 4) and model(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    norm = r"encoder\.blocks\.0\.norm1\.weight: \[24\] -> \[48\]"
    with pytest.raises(EncoderCardError, match="does not fit this EncoderClassifier.*" + norm):
        EncoderClassifier.from_card(tmp_path, num_classes=2, hidden_size=48, num_heads=2)


def test_needs_an_encoder() -> None:
    with pytest.raises(ValueError, match="feature_dim"):
        EncoderClassifier(nn.Linear(2, 2), num_classes=2)
