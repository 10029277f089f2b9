"""N-D U-Net halves: the contracting (encoder) and expanding (decoder) halves of MONAI's ``BasicUNet``.

``BasicUNetEncoder`` holds ``conv_0`` and ``down_1`` ... ``down_4`` built by a MONAI ``BasicUNet`` with the same
arguments, under the same attribute names, so its ``state_dict()`` keys are exactly the encoder keys of that
``BasicUNet``: pretrained weights load into a MONAI U-Net for segmentation, whose decoder (``upcat_*``,
``final_conv``) stays freshly initialised. (MONAI's other ``UNet`` is built recursively, encoder and decoder
interleaved in nested ``Sequential`` modules, so it has no encoder half with stable keys.)

``BasicUNetDecoder`` is the other half: ``upcat_4`` ... ``upcat_1`` and ``final_conv`` of a ``BasicUNet`` built with
the encoder's arguments and ``upsample``, under the same names, so its ``state_dict()`` keys are exactly that
``BasicUNet``'s decoder keys. A restoration method pretrained with it (``decoder="basicunet"``,
:class:`medssl.models.restoration.RestorationModel`) exports it beside the encoder, and whole-network transfer
(:mod:`medssl.models.dense_transfer`) loads both into the segmentation ``BasicUNet``; only ``final_conv`` (image
channels there, classes here) starts fresh.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import BasicUNet
from torch import nn
from torch.utils.checkpoint import checkpoint

from medssl.models.cnn import norm_to_json

__all__ = ["UPSAMPLE_MODES", "BasicUNetDecoder", "BasicUNetEncoder"]

#: BasicUNet's ``upsample`` options (they change the decoder's modules and keys)
UPSAMPLE_MODES = ("deconv", "pixelshuffle", "nontrainable")
#: the decoder half's attribute names in BasicUNet, deep to shallow, then the 1x1 output convolution
DECODER_STAGES = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")
DECODER_HEAD = "final_conv"


def _basicunet(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int], act: Any, norm: Any,
               bias: bool, dropout: float, upsample: str) -> tuple[BasicUNet, list[int], Any, Any]:
    """The MONAI BasicUNet whose halves the encoder and decoder take, with the checked features and the JSON forms
    of ``act`` / ``norm`` (what the halves record in their ``config``)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    feats = [int(f) for f in features]
    if len(feats) != 6:
        raise ValueError(f"features must have 6 entries (BasicUNet), got {feats}")
    act_json, norm_json = norm_to_json(act), norm_to_json(norm)
    full = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=feats,
                     act=act_json if isinstance(act_json, str) else tuple(act_json),
                     norm=norm_json if isinstance(norm_json, str) else tuple(norm_json), bias=bias, dropout=dropout,
                     upsample=upsample)
    return full, feats, act_json, norm_json


class BasicUNetEncoder(nn.Module):
    """Encoder half of MONAI ``BasicUNet`` (medssl encoder protocol: ``encoder(x) -> (B, feature_dim)``).

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        features: BasicUNet's six feature sizes (the first five are the encoder's stages; the sixth belongs to
            the decoder but is kept so the same list builds the matching segmentation network).
        act, norm: MONAI activation / norm specs (BasicUNet's defaults: LeakyReLU 0.1, instance norm with affine).
        bias, dropout: as in BasicUNet.
        gradient_checkpointing: recompute each stage in the backward pass (training only).
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 3,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        act: str | Sequence[Any] = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | Sequence[Any] = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        full, feats, act_json, norm_json = _basicunet(spatial_dims, in_channels, 1, features, act, norm, bias,
                                                      dropout, "deconv")
        # same attribute names as BasicUNet -> same state_dict keys; the decoder half is dropped
        self.conv_0, self.down_1, self.down_2 = full.conv_0, full.down_1, full.down_2
        self.down_3, self.down_4 = full.down_3, full.down_4
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = feats[4]
        self.stage_channels = feats[:5]
        self.stride = 16
        self.gradient_checkpointing = gradient_checkpointing
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "spatial_dims": spatial_dims, "features": feats, "act": act_json,
            "norm": norm_json, "bias": bias, "dropout": dropout, "gradient_checkpointing": gradient_checkpointing,
        }

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``x0`` ... ``x4`` (BasicUNet's skip connections), full resolution to 1/16."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{self.spatial_dims} spatial axes>), got {tuple(x.shape)}"
            )
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        feats: list[torch.Tensor] = []
        for stage in (self.conv_0, self.down_1, self.down_2, self.down_3, self.down_4):
            x = checkpoint(stage, x, use_reentrant=False) if use_ckpt else stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector ``(B, feature_dim)``: global average of the deepest stage."""
        return self.forward_features(x)[-1].flatten(2).mean(dim=2)


class BasicUNetDecoder(nn.Module):
    """Decoder half of MONAI ``BasicUNet``: ``decoder([x0, ..., x4]) -> (B, out_channels, *x0 spatial)``.

    Args:
        out_channels: output channels of ``final_conv`` (the image channels when restoring images).
        spatial_dims, features, act, norm, bias, dropout: the encoder's (:class:`BasicUNetEncoder`); the sixth
            feature size is the decoder's last width.
        upsample: BasicUNet's ``"deconv"`` (default), ``"pixelshuffle"`` or ``"nontrainable"``; the segmentation
            network must use the same (``build_segmenter(..., options={"upsample": ...})``).

    The output is BasicUNet's raw ``final_conv`` output (no activation). Odd sizes work as in BasicUNet (the
    upsampled map is padded by one voxel where pooling floored), so the output has the shallowest map's size.
    """

    def __init__(
        self,
        out_channels: int = 1,
        spatial_dims: int = 3,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        act: str | Sequence[Any] = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | Sequence[Any] = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        full, feats, act_json, norm_json = _basicunet(spatial_dims, 1, int(out_channels), features, act, norm, bias,
                                                      dropout, upsample)
        # same attribute names as BasicUNet -> same state_dict keys; the encoder half is dropped
        for name in (*DECODER_STAGES, DECODER_HEAD):
            setattr(self, name, getattr(full, name))
        self.spatial_dims, self.out_channels, self.upsample = spatial_dims, int(out_channels), upsample
        self.stage_channels = feats[:5]
        self.config: dict[str, Any] = {
            "out_channels": int(out_channels), "spatial_dims": spatial_dims, "features": feats, "act": act_json,
            "norm": norm_json, "bias": bias, "dropout": dropout, "upsample": upsample,
        }

    @classmethod
    def for_encoder(cls, encoder: BasicUNetEncoder, out_channels: int | None = None,
                    upsample: str = "deconv") -> BasicUNetDecoder:
        """The decoder matching ``encoder``'s arguments; ``out_channels`` defaults to its input channels."""
        kw = encoder.config
        return cls(out_channels=encoder.in_channels if out_channels is None else out_channels,
                   spatial_dims=kw["spatial_dims"], features=kw["features"], act=kw["act"], norm=kw["norm"],
                   bias=kw["bias"], dropout=kw["dropout"], upsample=upsample)

    def forward(self, features: Sequence[torch.Tensor], out_size: Sequence[int] | None = None) -> torch.Tensor:
        """``features``: the encoder's maps ``x0`` ... ``x4`` (:meth:`BasicUNetEncoder.forward_features`);
        ``out_size`` (optional) is checked against the output's spatial size."""
        if len(features) != 5:
            raise ValueError(f"expected BasicUNet's 5 feature maps x0..x4, got {len(features)}")
        x0, x1, x2, x3, x4 = features
        u = self.upcat_4(x4, x3)
        u = self.upcat_3(u, x2)
        u = self.upcat_2(u, x1)
        out = self.final_conv(self.upcat_1(u, x0))
        if out_size is not None and tuple(out.shape[2:]) != tuple(out_size):
            raise ValueError(f"decoded size {tuple(out.shape[2:])} differs from the requested {tuple(out_size)}")
        return out
