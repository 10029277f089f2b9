"""Image restoration from a CNN encoder's multi-scale features: a U-Net-style N-D decoder and the encoder + decoder
model shared by Models Genesis (:mod:`medssl.ssl.genesis`) and the (denoising) autoencoder
(:mod:`medssl.ssl.autoencoder`).

:class:`RestorationDecoder` starts at the deepest map of ``encoder.forward_features(x)`` and, stage by stage,
upsamples to the next shallower map's size (linear interpolation, so odd sizes such as 28 -> 14 -> 7 -> 4 work),
concatenates it (the skip connection, optional) and applies two 3x3 convolutions with group norm (groups of at
least 4 channels) and LeakyReLU. When the shallowest map is coarser than the image (ResNet stems with stride or
max-pool) a last block runs at the image size. A 1x1 convolution gives the output channels, optionally through a
sigmoid (Models Genesis's output layer, for targets in [0, 1]).

Any registry encoder with ``forward_features`` and ``stage_channels`` works (``resnet``, ``segresnet``,
``basicunet``); with this decoder only the encoder is exported after pretraining, the decoder is discarded.

``decoder="basicunet"`` (``basicunet`` encoders only) replaces it by :class:`medssl.models.unet.BasicUNetDecoder`,
the decoder of the MONAI ``BasicUNet`` that the encoder segments with: then the pretrained decoder is exported too
and can initialise the segmentation network's decoder (whole-network transfer, the Models Genesis recipe;
:mod:`medssl.models.dense_transfer`). It always has skip connections and BasicUNet's own widths, so ``skips=False``
and ``channels`` are refused with it. Other encoders with a dense decoder raise :class:`DenseDecoderError`
(SegResNet's decoder could be added the same way).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.models.unet import UPSAMPLE_MODES, BasicUNetDecoder, BasicUNetEncoder

__all__ = ["DECODERS", "DenseDecoderError", "RestorationDecoder", "RestorationModel"]

OUT_ACTIVATIONS = (None, "sigmoid")
#: ``"restoration"``: :class:`RestorationDecoder` (any CNN encoder, discarded after pretraining);
#: ``"basicunet"``: :class:`~medssl.models.unet.BasicUNetDecoder` (basicunet encoders; exported for whole transfer)
DECODERS = ("restoration", "basicunet")
#: dense decoder name -> the registry encoder whose segmentation network it is the decoder of
DENSE_DECODER_ENCODERS = {"basicunet": BasicUNetEncoder}


class DenseDecoderError(MedsslError):
    """A dense (segmentation-network) decoder asked for an encoder or settings it does not fit."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_CONFIG, message, files)


def _groups(channels: int) -> int:
    """Up to 8 groups of at least 4 channels: a group then never normalises a single value, not even on the 1-voxel
    maps deep stages have on small images."""
    return max(g for g in range(1, 9) if channels % g == 0 and (g == 1 or channels // g >= 4))


def _block(spatial_dims: int, in_ch: int, out_ch: int) -> nn.Sequential:
    conv = Conv[Conv.CONV, spatial_dims]
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers += [conv(c_in, out_ch, kernel_size=3, padding=1, bias=False), nn.GroupNorm(_groups(out_ch), out_ch),
                   nn.LeakyReLU(0.1, inplace=True)]
    return nn.Sequential(*layers)


class RestorationDecoder(nn.Module):
    """Decode a list of feature maps (shallow to deep) into an image.

    Args:
        spatial_dims: 2 or 3.
        stage_channels: channels of the encoder's feature maps, shallow to deep (``encoder.stage_channels``).
        out_channels: channels of the restored image.
        channels: decoder channels after each stage, shallow to deep (default: ``stage_channels``; the deepest
            entry is unused, the deepest map enters as it is).
        skips: concatenate the encoder maps on the way up (U-Net). Without them the image must pass through the
            deepest map alone (a bottleneck autoencoder).
        out_activation: ``None`` (linear output) or ``"sigmoid"``.
    """

    def __init__(self, spatial_dims: int, stage_channels: Sequence[int], out_channels: int = 1,
                 channels: Optional[Sequence[int]] = None, skips: bool = True, out_activation: Optional[str] = None):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        stages = [int(c) for c in stage_channels]
        chans = stages if channels is None else [int(c) for c in channels]
        if not stages or len(chans) != len(stages) or min(chans) < 1:
            raise ValueError(f"channels must have one positive entry per encoder stage ({len(stages)}), got {chans}")
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"out_activation must be one of {OUT_ACTIVATIONS}, got {out_activation!r}")
        self.spatial_dims, self.skips, self.out_activation = spatial_dims, skips, out_activation
        self.stage_channels = stages
        ups, width = [], stages[-1]
        for i in range(len(stages) - 2, -1, -1):  # deep -> shallow
            ups.append(_block(spatial_dims, width + (stages[i] if skips else 0), chans[i]))
            width = chans[i]
        self.up_blocks = nn.ModuleList(ups)
        self.full_res = _block(spatial_dims, width, width)  # used when the shallowest map is coarser than the image
        self.head = Conv[Conv.CONV, spatial_dims](width, out_channels, kernel_size=1)

    def _resize(self, h: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(h.shape[2:]) == tuple(size):
            return h
        return F.interpolate(h, size=tuple(size), mode="bilinear" if self.spatial_dims == 2 else "trilinear",
                             align_corners=False)

    def forward(self, features: Sequence[torch.Tensor], out_size: Sequence[int]) -> torch.Tensor:
        """``features``: encoder maps, shallow to deep; ``out_size``: spatial size of the output image."""
        if len(features) != len(self.stage_channels):
            raise ValueError(f"expected {len(self.stage_channels)} feature maps, got {len(features)}")
        h = features[-1]
        for block, skip in zip(self.up_blocks, reversed(features[:-1])):
            h = self._resize(h, skip.shape[2:])
            h = block(torch.cat([h, skip], dim=1) if self.skips else h)
        if tuple(h.shape[2:]) != tuple(out_size):
            h = self.full_res(self._resize(h, out_size))
        out = self.head(h)
        return torch.sigmoid(out) if self.out_activation == "sigmoid" else out


class RestorationModel(nn.Module):
    """Encoder + decoder: ``model(x) -> restored image`` of ``x``'s shape.

    Args:
        encoder: a registry CNN encoder (``forward_features``, ``stage_channels``, ``in_channels``,
            ``spatial_dims``).
        channels, skips, out_activation: see :class:`RestorationDecoder` (``out_activation`` applies to both
            decoders).
        decoder: ``"restoration"`` (:class:`RestorationDecoder`) or ``"basicunet"`` (module docstring).
        upsample: the BasicUNet decoder's ``upsample`` (``"deconv"``, ``"pixelshuffle"``, ``"nontrainable"``).
    """

    def __init__(self, encoder: nn.Module, channels: Optional[Sequence[int]] = None, skips: bool = True,
                 out_activation: Optional[str] = None, decoder: str = "restoration", upsample: str = "deconv"):
        super().__init__()
        if not hasattr(encoder, "forward_features") or not hasattr(encoder, "stage_channels"):
            raise ValueError(f"{type(encoder).__name__} has no multi-scale forward_features: restoration needs a CNN "
                             "encoder (resnet, segresnet, basicunet); for a ViT see MONAI's ViTAutoEnc")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"out_activation must be one of {OUT_ACTIVATIONS}, got {out_activation!r}")
        self.encoder = encoder
        self.decoder_name, self.out_activation = decoder, out_activation
        if decoder == "restoration":
            self.decoder: nn.Module = RestorationDecoder(encoder.spatial_dims, encoder.stage_channels,
                                                         encoder.in_channels, channels, skips, out_activation)
            return
        if type(encoder) is not DENSE_DECODER_ENCODERS[decoder]:
            raise DenseDecoderError(
                f"decoder={decoder!r} is the decoder of MONAI's BasicUNet and needs a 'basicunet' encoder, got "
                f"{type(encoder).__name__}; only BasicUNet has a dense decoder so far: use decoder='restoration' "
                "(encoder-only transfer) for other encoders")
        if not skips or channels is not None:
            raise DenseDecoderError(f"decoder={decoder!r} has BasicUNet's own skip connections and widths: leave "
                                    f"skips true and decoder_channels unset (got skips={skips}, channels={channels})")
        if upsample not in UPSAMPLE_MODES:
            raise DenseDecoderError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.decoder = BasicUNetDecoder.for_encoder(encoder, upsample=upsample)

    @property
    def dense_decoder(self) -> Optional[nn.Module]:
        """The decoder when it is a segmentation network's decoder (exported for whole transfer), else None."""
        return self.decoder if self.decoder_name != "restoration" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The restored image ``(B, C, *spatial)`` of the (corrupted) input ``x``."""
        out = self.decoder(self.encoder.forward_features(x), x.shape[2:])
        if self.decoder_name == "restoration":  # RestorationDecoder applies its own activation
            return out
        return torch.sigmoid(out) if self.out_activation == "sigmoid" else out
