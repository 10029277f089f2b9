"""SegResNetEncoder: keys load into MONAI SegResNet, N-D shapes, feature_dim/stride."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SegResNet

from medssl.models.cnn import SegResNetEncoder


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_keys_load_into_segresnet(spatial_dims: int) -> None:
    enc = SegResNetEncoder(in_channels=2, spatial_dims=spatial_dims, init_filters=8, blocks_down=(1, 2, 2))
    net = SegResNet(spatial_dims=spatial_dims, init_filters=8, in_channels=2, out_channels=3,
                    blocks_down=(1, 2, 2), blocks_up=(1, 1))
    full = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert ours and all(full.get(k) == s for k, s in ours.items())
    missing, unexpected = net.load_state_dict(enc.state_dict(), strict=False)
    assert not unexpected
    assert not set(ours) & set(missing)  # every encoder key matched
    assert all(not k.startswith(("convInit.", "down_layers.")) for k in missing)
    # and the loaded SegResNet encodes exactly like the encoder
    x = torch.randn(1, 2, *(16,) * spatial_dims)
    enc.eval(), net.eval()
    with torch.no_grad():
        for a, b in zip(enc.forward_features(x), net.encode(x)[1]):
            assert torch.allclose(a, b)


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 16)), (3, (16, 16, 8))])
def test_shapes(spatial_dims: int, size: tuple[int, ...]) -> None:
    enc = SegResNetEncoder(in_channels=1, spatial_dims=spatial_dims, init_filters=8, blocks_down=(1, 1, 1, 1))
    assert enc.feature_dim == 64 and enc.stride == 8 and enc.spatial_dims == spatial_dims
    x = torch.randn(2, 1, *size)
    feats = enc.forward_features(x)
    assert len(feats) == 4
    for i, f in enumerate(feats):
        assert f.shape == (2, 8 * 2**i, *(s // 2**i for s in size))
    pooled = enc(x)
    assert pooled.shape == (2, enc.feature_dim)
    assert torch.allclose(pooled, feats[-1].flatten(2).mean(2))


def test_config_json_and_checkpointing() -> None:
    import json

    enc = SegResNetEncoder(spatial_dims=2, init_filters=8, blocks_down=(1, 1))
    assert json.loads(json.dumps(enc.config)) == enc.config
    assert enc.config["blocks_down"] == [1, 1] and enc.config["norm"] == ["GROUP", {"num_groups": 8}]
    again = SegResNetEncoder(**{**json.loads(json.dumps(enc.config)), "gradient_checkpointing": True})
    again.load_state_dict(enc.state_dict())
    enc.train(), again.train()
    x = torch.randn(2, 1, 16, 16)
    a, b = enc(x), again(x)
    assert torch.allclose(a, b, atol=1e-6)
    a.sum().backward(), b.sum().backward()
    for p, q in zip(enc.parameters(), again.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
