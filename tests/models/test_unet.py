"""BasicUNetEncoder: exactly the encoder keys of a MONAI BasicUNet, same skip features, 2D/3D."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from medssl.models import BasicUNetEncoder

FEATURES = [4, 4, 8, 8, 16, 4]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_keys_and_features_match_basic_unet(spatial_dims: int) -> None:
    torch.manual_seed(0)
    enc = BasicUNetEncoder(in_channels=2, spatial_dims=spatial_dims, features=FEATURES)
    net = BasicUNet(spatial_dims=spatial_dims, in_channels=2, out_channels=3, features=FEATURES)
    missing, unexpected = net.load_state_dict(enc.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith(("upcat_", "final_conv")) for k in missing)
    x = torch.randn(2, 2, *(32,) * spatial_dims)
    enc.eval(), net.eval()
    with torch.no_grad():
        feats = enc.forward_features(x)
        ref = [net.conv_0(x)]
        for down in (net.down_1, net.down_2, net.down_3, net.down_4):
            ref.append(down(ref[-1]))
        assert all(torch.allclose(a, b) for a, b in zip(feats, ref))
        assert [f.shape[1] for f in feats] == enc.stage_channels and feats[-1].shape[-1] == 2
        assert enc(x).shape == (2, enc.feature_dim)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="6 entries"):
        BasicUNetEncoder(features=[4, 8])
    with pytest.raises(ValueError, match="spatial_dims"):
        BasicUNetEncoder(spatial_dims=1)
