"""Restoration pretraining: corrupt the image, restore it with encoder + decoder, MSE against the clean image.

:class:`RestorationMethod` is the shared base (the corruption is the only thing a subclass defines):

* the encoder is a registry CNN encoder (``resnet``, ``segresnet``, ``basicunet``) built from ``encoder`` /
  ``encoder_kwargs``; the decoder (:class:`medssl.models.restoration.RestorationDecoder`) reads its
  ``forward_features`` maps and is discarded after pretraining, unless ``decoder="basicunet"`` (``basicunet``
  encoders): then it is MONAI ``BasicUNet``'s own decoder (:class:`medssl.models.unet.BasicUNetDecoder`), exposed
  as :attr:`RestorationMethod.dense_decoder` and exported beside the encoder for whole-network transfer
  (``decoder.safetensors``, :mod:`medssl.models.dense_transfer`). The default stays ``"restoration"`` because the
  BasicUNet decoder always has skip connections (the plain autoencoder must not) and fits only one encoder;
* the loss is the mean squared error over the whole image (all voxels, all channels), as in Models Genesis;
* ``reconstruct`` gives the run's ``reconstructions/*.png`` grids their columns: input / transformed / restored.

:class:`Autoencoder` is the (denoising) autoencoder baseline (Vincent et al. 2008): Gaussian noise of
``noise_std`` and/or a random fraction ``mask_ratio`` of ``mask_patch_size`` patches set to zero;
``noise_std=0, mask_ratio=0`` is the plain autoencoder. Its decoder has no skip connections by default: with
them a plain autoencoder could copy the shallowest map and learn nothing. (For a ViT, MONAI's ``ViTAutoEnc`` is
the counterpart; the medssl ViT is pretrained with MAE instead.)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

from medssl.errors import MedsslError, Reason
from medssl.models.registry import build_encoder
from medssl.models.restoration import RestorationModel
from medssl.ssl.base import SSLMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.masking import random_voxel_mask

__all__ = ["INTENSITY_MODES", "Autoencoder", "RestorationMethod", "normalise_intensity"]

#: how images are brought to the target range before corruption (the restored target is the normalised image)
INTENSITY_MODES = ("none", "clamp", "minmax")


def normalise_intensity(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``"none"``: unchanged; ``"clamp"``: clipped to [0, 1]; ``"minmax"``: each sample scaled to [0, 1]."""
    if mode == "clamp":
        return x.clamp(0.0, 1.0)
    if mode == "minmax":
        flat = x.flatten(1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        shape = (-1, *([1] * (x.ndim - 1)))
        return (x - lo.view(shape)) / (hi - lo).clamp_min(1e-8).view(shape)
    return x


class RestorationMethod(SSLMethod):
    """Base of the restoration methods (see module docstring); subclasses implement :meth:`corrupt`.

    Args:
        encoder, encoder_kwargs: registry CNN encoder and its arguments.
        decoder_channels: decoder width per encoder stage, shallow to deep (default: the encoder's).
        skips: U-Net skip connections in the decoder.
        out_activation: ``None`` or ``"sigmoid"`` (targets in [0, 1]).
        decoder: ``"restoration"`` (default) or ``"basicunet"`` (the segmentation BasicUNet's decoder, exported).
        decoder_upsample: the BasicUNet decoder's ``upsample`` (``"deconv"``, ``"pixelshuffle"``, ``"nontrainable"``);
            fine-tuning builds the segmenter with the same.
        intensity: ``"none"``, ``"clamp"`` (to [0, 1]) or ``"minmax"`` (per sample to [0, 1]), applied to the
            image before corruption; the model restores the normalised image.
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 decoder_channels: Optional[list[int]] = None, skips: bool = True,
                 out_activation: Optional[str] = None, intensity: str = "none", optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0,
                 decoder: str = "restoration", decoder_upsample: str = "deconv"):
        super().__init__(optim if optim is not None else OptimConfig(lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.999)),
                         nonfinite, max_consecutive_skips, seed)
        if intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
        built = build_encoder(encoder, dict(encoder_kwargs or {}))
        try:
            self.model = RestorationModel(built, decoder_channels, skips, out_activation, decoder, decoder_upsample)
        except ValueError as err:
            raise MedsslError(Reason.BAD_CONFIG, f"{type(self).__name__}: {err}") from err
        self.intensity = intensity

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.encoder

    @property
    def dense_decoder(self) -> Optional[torch.nn.Module]:
        """The segmentation network's decoder trained here (``decoder="basicunet"``), exported for whole-network
        transfer; None for the default restoration decoder, which no segmenter holds."""
        return self.model.dense_decoder

    # --- to implement -----------------------------------------------------------------------------------------
    def corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The corrupted input the model restores ``x`` from."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------------------------
    def _pair(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if "image" not in batch:
            raise MedsslError(Reason.BAD_CONFIG, f"{type(self).__name__} restores the plain images and uses no views: "
                              "set data.views to null (or keep the image with views.init_args.keep_image=true)")
        x = normalise_intensity(self.images(batch), self.intensity)
        return x, self.corrupt(x, generator)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x, corrupted = self._pair(batch, generator)
        restored = self.model(corrupted)
        loss = F.mse_loss(restored.float(), x.float())
        # the error of returning the corrupted input unchanged: the loss should fall well below it
        return {"loss": loss, "corrupted_mse": F.mse_loss(corrupted.detach().float(), x.float())}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Input, its corruption and the restoration (the monitor's grid columns)."""
        x, corrupted = self._pair(batch, generator)
        return {"input": x, "transformed": corrupted, "restored": self.model(corrupted).float()}


class Autoencoder(RestorationMethod):
    """(Denoising) autoencoder.

    Args:
        encoder, encoder_kwargs, decoder_channels, out_activation, decoder, decoder_upsample, intensity: see
            :class:`RestorationMethod` (``decoder="basicunet"`` needs ``skips=True``).
        noise_std: std of the additive Gaussian noise (0: none).
        mask_ratio: fraction of ``mask_patch_size`` patches set to zero (0: none); the image size must be divisible
            by ``mask_patch_size``.
        skips: skip connections in the decoder (default off, see module docstring).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "autoencoder"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 noise_std: float = 0.1, mask_ratio: float = 0.0, mask_patch_size: Union[int, list[int]] = 4,
                 decoder_channels: Optional[list[int]] = None, skips: bool = False,
                 out_activation: Optional[str] = None, intensity: str = "none", optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0,
                 decoder: str = "restoration", decoder_upsample: str = "deconv"):
        super().__init__(encoder, encoder_kwargs, decoder_channels, skips, out_activation, intensity, optim,
                         nonfinite, max_consecutive_skips, seed, decoder=decoder, decoder_upsample=decoder_upsample)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.noise_std, self.mask_ratio, self.mask_patch_size = noise_std, mask_ratio, mask_patch_size

    def corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = x
        if self.mask_ratio > 0:
            size: Sequence[int] = tuple(x.shape[2:])
            mask = random_voxel_mask(x.shape[0], size, self.mask_patch_size, self.mask_ratio, generator=generator,
                                     device=x.device)
            out = out.masked_fill(mask, 0.0)
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out
