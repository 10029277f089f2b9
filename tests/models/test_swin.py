"""SwinEncoder: the swinViT of MONAI's SwinUNETR as a registry encoder (same keys, same hidden states)."""
from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

from medssl.models.registry import build_encoder, encoder_spec
from medssl.models.swin import SwinEncoder

TINY = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 2), "window_size": 4}


@pytest.mark.parametrize("dims, use_v2", [(2, False), (3, False), (3, True)])
def test_keys_and_shapes_are_swinunetr_swinvit(dims: int, use_v2: bool) -> None:
    encoder = SwinEncoder(2, spatial_dims=dims, use_v2=use_v2, **TINY)
    net = SwinUNETR(2, 3, spatial_dims=dims, use_v2=use_v2, **TINY)
    expected = {k[len("swinViT."):]: v.shape for k, v in net.state_dict().items() if k.startswith("swinViT.")}
    assert {k: v.shape for k, v in encoder.state_dict().items()} == expected


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_is_swinunetr_hidden_states_pooled(dims: int) -> None:
    torch.manual_seed(0)
    encoder = SwinEncoder(1, spatial_dims=dims, **TINY).eval()
    net = SwinUNETR(1, 2, spatial_dims=dims, **TINY).eval()
    net.swinViT.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 1, *(32,) * dims)
    with torch.no_grad():
        feats, reference = encoder.forward_features(x), net.swinViT(x, net.normalize)
        pooled = encoder(x)
    assert [tuple(f.shape) for f in feats] == [(2, 12 * 2**i, *(16 // 2**i,) * dims) for i in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(feats, reference))
    assert pooled.shape == (2, encoder.feature_dim) == (2, 16 * 12)
    assert torch.allclose(pooled, feats[-1].flatten(2).mean(2))


def test_registry_spec_round_trip() -> None:
    encoder = build_encoder("swin", in_channels=1, spatial_dims=2, **TINY)
    spec = json.loads(json.dumps(encoder_spec(encoder)))
    assert spec["name"] == "swin" and spec["kwargs"]["window_size"] == [4, 4]
    rebuilt = build_encoder(**spec)
    assert encoder_spec(rebuilt) == spec
    rebuilt.load_state_dict(encoder.state_dict())
    assert (encoder.spatial_dims, encoder.in_channels, encoder.stride) == (2, 1, 32)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="4 stages"):
        SwinEncoder(1, depths=(1, 1, 1), num_heads=(1, 1, 1))
    with pytest.raises(ValueError, match="must divide"):
        SwinEncoder(1, feature_size=12, depths=(1, 1, 1, 1), num_heads=(5, 1, 1, 1))
    with pytest.raises(ValueError, match="downsample"):
        SwinEncoder(1, downsample="pool")
    with pytest.raises(ValueError, match="expected input"):
        SwinEncoder(1, spatial_dims=2, **TINY)(torch.rand(1, 2, 32, 32))
