"""Exported encoders: ``encoder.safetensors`` + ``encoder.json`` (the card), and loading them back without pickle.

The card says everything a user needs to reuse the weights correctly: the method that trained them, the
architecture and its constructor arguments (rebuilt through :mod:`medssl.models.registry`), ``spatial_dims``,
input channels, patch/image size, the preprocessing the encoder saw (spacing, orientation, intensity), a summary of
the training data without patient data, the medssl version, the SHA-256 of the resolved training config and of the
weights file. :func:`load_encoder` verifies the weights against the card and reports every key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medssl.data.atomic import atomic_write, atomic_write_text
from medssl.data.hashing import file_sha256
from medssl.errors import MedsslError, Reason
from medssl.models.registry import build_encoder, encoder_spec

CARD_FORMAT = "medssl-encoder"
CARD_VERSION = 1
WEIGHTS_NAME, CARD_NAME = "encoder.safetensors", "encoder.json"


class EncoderCardError(MedsslError):
    """An encoder card or its weights are missing, altered, or do not fit the requested network."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_ENCODER_CARD, message, files)


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

    def summary(self) -> str:
        return (f"{len(self.matched)} matched, {len(self.missing)} missing, {len(self.expected_missing)} left to "
                f"fine-tuning (decoder/head), {len(self.unexpected)} unexpected, {len(self.mismatched)} "
                f"shape-mismatched, {len(self.reshaped)} reshaped")


def export_encoder(encoder: nn.Module, out_dir: str | Path, *, method: str, preprocessing: dict[str, Any],
                   training: Optional[dict[str, Any]] = None, config_sha256: Optional[str] = None,
                   extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``out_dir/encoder.safetensors`` and ``out_dir/encoder.json``; return the card path.

    ``encoder`` must be a registered encoder (:func:`medssl.models.registry.encoder_spec`).
    """
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


def load_encoder(card_or_path: str | Path | dict[str, Any], into: Optional[nn.Module] = None,
                 allow_partial: bool = False) -> LoadReport:
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
    """
    from medssl.models.transfer import load_into  # transfer builds on this module (LoadReport, EncoderCardError)

    state, card = load_encoder_state(card_or_path)
    module = into if into is not None else build_encoder(**card["architecture"])
    return load_into(state, card, module, allow_partial=allow_partial)
