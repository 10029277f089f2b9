"""Exported encoders: ``encoder.safetensors`` + ``encoder.json`` (the card), and loading them back without pickle.

The card says everything a user needs to reuse the weights correctly: the method that trained them, the
architecture and its constructor arguments (rebuilt through :mod:`medssl.models.registry`), ``spatial_dims``,
input channels, patch/image size, the preprocessing the encoder saw (spacing, orientation, intensity), a summary of
the training data without patient data, the medssl version, the SHA-256 of the resolved training config and of the
weights file. :func:`load_encoder` verifies the weights against the card and reports every key.

**Channels.** A card records its input channels: ``in_channels`` and, when the data source named them,
``channels`` (e.g. ``["FLAIR", "T1c"]``, also read from ``preprocessing["channels"]``). :func:`check_channels`
compares them with what a fine-tuning dataset provides and raises :class:`ChannelMismatchError` naming both lists
(names compared case- and space-insensitively, and only where both sides have names). When only the *count*
differs, ``adapt_channels`` lets :func:`load_encoder` adapt the first convolution explicitly instead:
``"average"`` gives every new input channel the mean of the pretrained input filters, ``"repeat"`` gives new
channel ``c`` the pretrained channel ``c mod C_old``; both scale by ``C_old / C_new`` so that co-registered inputs of
similar intensity keep the first layer's activation scale (as timm's ``adapt_input_conv``). The load report lists
the stem under ``reshaped`` and says what was done in ``notes``.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.models.registry import build_encoder, encoder_spec
from medssl.storage.atomic import atomic_write, atomic_write_text
from medssl.storage.hashing import file_sha256

CARD_FORMAT = "medssl-encoder"
CARD_VERSION = 1
WEIGHTS_NAME, CARD_NAME = "encoder.safetensors", "encoder.json"
ADAPT_CHANNELS = ("average", "repeat")


class EncoderCardError(MedsslError):
    """An encoder card or its weights are missing, altered, or do not fit the requested network."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_ENCODER_CARD, message, files)


class ChannelMismatchError(EncoderCardError):
    """The fine-tuning data's input channels differ from the encoder card's (count, or names in order)."""

    def __init__(self, message: str, card_channels: Any, data_channels: Any, files: Any = ()):
        super().__init__(message, files)
        self.card_channels, self.data_channels = card_channels, data_channels


@dataclass
class LoadReport:
    """Outcome of :func:`load_encoder`: the module that received the weights and every key's fate.

    Keys are the network's (``prefix`` + the encoder's key), except ``unexpected``, which are the encoder file's.
    """

    module: nn.Module
    card: dict[str, Any]
    family: str = ""  # the target's family in medssl.models.transfer (e.g. "UNETR")
    prefix: str = ""  # where the encoder's keys live in the network (e.g. "vit.")
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # should have come from the encoder, but did not
    expected_missing: list[str] = field(default_factory=list)  # no encoder provides them: decoder, head
    unexpected: list[str] = field(default_factory=list)  # in the encoder file, no place in the network
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, saved shape, network shape)
    reshaped: list[str] = field(default_factory=list)  # loaded after an explicit, reported reshape
    notes: list[str] = field(default_factory=list)  # what was adapted (reshapes) or tolerated (allow_partial)

    def key_sources(self) -> dict[str, int]:
        """Network keys by where their values came from: the encoder file, a decoder file (whole-network transfer,
        :mod:`medssl.models.dense_transfer`), or left at the network's initialisation."""
        return {"encoder": len(self.matched), "decoder": 0, "reinitialised": len(self.expected_missing)}

    def summary(self) -> str:
        return (f"{len(self.matched)} matched, {len(self.missing)} missing, {len(self.expected_missing)} left to "
                f"fine-tuning (decoder/head), {len(self.unexpected)} unexpected, {len(self.mismatched)} "
                f"shape-mismatched, {len(self.reshaped)} reshaped")


def export_encoder(encoder: nn.Module, out_dir: str | Path, *, method: str, preprocessing: dict[str, Any],
                   training: Optional[dict[str, Any]] = None, config_sha256: Optional[str] = None,
                   extra: Optional[dict[str, Any]] = None, channels: Optional[Sequence[str]] = None) -> Path:
    """Write ``out_dir/encoder.safetensors`` and ``out_dir/encoder.json``; return the card path.

    ``encoder`` must be a registered encoder (:func:`medssl.models.registry.encoder_spec`). ``channels``: the input
    channel names in order (default ``preprocessing["channels"]``; None when the data source did not name them).
    """
    channels = channels if channels is not None else (preprocessing or {}).get("channels")
    if channels is not None and len(channels) != int(encoder.in_channels):
        raise EncoderCardError(f"{len(channels)} channel names {list(channels)} for an encoder with "
                               f"{encoder.in_channels} input channel(s)")
    from medssl import __version__

    out_dir = Path(out_dir)
    spec = encoder_spec(encoder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    weights = atomic_write(out_dir / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    card = {
        "format": CARD_FORMAT, "format_version": CARD_VERSION,
        "method": method,
        "architecture": spec,
        "spatial_dims": int(encoder.spatial_dims),
        "in_channels": int(encoder.in_channels),
        "channels": None if channels is None else [str(c) for c in channels],
        "feature_dim": int(encoder.feature_dim),
        "preprocessing": preprocessing,
        "training": training or {},
        "medssl_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "config_sha256": config_sha256,
        "weights": {"file": WEIGHTS_NAME, "sha256": file_sha256(weights), "num_tensors": len(tensors),
                    "num_parameters": int(sum(t.numel() for t in tensors.values()))},
        **(extra or {}),
    }
    return atomic_write_text(out_dir / CARD_NAME, json.dumps(card, indent=2, sort_keys=False) + "\n")


def read_card(card_or_path: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Optional[Path]]:
    """The card (dict) and its folder; accepts a card dict, ``encoder.json``, or the folder holding it."""
    if isinstance(card_or_path, dict):
        return card_or_path, None
    path = Path(card_or_path)
    if path.is_dir():
        path = path / CARD_NAME
    if not path.is_file():
        raise EncoderCardError("encoder card not found", [path])
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderCardError(f"encoder card is not valid JSON ({exc})", [path]) from exc
    if card.get("format") != CARD_FORMAT or int(card.get("format_version", 0)) > CARD_VERSION:
        raise EncoderCardError(f"not a medssl encoder card of version <= {CARD_VERSION} "
                               f"(format={card.get('format')!r}, version={card.get('format_version')!r})", [path])
    return card, path.parent


def load_encoder_state(card_or_path: str | Path | dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder's tensors (safetensors, no pickle) after checking the file's SHA-256 against the card."""
    card, folder = read_card(card_or_path)
    if folder is None:
        raise EncoderCardError("a card dict has no weights file beside it; pass the path of encoder.json")
    weights = folder / card["weights"]["file"]
    if not weights.is_file():
        raise EncoderCardError("weights file named by the card is missing", [weights])
    if file_sha256(weights) != card["weights"]["sha256"]:
        raise EncoderCardError("weights file does not match the SHA-256 recorded in the card (altered or replaced)",
                               [weights])
    return load_file(str(weights)), card


def card_channels(card: dict[str, Any]) -> Optional[list[str]]:
    """The card's input channel names (``channels``, else ``preprocessing["channels"]``), or None."""
    names = card.get("channels") or (card.get("preprocessing") or {}).get("channels")
    return None if names is None else [str(n) for n in names]


def _norm(name: str) -> str:
    return " ".join(str(name).lower().split())


def check_channels(card: dict[str, Any], count: int, names: Optional[Sequence[str]] = None,
                   adapt_channels: Optional[str] = None, card_path: Any = None) -> Optional[str]:
    """Raise :class:`ChannelMismatchError` unless the data's channels (``count``, ``names``) are the card's.

    A count difference is allowed when ``adapt_channels`` is ``"average"`` or ``"repeat"`` (then that mode is
    returned, for :func:`load_encoder`); a name difference with equal counts always raises. Returns None when the
    channels agree.
    """
    if adapt_channels is not None and adapt_channels not in ADAPT_CHANNELS:
        raise ValueError(f"adapt_channels must be None or one of {ADAPT_CHANNELS}, got {adapt_channels!r}")
    theirs, expected = card_channels(card), int(card["in_channels"])
    ours = None if names is None else [str(n) for n in names]
    if ours is not None and len(ours) != int(count):
        raise ValueError(f"{len(ours)} channel names {ours} for {count} channel(s)")
    files = [card_path] if card_path else []

    def show(n: int, listed: Optional[list[str]]) -> str:
        return f"{n} channel(s) {listed if listed is not None else '(unnamed)'}"

    if int(count) != expected:
        if adapt_channels is None:
            raise ChannelMismatchError(
                f"the data provides {show(count, ours)}, the encoder was pretrained on {show(expected, theirs)}; "
                f"give the encoder's channels, or adapt its first layer explicitly (adapt_channels: "
                f"{' | '.join(ADAPT_CHANNELS)})", theirs, ours, files)
        return adapt_channels
    if theirs is not None and ours is not None and [_norm(n) for n in theirs] != [_norm(n) for n in ours]:
        raise ChannelMismatchError(f"the data's channels {ours} differ from the encoder's {theirs} (same order "
                                   "needed; rename them with channel_names if they are the same sequences)",
                                   theirs, ours, files)
    return None


def _adapt_stem(state: dict[str, torch.Tensor], card: dict[str, Any], into: nn.Module,
                mode: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], Optional[tuple[str, str]]]:
    """``state`` and ``card`` with the first convolution adapted to ``into``'s input channels (module docstring)."""
    from medssl.models.transfer import STEM_KEYS, target_family

    arch = card["architecture"]["name"]
    family = target_family(into)
    key = STEM_KEYS.get(arch)
    own = into.state_dict().get(family.prefix + (key or ""))
    if key is None or own is None or key not in state or own.ndim < 3:
        raise EncoderCardError(f"cannot adapt the input channels of a {arch!r} encoder in a {family.name}: no "
                               "convolutional first layer to adapt")
    weight = state[key]
    old, new = int(weight.shape[1]), int(own.shape[1])
    if old == new:
        return state, card, None
    if mode == "average":
        adapted = weight.mean(dim=1, keepdim=True).expand(-1, new, *weight.shape[2:]) * (old / new)
    else:
        adapted = weight[:, [c % old for c in range(new)]] * (old / new)
    state = {**state, key: adapted.contiguous()}
    card = copy.deepcopy(card)
    card["in_channels"] = new
    card["architecture"]["kwargs"]["in_channels"] = new
    names = card_channels(card)
    how = ("the mean of the pretrained input filters" if mode == "average"
           else f"pretrained channel c mod {old}")
    note = (f"{family.prefix + key}: first-layer input channels adapted from {old} {names or '(unnamed)'} to {new} "
            f"(adapt_channels={mode!r}: each new channel gets {how}, scaled by {old}/{new})")
    return state, card, (family.prefix + key, note)


def load_encoder(card_or_path: str | Path | dict[str, Any], into: Optional[nn.Module] = None,
                 allow_partial: bool = False, adapt_channels: Optional[str] = None) -> LoadReport:
    """Load an exported encoder, alone or into a segmentation / classification network.

    Without ``into``, the architecture is rebuilt from the card and every key must match exactly. With ``into``,
    the weights go where :mod:`medssl.models.transfer` maps them for that network's family (``UNETR``,
    ``SwinUNETR``, ``SegResNet``, ``BasicUNet``, MONAI ``ResNet`` and ``ViT``, :class:`EncoderClassifier`, or a
    registry encoder); a ViT position table is interpolated to the network's patch grid. Keys that the encoder
    cannot provide by design (decoder, head) are reported as ``expected_missing``.

    Raises :class:`EncoderCardError` for an unsupported network, a card of the wrong architecture or
    ``spatial_dims``, and, unless ``allow_partial``, for any encoder key that cannot be placed (unexpected or
    shape-mismatched), any other network key left missing, an input-channel or structural difference (layer
    types, attention heads, norm groups). With ``allow_partial`` what fits is loaded, the rest reported (and the
    tolerated differences listed in ``notes``); it still raises when nothing fits.

    ``adapt_channels`` (``"average"`` | ``"repeat"``, with ``into``): when the network's first convolution takes
    another number of input channels than the card's, adapt the saved one explicitly (module docstring); the
    report's ``reshaped`` and ``notes`` say so. Without it, a channel-count difference raises.
    """
    from medssl.models.transfer import load_into  # transfer builds on this module (LoadReport, EncoderCardError)

    state, card = load_encoder_state(card_or_path)
    original, adapted = card, None
    if adapt_channels is not None:
        if adapt_channels not in ADAPT_CHANNELS:
            raise ValueError(f"adapt_channels must be None or one of {ADAPT_CHANNELS}, got {adapt_channels!r}")
        if into is None:
            raise ValueError("adapt_channels needs the network to load into (into=...)")
        state, card, adapted = _adapt_stem(state, card, into, adapt_channels)
    module = into if into is not None else build_encoder(**card["architecture"])
    report = load_into(state, card, module, allow_partial=allow_partial)
    report.card = original
    if adapted is not None:
        report.reshaped.append(adapted[0])
        report.notes.append(adapted[1])
    return report
