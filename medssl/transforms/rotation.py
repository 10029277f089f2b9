"""Rotation prediction (Gidaris et al. 2018) as pure, seedable functions: rotate images by one of a fixed set of
right-angle rotations and return the rotation's class label.

Class tables (``spatial_dims`` trailing axes of the tensor are the spatial axes ``0 .. spatial_dims - 1``; a
rotation ``(plane, k)`` is ``torch.rot90(x, k, dims=plane)`` on those axes):

* **2D**, 4 classes: label ``k`` is ``k`` quarter turns in the image plane ``(0, 1)``, ``k = 0 .. 3``.
* **3D**, 10 classes (Taleb et al. 2020, "3D self-supervised methods for medical imaging"; the 3D rotation task
  of SwinUNETR-style pretraining): the identity plus 1, 2 and 3 quarter turns about each of the three axes::

      label 0       identity
      label 1, 2, 3 k = 1, 2, 3 quarter turns about axis 0  (plane (1, 2))
      label 4, 5, 6 k = 1, 2, 3 quarter turns about axis 1  (plane (2, 0))
      label 7, 8, 9 k = 1, 2, 3 quarter turns about axis 2  (plane (0, 1))

  These are 10 distinct elements of the cube's rotation group (the three half turns differ from each other), so
  a generic volume gives 10 different images. (SwinUNETR's released code uses the 4 in-plane turns of one plane;
  that is the 2D table applied to one plane of the volume.)

Shapes: a quarter turn swaps the two axes of its plane, so rotating a batch by mixed labels only stacks when every
rotated plane is square. :func:`rotate` therefore raises :class:`ValueError` for a quarter turn in a non-square
plane (half turns are always allowed); :func:`center_crop_to_cube` crops the largest centred square / cube first
(what :class:`medssl.ssl.rotation.RotationPrediction` does by default).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["ROTATIONS", "num_rotations", "rotation_of", "rotate", "inverse", "rotate_batch", "inverse_batch",
           "random_rotation", "center_crop_to_cube"]

#: ``spatial_dims -> [(plane, k), ...]`` indexed by label (see module docstring)
ROTATIONS: dict[int, list[tuple[tuple[int, int], int]]] = {
    2: [((0, 1), k) for k in range(4)],
    3: [((1, 2), 0)] + [(plane, k) for plane in ((1, 2), (2, 0), (0, 1)) for k in (1, 2, 3)],
}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in ROTATIONS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def num_rotations(spatial_dims: int) -> int:
    """Number of rotation classes: 4 in 2D, 10 in 3D."""
    _check_dims(spatial_dims)
    return len(ROTATIONS[spatial_dims])


def rotation_of(label: int, spatial_dims: int) -> tuple[tuple[int, int], int]:
    """``(plane, k)`` of a label: ``k`` quarter turns in ``plane`` (spatial axis indices)."""
    n = num_rotations(spatial_dims)
    if not 0 <= int(label) < n:
        raise ValueError(f"label must be in [0, {n}) for spatial_dims={spatial_dims}, got {label}")
    return ROTATIONS[spatial_dims][int(label)]


def _dims(x: torch.Tensor, plane: tuple[int, int], spatial_dims: int) -> tuple[int, int]:
    if x.ndim < spatial_dims:
        raise ValueError(f"x needs at least {spatial_dims} axes, got shape {tuple(x.shape)}")
    first = x.ndim - spatial_dims
    return first + plane[0], first + plane[1]


def rotate(x: torch.Tensor, label: int, spatial_dims: int) -> torch.Tensor:
    """Rotate the trailing ``spatial_dims`` axes of ``x`` by the rotation of class ``label``."""
    plane, k = rotation_of(label, spatial_dims)
    if k == 0:
        return x.clone()
    a, b = _dims(x, plane, spatial_dims)
    if k % 2 and x.shape[a] != x.shape[b]:
        raise ValueError(f"rotation label {label} turns the plane of axes {plane} by 90 degrees, which needs equal "
                         f"sizes, got shape {tuple(x.shape)}; crop to a square / cube first (center_crop_to_cube)")
    return torch.rot90(x, k, dims=(a, b))


def inverse(x: torch.Tensor, label: int, spatial_dims: int) -> torch.Tensor:
    """Undo :func:`rotate`: ``inverse(rotate(x, label, d), label, d) == x`` exactly."""
    plane, k = rotation_of(label, spatial_dims)
    if k == 0:
        return x.clone()
    return torch.rot90(x, -k, dims=_dims(x, plane, spatial_dims))


def _per_label(fn, x: torch.Tensor, labels: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    out = torch.empty_like(x)
    for label in labels.unique().tolist():
        idx = (labels == label).nonzero(as_tuple=True)[0]
        out[idx] = fn(x[idx], label, spatial_dims)
    return out


def rotate_batch(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rotate each item ``x[i]`` of a ``(B, C, *spatial)`` batch by the rotation of class ``labels[i]``."""
    return _per_label(rotate, x, labels, x.ndim - 2)


def inverse_batch(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Undo :func:`rotate_batch` item by item."""
    return _per_label(inverse, x, labels, x.ndim - 2)


def random_rotation(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate every item of a ``(B, C, *spatial)`` batch by a uniformly drawn class; returns
    ``(rotated, labels)``. The labels are drawn on ``generator``'s device and moved to ``x``'s."""
    spatial_dims = x.ndim - 2
    n = num_rotations(spatial_dims)
    device = generator.device if generator is not None else x.device
    labels = torch.randint(0, n, (x.shape[0],), generator=generator, device=device).to(x.device)
    return rotate_batch(x, labels), labels


def center_crop_to_cube(x: torch.Tensor, spatial_dims: Optional[int] = None) -> torch.Tensor:
    """Centred crop of the trailing spatial axes to the largest square (2D) / cube (3D) (a view, no copy)."""
    spatial_dims = x.ndim - 2 if spatial_dims is None else spatial_dims
    _check_dims(spatial_dims)
    sizes = x.shape[x.ndim - spatial_dims:]
    side = min(sizes)
    index = (Ellipsis,) + tuple(slice((s - side) // 2, (s - side) // 2 + side) for s in sizes)
    return x[index]
