"""Encoder registry: build an encoder by name, and describe a built one so it can be rebuilt.

An encoder's *spec* is ``{"name": <registry name>, "kwargs": encoder.config}`` and is JSON-serialisable; it is
what an exported checkpoint stores next to the weights, so that::

    encoder = build_encoder(**encoder_spec(trained))   # same architecture, same state_dict keys and shapes
    encoder.load_state_dict(trained.state_dict())
"""
from __future__ import annotations

from typing import Any

from torch import nn

from medssl.models.cnn import SegResNetEncoder
from medssl.models.resnet import ResNetEncoder
from medssl.models.swin import SwinEncoder
from medssl.models.unet import BasicUNetEncoder
from medssl.models.vit import ViTEncoder

__all__ = ["ENCODERS", "build_encoder", "encoder_spec"]

ENCODERS: dict[str, type[nn.Module]] = {
    "vit": ViTEncoder,
    "segresnet": SegResNetEncoder,
    "resnet": ResNetEncoder,
    "basicunet": BasicUNetEncoder,
    "swin": SwinEncoder,
}


def build_encoder(name: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> nn.Module:
    """Instantiate the encoder registered as ``name``.

    Constructor arguments come from ``kwargs`` (a spec's dict) and/or keyword arguments (which win), so both
    ``build_encoder("vit", in_channels=1, img_size=96, patch_size=16)`` and ``build_encoder(**spec)`` work.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {sorted(ENCODERS)}")
    return ENCODERS[name](**{**(kwargs or {}), **extra})


def encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """``{"name", "kwargs"}`` such that ``build_encoder(**spec)`` rebuilds ``encoder``'s architecture."""
    for name, cls in ENCODERS.items():
        if type(encoder) is cls:
            return {"name": name, "kwargs": dict(encoder.config)}
    raise ValueError(
        f"{type(encoder).__name__} is not a registered encoder; known encoders: {sorted(ENCODERS)}"
    )
