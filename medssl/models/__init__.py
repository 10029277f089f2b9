"""Models: encoders, heads, patch (un)embedding helpers and encoder export/load.

Encoders follow one protocol: ``encoder(x) -> (B, encoder.feature_dim)`` pooled features, plus
``encoder.spatial_dims``, ``encoder.in_channels``, ``encoder.forward_features(x)`` and a JSON ``encoder.config``
from which :func:`build_encoder` rebuilds the architecture. Their ``state_dict`` keys match MONAI's networks
(``ViT`` / ``UNETR.vit``, ``SegResNet``, ``ResNet``, ``BasicUNet``) so pretrained weights load into MONAI segmenters.

* :class:`ViTEncoder` (``vit.py``), :class:`SegResNetEncoder` (``cnn.py``), :class:`ResNetEncoder`
  (``resnet.py``) and :class:`BasicUNetEncoder` (``unet.py``): encoders; ``pos_embed.py`` resamples a ViT position table to another patch grid.
* :class:`SwinEncoder` (``swin.py``): the ``swinViT`` of MONAI's ``SwinUNETR`` as a registry encoder.
* :class:`EncoderClassifier` (``classifier.py``): any registry encoder + a linear head, built from an encoder card.
* ``hub.py`` exports an encoder with its card and loads it back; ``transfer.py`` maps its keys into MONAI
  segmentation / classification networks (``UNETR``, ``SwinUNETR``, ``SegResNet``, ``BasicUNet``, ``ResNet``,
  ``ViT``) for :func:`medssl.models.hub.load_encoder`; ``dense_transfer.py`` exports a pretrained segmentation-network
  decoder (:class:`~medssl.models.unet.BasicUNetDecoder`) beside the encoder and loads both (whole-network transfer).
* ``heads.py``: projection / prediction / DINO heads of the joint-embedding methods.
* :class:`MaskedAutoencoder` (``mae.py``) and :class:`SimMIM` (``simmim.py``): masked-modelling wrappers.
* ``registry.py``: :data:`ENCODERS`, :func:`build_encoder`, :func:`encoder_spec`.
"""
from __future__ import annotations

from medssl.models.classifier import EncoderClassifier
from medssl.models.cnn import SegResNetEncoder
from medssl.models.mae import MaskedAutoencoder, sincos_position_embedding
from medssl.models.resnet import ResNetEncoder
from medssl.models.unet import BasicUNetEncoder
from medssl.models.registry import ENCODERS, build_encoder, encoder_spec
from medssl.models.simmim import SimMIM
from medssl.models.swin import SwinEncoder
from medssl.models.vit import ViTEncoder

__all__ = [
    "BasicUNetEncoder",
    "ENCODERS",
    "EncoderClassifier",
    "MaskedAutoencoder",
    "ResNetEncoder",
    "SegResNetEncoder",
    "SimMIM",
    "SwinEncoder",
    "ViTEncoder",
    "build_encoder",
    "encoder_spec",
    "sincos_position_embedding",
]
