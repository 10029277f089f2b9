"""Models Genesis (Zhou et al., MICCAI 2019; MedIA 2021): learn to restore images from their Models Genesis
corruptions (local pixel shuffling, non-linear intensity mapping, in-/out-painting;
:class:`medssl.transforms.genesis.GenesisTransform`) with a U-Net-style encoder-decoder and an MSE loss.

The reference trains a 3D U-Net with a sigmoid output on CT cubes scaled to [0, 1]; here the encoder is any
registry CNN encoder and the decoder :class:`medssl.models.restoration.RestorationDecoder` (skip connections and
sigmoid on by default; discarded after pretraining, the encoder is exported alone) or, with
``decoder="basicunet"``, MONAI BasicUNet's own decoder (exported beside the encoder, so that fine-tuning can start
from the whole pretrained network as in the paper's target-segmentation transfer). The images are clamped to
[0, 1] first (``intensity="clamp"``; use ``"minmax"`` for z-scored data), because the transformations are defined
on that range.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from medssl.ssl.autoencoder import RestorationMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.genesis import GenesisTransform

__all__ = ["ModelsGenesis"]


class ModelsGenesis(RestorationMethod):
    """Models Genesis restoration.

    Args:
        encoder, encoder_kwargs, decoder_channels, skips, out_activation, decoder, decoder_upsample, intensity: see
            :class:`medssl.ssl.autoencoder.RestorationMethod`.
        nonlinear_prob, flip_prob, shuffle_prob, shuffle_max_block, shuffle_fraction, paint_prob, inpaint_rate,
            inpaint_size, outpaint_size: the corruption, see :class:`medssl.transforms.genesis.GenesisTransform`
            (paper defaults: 0.9, 0.5, 0.5, S/10, -, 0.9, 0.2 i.e. 80% out-painting).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "genesis"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 nonlinear_prob: float = 0.9, flip_prob: float = 0.5, shuffle_prob: float = 0.5,
                 shuffle_max_block: Optional[Union[int, list[int]]] = None, shuffle_fraction: float = 0.8,
                 paint_prob: float = 0.9, inpaint_rate: float = 0.2,
                 inpaint_size: tuple[float, float] = (1 / 6, 1 / 3),
                 outpaint_size: tuple[float, float] = (3 / 7, 4 / 7),
                 decoder_channels: Optional[list[int]] = None, skips: bool = True,
                 out_activation: Optional[str] = "sigmoid", intensity: str = "clamp",
                 optim: Optional[OptimConfig] = None, nonfinite: str = "stop", max_consecutive_skips: int = 10,
                 seed: int = 0, decoder: str = "restoration", decoder_upsample: str = "deconv"):
        super().__init__(encoder, encoder_kwargs, decoder_channels, skips, out_activation, intensity, optim,
                         nonfinite, max_consecutive_skips, seed, decoder=decoder, decoder_upsample=decoder_upsample)
        self.transform = GenesisTransform(
            nonlinear_prob=nonlinear_prob, flip_prob=flip_prob, shuffle_prob=shuffle_prob,
            shuffle_max_block=shuffle_max_block, shuffle_fraction=shuffle_fraction, paint_prob=paint_prob,
            inpaint_rate=inpaint_rate, inpaint_size=tuple(inpaint_size), outpaint_size=tuple(outpaint_size))

    def corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.transform(x, generator)
