"""Whole-network transfer: a restoration model's BasicUNet decoder exported beside its encoder, verified on load and
placed with the encoder into a fresh segmentation BasicUNet, where only the head (final_conv) keeps its own
initialisation; cards without a decoder, altered files and networks that do not fit are refused."""
from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SegResNet

from medssl.models.dense_transfer import (
    DECODER_NAME,
    MissingDecoderError,
    export_decoder,
    load_decoder_state,
    load_whole_network,
)
from medssl.models.hub import EncoderCardError, export_encoder, load_encoder
from medssl.models.registry import build_encoder
from medssl.models.restoration import RestorationModel
from medssl.models.segmenter import build_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

FEATURES = [4, 4, 8, 8, 16, 4]
SIZE = {2: (32, 32), 3: (32, 32, 16)}


def pretrained(spatial_dims: int, norm: str = "batch") -> RestorationModel:
    """A restoration model with the BasicUNet decoder whose weights and norm statistics are not at their init."""
    torch.manual_seed(0)
    enc = build_encoder("basicunet", {"in_channels": 1, "spatial_dims": spatial_dims, "features": FEATURES,
                                      "norm": norm})
    model = RestorationModel(enc, out_activation="sigmoid", decoder="basicunet")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()(torch.rand(2, 1, *SIZE[spatial_dims]))  # moves the batch-norm running statistics
    return model


def export(model: RestorationModel, folder) -> dict:
    record = export_decoder(model.dense_decoder, folder, out_activation="sigmoid")
    export_encoder(model.encoder, folder, method="genesis", preprocessing={}, extra={"decoder": record})
    return json.loads((folder / "encoder.json").read_text())


def segmenter(card: dict, num_classes: int = 3, seed: int = 1, **options):
    torch.manual_seed(seed)
    return build_segmenter(card["architecture"], num_classes=num_classes, spatial_dims=card["spatial_dims"],
                           in_channels=1, img_size=list(SIZE[card["spatial_dims"]]), options=options or None)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_tensor_but_the_head_comes_from_the_pretrained_model(spatial_dims, tmp_path):
    model = pretrained(spatial_dims)
    card = export(model, tmp_path)
    dec = card["decoder"]
    assert dec["file"] == DECODER_NAME and dec["network"] == "BasicUNet" and dec["upsample"] == "deconv"
    assert dec["architecture"]["name"] == "basicunet" and dec["architecture"]["kwargs"]["out_channels"] == 1
    assert dec["num_tensors"] == len(model.decoder.state_dict()) and len(dec["sha256"]) == 64
    assert dec["out_activation"] == "sigmoid"

    net = segmenter(card)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    report = load_whole_network(tmp_path / "encoder.json", into=net)
    source = {**model.encoder.state_dict(), **model.decoder.state_dict()}
    head = {"final_conv.weight", "final_conv.bias"}
    for key, value in net.state_dict().items():
        if key in head:  # the network's own initialisation, untouched
            assert torch.equal(value, fresh[key]), key
        else:  # parameters and buffers (running statistics) of the pretrained model
            assert torch.equal(value, source[key]), key
            assert value.dtype == torch.long or not torch.equal(value, fresh[key]), key  # the test can fail
    n_enc, n_dec = len(model.encoder.state_dict()), len(model.decoder.state_dict())
    assert report.key_sources() == {"encoder": n_enc, "decoder": n_dec - 2, "reinitialised": 2}
    assert n_enc + n_dec == len(net.state_dict())
    assert set(report.reinitialised) == head == set(report.expected_missing)
    assert all("the head" in why and "-> [3" in why for why in report.reinitialised.values())  # shape mismatch
    assert not (report.missing or report.unexpected or report.mismatched)
    assert "2 re-initialised (final_conv: the head)" in report.summary()


def test_decoder_file_is_verified_and_encoder_cards_stay_compatible(tmp_path):
    model = pretrained(2)
    export(model, tmp_path)
    state, _ = load_decoder_state(tmp_path)
    assert state.keys() == model.decoder.state_dict().keys()
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in state.items())
    assert not load_encoder(tmp_path).missing  # the encoder alone loads as from any card

    weights = tmp_path / DECODER_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    net = segmenter(json.loads((tmp_path / "encoder.json").read_text()))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(EncoderCardError, match="decoder weights file does not match the SHA-256"):
        load_whole_network(tmp_path, into=net)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # nothing copied
    weights.unlink()
    with pytest.raises(EncoderCardError, match="decoder weights file named by the card is missing"):
        load_whole_network(tmp_path, into=net)


def test_a_card_without_decoder_is_refused(tmp_path):
    model = pretrained(2)
    export_encoder(model.encoder, tmp_path, method="simclr", preprocessing={})
    card = json.loads((tmp_path / "encoder.json").read_text())
    assert "decoder" not in card  # cards of encoder-only methods are unchanged
    with pytest.raises(MissingDecoderError, match="holds no decoder") as err:
        load_whole_network(tmp_path, into=segmenter(card))
    assert err.value.reason.value == "no_decoder" and isinstance(err.value, EncoderCardError)


def test_networks_that_do_not_fit_are_refused_before_copying(tmp_path):
    card = export(pretrained(2, norm="instance"), tmp_path)
    net = segmenter(card, upsample="nontrainable")  # another upsampling: other decoder modules and keys
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(EncoderCardError, match="upsample='deconv'") as err:
        load_whole_network(tmp_path, into=net)
    assert "upcat_4.upsample" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    other = SegResNet(spatial_dims=2, in_channels=1, out_channels=2, init_filters=8, blocks_down=(1, 1))
    with pytest.raises(EncoderCardError, match="only MONAI BasicUNet has a dense decoder"):
        load_whole_network(tmp_path, into=other)
