"""Encoder export -> load round trip, card contents, tamper detection, loading into MONAI networks."""
from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import UNETR, SegResNet

from medssl.models.cnn import SegResNetEncoder
from medssl.models.hub import EncoderCardError, export_encoder, load_encoder, read_card
from medssl.models.vit import ViTEncoder

PLAN = {"kind": "plan", "plan": {"target_spacing": [1.5, 1.5, 1.5], "intensity": "ct_window"}}


def _vit() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(in_channels=1, img_size=32, patch_size=16, hidden_size=24, mlp_dim=48, num_layers=12,
                      num_heads=2, spatial_dims=3)


def test_round_trip_rebuilds_the_exact_encoder(tmp_path):
    enc = _vit()
    card_path = export_encoder(enc, tmp_path, method="mae", preprocessing=PLAN, training={"data": {"items": 3}},
                               config_sha256="ab" * 32)
    card = json.loads(card_path.read_text())
    assert card["architecture"]["name"] == "vit" and card["spatial_dims"] == 3 and card["in_channels"] == 1
    assert card["preprocessing"] == PLAN and card["method"] == "mae" and card["config_sha256"] == "ab" * 32
    assert card["weights"]["num_tensors"] == len(enc.state_dict())
    for source in (card_path, tmp_path):  # the card or its folder
        report = load_encoder(source)
        assert sorted(report.matched) == sorted(enc.state_dict()) and not report.missing and not report.unexpected
        assert all(torch.equal(v, enc.state_dict()[k]) for k, v in report.module.state_dict().items())
    x = torch.rand(1, 1, 32, 32, 32)
    assert torch.equal(report.module.eval()(x), enc.eval()(x))


def test_vit_encoder_loads_into_unetr(tmp_path):
    export_encoder(_vit(), tmp_path, method="mae", preprocessing=PLAN)
    unetr = UNETR(in_channels=1, out_channels=3, img_size=32, hidden_size=24, mlp_dim=48, num_heads=2)
    report = load_encoder(tmp_path, into=unetr.vit)
    assert not report.missing and not report.unexpected
    assert torch.equal(unetr.vit.blocks[0].attn.qkv.weight, _vit().blocks[0].attn.qkv.weight)


def test_cnn_encoder_into_segresnet_leaves_the_decoder_to_fine_tuning(tmp_path):
    # the decoder cannot come from an encoder: it is reported apart (expected_missing), not as missing
    enc = SegResNetEncoder(in_channels=1, spatial_dims=3, init_filters=8, blocks_down=(1, 1, 1))
    export_encoder(enc, tmp_path, method="simmim", preprocessing=PLAN)
    net = SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1, 1),
                    blocks_up=(1, 1))
    report = load_encoder(tmp_path, into=net)
    assert not report.unexpected and not report.missing and len(report.matched) == len(enc.state_dict())
    assert report.expected_missing and all(k.startswith(("up", "conv_final")) for k in report.expected_missing)
    assert "left to fine-tuning" in report.summary()


def test_tampered_or_missing_weights_are_refused(tmp_path):
    export_encoder(_vit(), tmp_path, method="mae", preprocessing=PLAN)
    weights = tmp_path / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EncoderCardError, match="SHA-256"):
        load_encoder(tmp_path)
    weights.unlink()
    with pytest.raises(EncoderCardError, match="missing"):
        load_encoder(tmp_path)
    with pytest.raises(EncoderCardError, match="not found"):
        read_card(tmp_path / "nowhere")
    (tmp_path / "encoder.json").write_text('{"format": "something-else"}')
    with pytest.raises(EncoderCardError, match="not a medssl encoder card"):
        read_card(tmp_path)


def test_a_different_architecture_is_refused(tmp_path):
    export_encoder(_vit(), tmp_path, method="mae", preprocessing=PLAN)
    other = ViTEncoder(in_channels=1, img_size=32, patch_size=16, hidden_size=32, mlp_dim=48, num_layers=12,
                       num_heads=2, spatial_dims=3)
    with pytest.raises(EncoderCardError, match="does not fit.*shape-mismatched"):
        load_encoder(tmp_path, into=other)
    report = load_encoder(tmp_path, into=other, allow_partial=True)
    assert ("norm.weight", (24,), (32,)) in report.mismatched
    assert "norm.weight" not in report.missing and "norm.weight" not in report.unexpected
