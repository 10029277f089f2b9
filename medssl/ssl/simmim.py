"""SimMIM-style masked image modelling for CNN encoders (Xie et al. 2022; the CNN idea of nnssl's Spark3D/ResEnc).

Random patches of the input are replaced by a learned mask value, the CNN encoder (MONAI SegResNet's encoder, so
the weights later initialise a SegResNet segmenter key-for-key) sees the masked image, and a one-layer
pixel-shuffle decoder regresses the hidden voxels; the loss is the L1 error on masked voxels only.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from medssl.losses.reconstruction import masked_voxel_l1
from medssl.models.cnn import SegResNetEncoder
from medssl.models.simmim import SimMIM as SimMIMModel
from medssl.ssl.base import SSLMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.masking import random_voxel_mask


class SimMIM(SSLMethod):
    """Masked image modelling for a CNN encoder.

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        init_filters: SegResNet width (channels of the first stage).
        blocks_down: residual blocks per encoder stage (SegResNet ``blocks_down``).
        mask_patch_size: size of the masked patches (int or per axis); must divide the input size, and should be
            a multiple of the encoder stride.
        mask_ratio: fraction of patches hidden (SimMIM uses 0.6).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "simmim"

    def __init__(self, in_channels: int = 1, spatial_dims: int = 3, init_filters: int = 16,
                 blocks_down: list[int] = [1, 2, 2, 4], mask_patch_size: Union[int, list[int]] = 16,  # noqa: B006
                 mask_ratio: float = 0.6, gradient_checkpointing: bool = False,
                 optim: Optional[OptimConfig] = None, nonfinite: str = "stop", max_consecutive_skips: int = 10,
                 seed: int = 0):
        super().__init__(optim if optim is not None else OptimConfig(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)),
                         nonfinite, max_consecutive_skips, seed)
        encoder = SegResNetEncoder(in_channels=in_channels, spatial_dims=spatial_dims, init_filters=init_filters,
                                   blocks_down=tuple(blocks_down), gradient_checkpointing=gradient_checkpointing)
        self.model = SimMIMModel(encoder)
        self.mask_patch_size, self.mask_ratio = mask_patch_size, mask_ratio

    @property
    def encoder(self) -> SegResNetEncoder:
        return self.model.encoder

    def _mask(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_voxel_mask(x.shape[0], tuple(x.shape[2:]), self.mask_patch_size, self.mask_ratio,
                                 generator=generator, device=x.device)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.images(batch)
        mask = self._mask(x, generator)
        recon = self.model(x, mask)
        return {"loss": masked_voxel_l1(recon.float(), x.float(), mask)}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Input, masked input, and the reconstruction (hidden voxels predicted, visible ones pasted back)."""
        x = self.images(batch)
        mask = self._mask(x, generator).to(x.dtype)
        recon = self.model(x, mask.bool()).float()
        return {"input": x, "masked": x * (1 - mask), "reconstruction": recon * mask + x * (1 - mask)}
