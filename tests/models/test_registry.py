"""Encoder registry: build by name, spec round trip rebuilds an identical architecture."""
from __future__ import annotations

import json

import pytest
import torch

from medssl.models import (
    ENCODERS,
    BasicUNetEncoder,
    ResNetEncoder,
    SegResNetEncoder,
    SwinEncoder,
    ViTEncoder,
    build_encoder,
    encoder_spec,
)

TINY_VIT = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2}
CASES = [
    ("vit", {"in_channels": 2, "img_size": (16, 8), "patch_size": 4, "spatial_dims": 2, "pos_embed_type": "sincos",
             **TINY_VIT}),
    ("vit", {"in_channels": 1, "img_size": 16, "patch_size": (4, 4, 8), "qkv_bias": True,
             **TINY_VIT, "num_layers": 1, "num_heads": 4}),
    ("segresnet", {"in_channels": 1, "spatial_dims": 3, "init_filters": 8, "blocks_down": (1, 2)}),
    ("segresnet", {"in_channels": 3, "spatial_dims": 2, "init_filters": 4, "blocks_down": [1, 1, 1], "norm": "BATCH"}),
    ("resnet", {"in_channels": 1, "spatial_dims": 2, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
                "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}),
    ("resnet", {"in_channels": 2, "spatial_dims": 3, "block": "bottleneck", "layers": [1, 1, 1, 1],
                "block_inplanes": [4, 4, 8, 8], "norm": ["group", {"num_groups": 4}]}),
    ("basicunet", {"in_channels": 1, "spatial_dims": 2, "features": [4, 4, 8, 8, 16, 4]}),
    ("basicunet", {"in_channels": 2, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4], "norm": "batch",
                   "act": "relu"}),
]


def test_registry_contents() -> None:
    assert ENCODERS == {"vit": ViTEncoder, "segresnet": SegResNetEncoder, "resnet": ResNetEncoder,
                        "basicunet": BasicUNetEncoder, "swin": SwinEncoder}


@pytest.mark.parametrize("name, kwargs", CASES)
def test_spec_round_trip(name: str, kwargs: dict) -> None:
    encoder = build_encoder(name, **kwargs)
    assert isinstance(encoder, ENCODERS[name])
    spec = json.loads(json.dumps(encoder_spec(encoder)))  # survives JSON
    assert spec["name"] == name
    rebuilt = build_encoder(**spec)
    assert type(rebuilt) is type(encoder)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert encoder_spec(rebuilt) == spec
    rebuilt.load_state_dict(encoder.state_dict())
    encoder.eval(), rebuilt.eval()
    size = encoder.img_size if name == "vit" else (32 if name == "basicunet" else 16,) * encoder.spatial_dims
    x = torch.randn(2, encoder.in_channels, *size)
    with torch.no_grad():
        assert torch.allclose(encoder(x), rebuilt(x))
        assert encoder(x).shape == (2, encoder.feature_dim)


def test_keyword_overrides_spec() -> None:
    spec = encoder_spec(build_encoder("segresnet", spatial_dims=2, init_filters=8, blocks_down=(1,)))
    assert build_encoder(**spec, in_channels=3).in_channels == 3


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'densenet'.*basicunet.*resnet.*segresnet.*swin.*vit"):
        build_encoder("densenet")
    with pytest.raises(ValueError, match="not a registered encoder"):
        encoder_spec(torch.nn.Linear(2, 2))
