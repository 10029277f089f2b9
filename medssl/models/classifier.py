"""A registry encoder with a linear head: the generic classification network for transfer.

``EncoderClassifier`` keeps the encoder under ``encoder`` and the head under ``head``, so an exported encoder
loads into it under the prefix ``encoder.`` (:mod:`medssl.models.transfer`) and only ``head.*`` starts random.
It works for every registered encoder, 2D or 3D, including those without a MONAI classifier of their own
(SegResNet, BasicUNet, Swin encoders)::

    model = EncoderClassifier.from_card("runs/mae/encoder", num_classes=3)      # weights loaded, head random
    logits = model(x)                                                          # (B, 3)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medssl.models.hub import load_encoder, read_card
from medssl.models.registry import build_encoder

__all__ = ["EncoderClassifier"]


class EncoderClassifier(nn.Module):
    """``head(dropout(encoder(x)))``: pooled encoder features ``(B, feature_dim)`` to ``(B, num_classes)`` logits.

    Args:
        encoder: a module following the encoder protocol (``encoder(x) -> (B, encoder.feature_dim)``); a registry
            encoder for :func:`medssl.models.hub.load_encoder` to load into it.
        num_classes: outputs of the linear head.
        dropout: dropout on the pooled features before the head.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not hasattr(encoder, "feature_dim"):
            raise ValueError(f"{type(encoder).__name__} has no feature_dim: not a medssl encoder")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.feature_dim), num_classes)
        self.spatial_dims = getattr(encoder, "spatial_dims", None)
        self.in_channels = getattr(encoder, "in_channels", None)
        self.num_classes = num_classes

    @classmethod
    def from_card(cls, card_or_path: str | Path, num_classes: int, dropout: float = 0.0,
                  **encoder_overrides: Any) -> "EncoderClassifier":
        """Rebuild the card's encoder, wrap it, and load the exported weights (every encoder key must fit).

        ``encoder_overrides`` change constructor arguments of the encoder, e.g. ``img_size`` for a ViT fine-tuned
        at another resolution (its position table is then interpolated) or ``gradient_checkpointing``.
        """
        card, _ = read_card(card_or_path)
        encoder = build_encoder(**card["architecture"], **encoder_overrides)
        model = cls(encoder, num_classes=num_classes, dropout=dropout)
        load_encoder(card_or_path, into=model)
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(x)))
