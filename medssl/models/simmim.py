"""SimMIM-style masked image modelling for CNN encoders (Xie et al. 2022; cf. SparK for CNNs).

Masked voxels are replaced by a learnable per-channel ``mask_token`` *before* the convolutional encoder, the
deepest feature map is mapped back to image resolution by a 1x1 convolution + pixel shuffle (MONAI
``SubpixelUpsample``), and the loss (elsewhere) is an L1 on the masked voxels. The pretrained
:class:`SegResNetEncoder` then initialises a SegResNet (UNet-like) segmenter key-for-key.
"""
from __future__ import annotations

import torch
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Conv
from torch import nn

from medssl.models.cnn import SegResNetEncoder

__all__ = ["SimMIM"]


class SimMIM(nn.Module):
    """Mask-token in, deepest features, linear pixel-shuffle decoder out.

    Args:
        encoder: the CNN encoder being pretrained; must expose ``forward_features``, ``feature_dim``, ``stride``,
            ``in_channels`` and ``spatial_dims`` (e.g. :class:`SegResNetEncoder`).
    """

    def __init__(self, encoder: SegResNetEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.spatial_dims = encoder.spatial_dims
        self.stride = encoder.stride
        channels = encoder.in_channels
        self.mask_token = nn.Parameter(torch.zeros(1, channels, *([1] * encoder.spatial_dims)))
        # SimMIM's head: a 1x1 conv to C * stride**dims channels, then pixel shuffle (no smoothing pool).
        head = Conv[Conv.CONV, encoder.spatial_dims](
            encoder.feature_dim, channels * encoder.stride**encoder.spatial_dims, kernel_size=1
        )
        self.decoder = SubpixelUpsample(
            encoder.spatial_dims, encoder.feature_dim, channels, scale_factor=encoder.stride,
            conv_block=head, apply_pad_pool=False,
        )

    def forward(self, x: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, C, *S)`` of ``x`` from its unmasked voxels; ``voxel_mask`` (B, 1, *S), True=masked."""
        spatial = tuple(x.shape[2:])
        if any(s % self.stride for s in spatial):
            raise ValueError(f"image size {list(spatial)} must be divisible by the encoder stride {self.stride}")
        if voxel_mask.shape != (x.shape[0], 1, *spatial):
            raise ValueError(
                f"voxel_mask has shape {tuple(voxel_mask.shape)}, expected {(x.shape[0], 1, *spatial)}"
            )
        x_masked = torch.where(voxel_mask.bool(), self.mask_token.to(x.dtype), x)
        feats = self.encoder.forward_features(x_masked)[-1]
        return self.decoder(feats)
