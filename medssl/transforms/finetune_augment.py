"""Anatomy-safe augmentation for few-label fine-tuning, built from MONAI dictionary transforms.

With a few dozen labelled images a classifier memorises its training set within a few epochs; mild geometric and
intensity perturbations are the standard remedy (MedMNIST v2 and most few-label medical baselines use them).
"Anatomy-safe" means nothing a scanner or a patient could not produce:

* a small random affine (``RandAffined``): rotation up to ``rotate_deg`` degrees in every plane, isotropic-ish
  per-axis scaling by up to ``scale``, translation up to ``translate`` of the field of view, border padding (no black
  wedges that a network could key on);
* no flips by default: left and right are not interchangeable in a chest X-ray (heart, aortic knob) or in the
  abdomen (liver, adrenal glands); pass ``flip_axes`` only for data without laterality;
* intensity scale and shift (``RandScaleIntensityd`` / ``RandShiftIntensityd``), as a different window or
  detector gain would give.

Each transform fires with ``prob``. The output is a deterministic function of the input and the seed given to
``compose.set_random_state(seed=...)``, which is how :class:`~medssl.data.medmnist.MedMNISTDataset` re-seeds it per
item and epoch (the fine-tuning module calls ``set_epoch`` at every epoch start, so each epoch draws anew).
"""
from __future__ import annotations

import math
from typing import Sequence

from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

__all__ = ["finetune_augment"]


def finetune_augment(spatial_dims: int, spatial_size: Sequence[int], *, rotate_deg: float = 10.0,
                     scale: float = 0.1, translate: float = 0.05, intensity_scale: float = 0.1,
                     intensity_shift: float = 0.05, flip_axes: Sequence[int] = (), prob: float = 0.8,
                     keys: Sequence[str] = ("image",)) -> Compose:
    """Compose for ``(C, *spatial_size)`` items of ``spatial_dims`` dimensions (see module docstring).

    Args:
        spatial_dims: 2 or 3.
        spatial_size: the item's spatial shape (translation is a fraction of it).
        rotate_deg: maximum rotation about each axis, degrees.
        scale: maximum relative zoom in or out.
        translate: maximum shift as a fraction of each spatial size.
        intensity_scale: half-width of the multiplicative factor range around 1.
        intensity_shift: half-width of the additive offset range around 0 (images are scaled to [0, 1]).
        flip_axes: spatial axes that may be flipped (each with ``prob`` / 2); empty = none (laterality kept).
        prob: probability of each transform.
        keys: keys to transform (intensity changes apply to all of them: pass only image keys).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(spatial_size) != spatial_dims:
        raise ValueError(f"spatial_size {tuple(spatial_size)} does not have {spatial_dims} dimensions")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    for name, value in (("rotate_deg", rotate_deg), ("scale", scale), ("translate", translate),
                        ("intensity_scale", intensity_scale), ("intensity_shift", intensity_shift)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if scale >= 1 or translate >= 0.5:
        raise ValueError(f"scale must be < 1 and translate < 0.5, got {scale} and {translate}")
    if any(not 0 <= int(a) < spatial_dims for a in flip_axes):
        raise ValueError(f"flip_axes {tuple(flip_axes)} must be spatial axes in 0..{spatial_dims - 1}")
    keys = tuple(keys)
    angle = math.radians(rotate_deg)
    rotate = angle if spatial_dims == 2 else (angle, angle, angle)
    transforms: list = []
    if rotate_deg > 0 or scale > 0 or translate > 0:
        transforms.append(RandAffined(keys, prob=prob, rotate_range=rotate, scale_range=scale,
                                      translate_range=[translate * s for s in spatial_size],
                                      padding_mode="border", mode="bilinear"))
    transforms += [RandFlipd(keys, prob=prob / 2, spatial_axis=int(a)) for a in flip_axes]
    if intensity_scale > 0:
        transforms.append(RandScaleIntensityd(keys, factors=intensity_scale, prob=prob))
    if intensity_shift > 0:
        transforms.append(RandShiftIntensityd(keys, offsets=intensity_shift, prob=prob))
    return Compose(transforms)
