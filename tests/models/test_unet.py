"""BasicUNetEncoder and BasicUNetDecoder: exactly the encoder / decoder keys of a MONAI BasicUNet, same features and
output, 2D/3D."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from medssl.models import BasicUNetEncoder
from medssl.models.unet import BasicUNetDecoder

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


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
def test_decoder_is_exactly_basic_unets_decoder(spatial_dims: int, upsample: str) -> None:
    # keys equal BasicUNet's decoder keys, in order; with BasicUNet's weights it gives BasicUNet's output
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=spatial_dims, in_channels=2, out_channels=3, features=FEATURES, upsample=upsample)
    enc = BasicUNetEncoder(in_channels=2, spatial_dims=spatial_dims, features=FEATURES)
    dec = BasicUNetDecoder.for_encoder(enc, out_channels=3, upsample=upsample)
    decoder_keys = [k for k in net.state_dict() if k.startswith(("upcat_", "final_conv."))]
    assert list(dec.state_dict()) == decoder_keys and decoder_keys
    assert list(enc.state_dict()) + decoder_keys == list(net.state_dict())
    enc.load_state_dict({k: v for k, v in net.state_dict().items() if k in enc.state_dict()})
    dec.load_state_dict({k: v for k, v in net.state_dict().items() if k in decoder_keys})
    x = torch.randn(2, 2, *(36, 20, 16)[:spatial_dims])  # 36, 20: not multiples of 16, padded as in BasicUNet
    for m in (enc, dec, net):
        m.eval()
    with torch.no_grad():
        out = dec(enc.forward_features(x), x.shape[2:])
        assert out.shape == (2, 3, *x.shape[2:]) and torch.equal(out, net(x))
    assert dec.config["upsample"] == upsample and BasicUNetDecoder(**dec.config).state_dict().keys() == \
        dec.state_dict().keys()


def test_decoder_bad_arguments() -> None:
    with pytest.raises(ValueError, match="upsample"):
        BasicUNetDecoder(spatial_dims=2, features=FEATURES, upsample="bilinear")
    with pytest.raises(ValueError, match="6 entries"):
        BasicUNetDecoder(spatial_dims=2, features=FEATURES[:5])
    with pytest.raises(ValueError, match="5 feature maps"):
        BasicUNetDecoder(spatial_dims=2, features=FEATURES)([torch.randn(1, 4, 8, 8)])
