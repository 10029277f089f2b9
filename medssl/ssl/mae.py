"""Masked autoencoder pretraining (He et al. 2022), 2D and 3D, on a MONAI-compatible ViT encoder.

The model (:class:`medssl.models.mae.MaskedAutoencoder`) returns per-patch predictions; this module draws the mask
(:mod:`medssl.transforms.masking`, seeded per step), builds the patch targets and computes the loss on masked
patches only (:func:`medssl.losses.reconstruction.masked_patch_mse`, optionally with per-patch normalised targets).
The exported encoder is the ViT (``ViTEncoder``: key-identical to MONAI ``ViT`` / ``UNETR.vit``).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from medssl.errors import MedsslError, Reason
from medssl.losses.reconstruction import masked_patch_mse
from medssl.models.mae import MaskedAutoencoder
from medssl.models.patches import patchify, unpatchify
from medssl.models.vit import ViTEncoder
from medssl.ssl.base import SSLMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.masking import PatchMask, block_masking, patch_mask_to_voxels, random_masking

MASKINGS = ("random", "block")


class MAE(SSLMethod):
    """Masked autoencoder with a ViT encoder.

    Args:
        img_size: input size (``spatial_dims`` values), e.g. ``[96, 96, 96]`` or ``[224, 224]``.
        patch_size: ViT patch size (int or per axis); must divide ``img_size``.
        in_channels: image channels (co-registered sequences).
        spatial_dims: 2 or 3.
        hidden_size, num_layers, num_heads, mlp_dim: encoder width/depth (MONAI ViT arguments).
        pos_embed_type: encoder position embedding (``"sincos"`` as in MAE, or ``"learnable"``).
        qkv_bias: bias in the attention projections (MONAI UNETR's default is False; keep them equal to transfer).
        decoder_dim, decoder_depth, decoder_heads: the light decoder (discarded after pretraining).
        mask_ratio: fraction of patches hidden.
        masking: ``"random"`` (MAE) or ``"block"`` (contiguous blocks of ``mask_block_size`` patches).
        norm_pix_loss: regress per-patch normalised pixels (MAE's better-representation default).
        gradient_checkpointing: recompute encoder blocks in backward (saves memory on large 3D inputs).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "mae"

    def __init__(self, img_size: list[int], patch_size: Union[int, list[int]] = 16, in_channels: int = 1,
                 spatial_dims: int = 3, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, pos_embed_type: str = "sincos", qkv_bias: bool = False,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16, mask_ratio: float = 0.75,
                 masking: str = "random", mask_block_size: int = 2, norm_pix_loss: bool = True,
                 gradient_checkpointing: bool = False, optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(optim, nonfinite, max_consecutive_skips, seed)
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        if pos_embed_type == "sincos" and hidden_size % (2 * spatial_dims):
            raise ValueError(f"pos_embed_type='sincos' in {spatial_dims}D needs hidden_size divisible by "
                             f"{2 * spatial_dims}, got {hidden_size}; change hidden_size or use 'learnable'")
        encoder = ViTEncoder(in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                             hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads,
                             spatial_dims=spatial_dims, pos_embed_type=pos_embed_type, qkv_bias=qkv_bias,
                             gradient_checkpointing=gradient_checkpointing)
        self.model = MaskedAutoencoder(encoder, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                                       decoder_heads=decoder_heads)
        self.mask_ratio, self.masking, self.mask_block_size = mask_ratio, masking, mask_block_size
        self.norm_pix_loss = norm_pix_loss
        # fail at construction, not at the first batch, when the ratio leaves nothing to mask or to see
        self.draw_mask(1, torch.Generator().manual_seed(0), torch.device("cpu"))

    @property
    def encoder(self) -> ViTEncoder:
        return self.model.encoder

    def draw_mask(self, batch_size: int, generator: torch.Generator, device: torch.device) -> PatchMask:
        enc = self.model.encoder
        if self.masking == "block":
            return block_masking(batch_size, enc.grid_shape, self.mask_ratio, self.mask_block_size,
                                 generator=generator, device=device)
        return random_masking(batch_size, enc.num_patches, self.mask_ratio, generator=generator, device=device)

    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        x = self.images(batch)
        enc = self.model.encoder
        expected = (enc.in_channels, *enc.img_size)
        if tuple(x.shape[1:]) != expected:
            raise MedsslError(Reason.BAD_CONFIG, f"batch images have shape (C, *spatial) = {tuple(x.shape[1:])} but "
                              f"the MAE was configured for {expected}: set model.img_size / model.in_channels to the "
                              "data (or data.patch_size to the model)")
        return x

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self._images(batch)
        mask = self.draw_mask(x.shape[0], generator, x.device)
        pred = self.model(x, mask)
        target = patchify(x, self.model.patch_size)
        return {"loss": masked_patch_mse(pred.float(), target.float(), mask.mask, norm_pix=self.norm_pix_loss)}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Images for a person to judge: input, masked input, and the reconstruction with visible patches pasted
        back (per-patch normalised predictions are mapped back to each patch's own mean and variance)."""
        x = self._images(batch)
        mask = self.draw_mask(x.shape[0], generator, x.device)
        pred = self.model(x, mask).float()
        target = patchify(x, self.model.patch_size).float()
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        enc = self.model.encoder
        voxel_mask = patch_mask_to_voxels(mask.mask, enc.grid_shape, enc.patch_size).to(x.dtype)
        recon = unpatchify(pred, enc.patch_size, enc.grid_shape, enc.in_channels)
        return {"input": x, "masked": x * (1 - voxel_mask), "reconstruction": recon * voxel_mask + x * (1 - voxel_mask)}
