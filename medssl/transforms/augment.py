"""Light, seedable augmentation for pretraining, built from MONAI dictionary transforms.

:func:`pretrain_augment` returns a ``monai.transforms.Compose`` of, in order,

* ``RandFlipd`` once per spatial axis in ``flip_axes`` (each with ``flip_prob``),
* ``RandRotate90d`` in the plane ``rotate90_axes`` (k in 1..3 quarter turns, with ``rotate90_prob``; on a
  non-square plane this changes the spatial shape),
* ``RandScaleIntensityd`` (``x * (1 + f)``, ``f ~ U(-intensity_scale, intensity_scale)``),
* ``RandShiftIntensityd`` (``x + o``, ``o ~ U(-intensity_shift, intensity_shift)``),
* ``RandGaussianNoised`` (std drawn from ``U(0, noise_std)``),

the three intensity transforms each firing with ``intensity_prob``. A transform whose probability or magnitude is
0 is left out, so the all-zero configuration is the identity. Spatial transforms act on every key in ``keys``
(image and label move together); intensity transforms only on ``intensity_keys`` (default: ``keys``).

Axes count spatial dimensions only (0 = first axis after the channel), so one configuration serves 2D
``(C, H, W)`` and 3D ``(C, D, H, W)`` MetaTensors; MONAI keeps the affine in step with flips and rotations.
``compose.set_random_state(seed=s)`` gives each member its own seed derived from ``s``: the output is a
deterministic function of the input and ``s``, which is how the datasets re-seed it per item.

:class:`AugmentConfig` holds the same settings as plain typed fields, for YAML configs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from monai.transforms import (
    Compose, RandFlipd, RandGaussianNoised, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd,
)

__all__ = ["AugmentConfig", "pretrain_augment"]


def pretrain_augment(spatial_dims: int, *, flip_prob: float = 0.5, flip_axes: Sequence[int] | None = None,
                     rotate90_prob: float = 0.0, rotate90_axes: Sequence[int] = (0, 1),
                     intensity_scale: float = 0.1, intensity_shift: float = 0.1, intensity_prob: float = 1.0,
                     noise_std: float = 0.0, keys: Sequence[str] = ("image",),
                     intensity_keys: Sequence[str] | None = None) -> Compose:
    """Compose of MONAI dictionary transforms for ``spatial_dims``-D items (see module docstring).

    Args:
        spatial_dims: 2 or 3.
        flip_prob: probability of flipping each axis in ``flip_axes`` (independently).
        flip_axes: spatial axes to flip; default all of them.
        rotate90_prob: probability of 1-3 quarter turns in the ``rotate90_axes`` plane.
        rotate90_axes: two distinct spatial axes spanning the rotation plane.
        intensity_scale: half-width of the multiplicative factor range around 1.
        intensity_shift: half-width of the additive offset range around 0.
        intensity_prob: probability of each intensity transform (scale, shift, noise).
        noise_std: upper bound of the Gaussian noise standard deviation.
        keys: keys of the spatial transforms.
        intensity_keys: keys of the intensity transforms; default ``keys``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    for name, p in (("flip_prob", flip_prob), ("rotate90_prob", rotate90_prob), ("intensity_prob", intensity_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    for name, m in (("intensity_scale", intensity_scale), ("intensity_shift", intensity_shift),
                    ("noise_std", noise_std)):
        if m < 0:
            raise ValueError(f"{name} must be >= 0, got {m}")
    axes = tuple(range(spatial_dims)) if flip_axes is None else tuple(int(a) for a in flip_axes)
    plane = tuple(int(a) for a in rotate90_axes)
    if any(not 0 <= a < spatial_dims for a in (*axes, *plane)):
        raise ValueError(f"flip_axes {axes} / rotate90_axes {plane} must be spatial axes in 0..{spatial_dims - 1}")
    if len(plane) != 2 or plane[0] == plane[1]:
        raise ValueError(f"rotate90_axes must be two distinct spatial axes, got {plane}")
    keys = tuple(keys)
    ikeys = keys if intensity_keys is None else tuple(intensity_keys)

    transforms: list = []
    if flip_prob > 0:
        transforms += [RandFlipd(keys, prob=flip_prob, spatial_axis=a) for a in axes]
    if rotate90_prob > 0:
        transforms.append(RandRotate90d(keys, prob=rotate90_prob, max_k=3, spatial_axes=plane))
    if intensity_prob > 0:
        if intensity_scale > 0:
            transforms.append(RandScaleIntensityd(ikeys, factors=intensity_scale, prob=intensity_prob))
        if intensity_shift > 0:
            transforms.append(RandShiftIntensityd(ikeys, offsets=intensity_shift, prob=intensity_prob))
        if noise_std > 0:
            transforms.append(RandGaussianNoised(ikeys, prob=intensity_prob, mean=0.0, std=noise_std))
    return Compose(transforms)


@dataclass
class AugmentConfig:
    """:func:`pretrain_augment` settings as plain fields (YAML-friendly); :meth:`build` makes the Compose."""

    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] | None = None
    rotate90_prob: float = 0.0
    rotate90_axes: tuple[int, int] = (0, 1)
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    intensity_prob: float = 1.0
    noise_std: float = 0.0
    keys: tuple[str, ...] = ("image",)
    intensity_keys: tuple[str, ...] | None = None

    def build(self, spatial_dims: int) -> Compose:
        """The augmentation for ``spatial_dims``-D items."""
        return pretrain_augment(spatial_dims, **asdict(self))
