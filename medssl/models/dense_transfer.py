"""Whole-network transfer: a pretrained segmentation-network decoder exported beside the encoder and loaded back with
it, so fine-tuning starts from the whole pretrained U-Net (the Models Genesis recipe), not from the encoder alone.

A restoration method pretrained with ``decoder="basicunet"`` (:class:`medssl.models.unet.BasicUNetDecoder`, whose
keys are MONAI ``BasicUNet``'s ``upcat_*`` / ``final_conv``) writes ``decoder.safetensors`` next to
``encoder.safetensors``; :func:`export_decoder` returns the card's ``decoder`` record::

    "decoder": {"architecture": {"name": "basicunet", "kwargs": {out_channels, spatial_dims, features, act, norm,
                                                                 bias, dropout, upsample}},
                "network": "BasicUNet", "upsample": "deconv", "out_activation": "sigmoid" | null,
                "file": "decoder.safetensors", "sha256": "...", "num_tensors": 34, "num_parameters": ...}

Cards of methods without a dense decoder have no ``decoder`` entry and load as before (encoder only).

:func:`load_whole_network` loads encoder and decoder into the segmentation network with one explicit key map
(``network key = decoder key``, as for the encoder) and returns a :class:`WholeLoadReport`: the keys that came from
the encoder (``matched``, placed by :func:`medssl.models.hub.load_encoder` with all its checks), those from the
decoder (``from_decoder``) and those re-initialised with the reason (``reinitialised``: ``final_conv``, the head,
which outputs the segmentation classes here and restored the image channels in pretraining). Anything else missing,
unexpected, shape-mismatched or structurally different (upsample mode, norm or activation type) is refused before
a tensor is copied, naming the keys; a card without a decoder raises :class:`MissingDecoderError`. Only BasicUNet
has a dense decoder so far (SegResNet's ``up_layers`` / ``up_samples`` could follow the same pattern).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch
from monai.networks.nets import BasicUNet
from safetensors.torch import load_file, save_file
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.models.hub import EncoderCardError, LoadReport, load_encoder, read_card
from medssl.models.unet import DECODER_HEAD, DECODER_STAGES, BasicUNetDecoder
from medssl.storage.atomic import atomic_write
from medssl.storage.hashing import file_sha256

__all__ = ["DECODER_NAME", "DENSE_DECODERS", "MissingDecoderError", "WholeLoadReport", "card_decoder",
           "export_decoder", "load_decoder_state", "load_whole_network"]

DECODER_NAME = "decoder.safetensors"
#: dense decoder name -> (decoder class, the MONAI network it is the decoder of)
DENSE_DECODERS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {"basicunet": (BasicUNetDecoder, BasicUNet)}
_SHOWN = 8


class MissingDecoderError(EncoderCardError):
    """Whole-network transfer was asked of an encoder card that holds no decoder (reason ``no_decoder``)."""

    def __init__(self, message: str, files: Any = ()):
        MedsslError.__init__(self, Reason.NO_DECODER, message, files)


@dataclass
class WholeLoadReport(LoadReport):
    """:class:`~medssl.models.hub.LoadReport` of the encoder part (``matched`` = keys from the encoder), plus the
    keys from the decoder file and the network keys left at their initialisation, each with its reason
    (``expected_missing`` lists the same keys)."""

    from_decoder: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)

    def key_sources(self) -> dict[str, int]:
        return {"encoder": len(self.matched), "decoder": len(self.from_decoder),
                "reinitialised": len(self.reinitialised)}

    def summary(self) -> str:
        modules = sorted({k.rsplit(".", 1)[0] for k in self.reinitialised})
        return (f"whole network: {len(self.matched)} keys from the encoder, {len(self.from_decoder)} from the "
                f"decoder, {len(self.reinitialised)} re-initialised ({', '.join(modules) or 'none'}: the head), "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")


def card_decoder(card: dict[str, Any], card_path: Any = None) -> dict[str, Any]:
    """The card's ``decoder`` record; :class:`MissingDecoderError` when the card has none."""
    record = card.get("decoder")
    if not record:
        raise MissingDecoderError(
            f"the encoder card (method {card.get('method')!r}, {card['architecture']['name']!r} encoder) holds no "
            "decoder, so whole-network transfer has nothing to load: pretrain a restoration method with "
            "decoder: basicunet (e.g. Models Genesis), or transfer the encoder alone (transfer: encoder)",
            [card_path] if card_path else [])
    return record


def export_decoder(decoder: nn.Module, out_dir: str | Path, *, out_activation: Optional[str] = None) -> dict[str, Any]:
    """Write ``out_dir/decoder.safetensors``; return the card's ``decoder`` record (module docstring)."""
    name = next((n for n, (cls, _) in DENSE_DECODERS.items() if type(decoder) is cls), None)
    if name is None:
        raise EncoderCardError(f"{type(decoder).__name__} is not a dense decoder of a segmentation network "
                               f"({sorted(DENSE_DECODERS)}); only those are exported")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in decoder.state_dict().items()}
    weights = atomic_write(Path(out_dir) / DECODER_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    return {"architecture": {"name": name, "kwargs": dict(decoder.config)},
            "network": DENSE_DECODERS[name][1].__name__, "upsample": decoder.config.get("upsample"),
            "out_activation": out_activation, "file": DECODER_NAME, "sha256": file_sha256(weights),
            "num_tensors": len(tensors), "num_parameters": int(sum(t.numel() for t in tensors.values()))}


def load_decoder_state(card_or_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The decoder's tensors (safetensors, no pickle) after checking the file's SHA-256 against the card."""
    card, folder = read_card(card_or_path)
    record = card_decoder(card, card_or_path)
    if folder is None:
        raise EncoderCardError("a card dict has no decoder file beside it; pass the path of encoder.json")
    weights = folder / record["file"]
    if not weights.is_file():
        raise EncoderCardError("decoder weights file named by the card is missing", [weights])
    if file_sha256(weights) != record["sha256"]:
        raise EncoderCardError("decoder weights file does not match the SHA-256 recorded in the card (altered or "
                               "replaced)", [weights])
    return load_file(str(weights)), card


def _show(keys: list[str]) -> str:
    return f"[{', '.join(keys[:_SHOWN])}]" + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _structure(record: dict[str, Any], into: nn.Module) -> list[str]:
    """Module types of the card's decoder vs the network's (upsample mode, norm, activation: shapes can agree)."""
    cls = DENSE_DECODERS[record["architecture"]["name"]][0]
    with torch.random.fork_rng(devices=[]):  # the reference must not shift the caller's random stream
        reference = cls(**record["architecture"]["kwargs"])
    targets = dict(into.named_modules())
    found = []
    for name, ref in reference.named_modules():
        if not name or name.startswith(DECODER_HEAD):
            continue
        tgt = targets.get(name)
        if tgt is None or type(tgt) is not type(ref):
            line = (f"{name} is a {type(ref).__name__} in the pretrained decoder but "
                    f"{'absent' if tgt is None else 'a ' + type(tgt).__name__} in the network")
            found.append(line)
    if found:
        found = found[:_SHOWN] + ([f"(+{len(found) - _SHOWN} more structural differences)"]
                                  if len(found) > _SHOWN else [])
        found.append(f"(the decoder was pretrained with upsample={record.get('upsample')!r}: build the segmenter with "
                     "the same, and the encoder's norm and activation)")
    return found


def load_whole_network(card_or_path: str | Path, into: nn.Module,
                       adapt_channels: Optional[str] = None) -> WholeLoadReport:
    """Load the card's encoder and decoder into ``into`` (a MONAI ``BasicUNet``); see the module docstring.

    The decoder is checked first (file SHA-256, network family, module types, every key and shape), then the encoder
    is loaded strictly by :func:`medssl.models.hub.load_encoder` (``adapt_channels`` as there), then the decoder.
    Only the head (``final_conv``) is left at the network's initialisation; anything else raises
    :class:`~medssl.models.hub.EncoderCardError` naming the keys.
    """
    state, card = load_decoder_state(card_or_path)
    record = card["decoder"]
    name = record["architecture"]["name"]
    network = DENSE_DECODERS.get(name, (None, None))[1]
    if network is None or not isinstance(into, network) or record.get("network") != network.__name__:
        raise EncoderCardError(
            f"whole-network transfer of a {name!r} decoder (the decoder of {record.get('network')}) into a "
            f"{type(into).__name__} is not supported: only MONAI BasicUNet has a dense decoder so far; transfer the "
            "encoder alone (transfer: encoder) for other networks", [card_or_path])
    own = into.state_dict()
    usable: dict[str, torch.Tensor] = {}
    reinitialised: dict[str, str] = {}
    unexpected, mismatched = [], []
    for key, tensor in state.items():
        if key not in own:
            unexpected.append(key)
        elif key.startswith(DECODER_HEAD + "."):
            shape = (f"shape {list(tensor.shape)} -> {list(own[key].shape)}" if own[key].shape != tensor.shape
                     else "same shape, another meaning")
            reinitialised[key] = (f"the head: {own[key].shape[0]} segmentation output(s) here, "
                                  f"{tensor.shape[0]} restored image channel(s) in pretraining ({shape})")
        elif own[key].shape != tensor.shape:
            mismatched.append(f"{key}: {list(tensor.shape)} -> {list(own[key].shape)}")
        else:
            usable[key] = tensor
    decoder_prefixes = tuple(f"{s}." for s in (*DECODER_STAGES, DECODER_HEAD))
    missing = [k for k in own if k.startswith(decoder_prefixes) and k not in usable and k not in reinitialised]
    problems = _structure(record, into)
    if unexpected or mismatched or missing or problems:
        parts = [f"the pretrained {name!r} decoder does not fit this {type(into).__name__}", *problems]
        if missing:
            parts.append(f"missing (network decoder keys the decoder file lacks) {_show(missing)}")
        if unexpected:
            parts.append(f"unexpected (decoder keys with no place in the network) {_show(unexpected)}")
        if mismatched:
            parts.append(f"shape-mismatched (key: saved -> network) {_show(mismatched)}")
        raise EncoderCardError("; ".join(parts), [card_or_path])

    encoder = load_encoder(card_or_path, into=into, adapt_channels=adapt_channels)  # strict: raises on any misfit
    left = [k for k in encoder.expected_missing if k not in usable and k not in reinitialised]
    if left:  # by construction empty (BasicUNet's expected_missing are its decoder keys); kept as a guard
        raise EncoderCardError(f"network keys neither the encoder nor the decoder provides: {_show(left)}",
                               [card_or_path])
    into.load_state_dict(usable, strict=False)
    base = {f.name: getattr(encoder, f.name) for f in fields(LoadReport)}
    base["expected_missing"] = [k for k in own if k in reinitialised]
    order = {k: i for i, k in enumerate(own)}
    return WholeLoadReport(**base, from_decoder=sorted(usable, key=order.__getitem__),
                           reinitialised={k: reinitialised[k] for k in base["expected_missing"]})
