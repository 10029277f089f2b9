"""Opt-in regularisation of irregular DICOM stacks: gantry-tilt (shear) correction and equal slice spacing.

Both are explicit choices (``tilt="correct"``, ``uneven="resample"``), never applied silently. The method is
geometric and vendor-independent: every slice plane is parallel, so each slice is (1) translated in-plane by the
offset of its ImagePositionPatient from the first slice's (this undoes the shear of a tilted gantry; linear
interpolation onto a canvas enlarged to hold all shifted slices, padded with the stack's minimum value), then
(2) the stack is linearly interpolated along the slice normal onto equally spaced planes spanning exactly the first
to the last slice, no coarser than the smallest gap and at most twice the slice count (dcm2niix's cap), so results
can be compared with dcm2niix's ``_Tilt_Eq``
outputs voxel for voxel (where the cap applies the grids are identical).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from medssl.data.dicom import DicomVolume
from medssl.data.geometry import lps_to_ras


def equal_spacing_plan(distances: np.ndarray, uneven: bool) -> tuple[int, float]:
    """(number of planes, spacing) for slices at ascending ``distances`` (mm along the normal); ``uneven`` is the
    verdict of :func:`medssl.data.geometry.plan_stack` (even stacks keep their slice count)."""
    rel = np.asarray(distances, dtype=np.float64) - distances[0]
    n = len(rel)
    if not uneven:
        return n, float(rel[-1] / (n - 1))
    gaps = np.diff(rel)
    # planes never coarser than the finest original gap, first and last planes on the end slices; capped at
    # twice the slice count (dcm2niix's cap) so a single tiny gap cannot explode memory
    count = int(math.ceil(rel[-1] / float(np.min(gaps[gaps > 0])) - 1e-6)) + 1
    count = min(count, 2 * n)
    step = float(rel[-1] / (count - 1))
    return count, step


def _interpolate_planes(stack: np.ndarray, rel: np.ndarray, count: int, step: float) -> np.ndarray:
    """Linear interpolation along axis 2 from planes at ``rel`` to ``count`` planes ``step`` apart."""
    out = np.empty(stack.shape[:2] + (count,), dtype=np.float64)
    for m in range(count):
        target = m * step
        hi = int(np.searchsorted(rel, target - 1e-6 * step, side="left"))
        hi = min(max(hi, 0), len(rel) - 1)
        lo = max(hi - 1, 0)
        if rel[hi] == rel[lo] or target >= rel[hi]:
            out[:, :, m] = stack[:, :, hi]
        else:
            w = (target - rel[lo]) / (rel[hi] - rel[lo])
            out[:, :, m] = (1.0 - w) * stack[:, :, lo] + w * stack[:, :, hi]
    return out


def regularise(volume: DicomVolume) -> tuple[DicomVolume, np.ndarray]:
    """Shear-correct and equalise a stack; returns the new volume (values already rescaled) and its RAS affine."""
    geom = volume.geometry
    source = volume.values()
    values = source.astype(np.float64)
    if values.ndim == 3:
        values = values[..., None]
    row_dir, col_dir = geom.orientation[:3], geom.orientation[3:]
    dr, dc = geom.pixel_spacing
    positions = np.array([column[0].position for column in geom.slices])
    offsets = positions - positions[0]
    # in-plane offset of every slice, in voxels along (i = columns, j = rows)
    shift_i = offsets @ row_dir / dc
    shift_j = offsets @ col_dir / dr
    lo_i, lo_j = math.floor(min(0.0, shift_i.min()) + 1e-6), math.floor(min(0.0, shift_j.min()) + 1e-6)
    hi_i, hi_j = math.ceil(max(0.0, shift_i.max()) - 1e-6), math.ceil(max(0.0, shift_j.max()) - 1e-6)
    nx, ny = geom.columns + hi_i - lo_i, geom.rows + hi_j - lo_j
    fill = float(values.min())
    sheared = np.full((nx, ny) + values.shape[2:], fill, dtype=np.float64)
    for k in range(values.shape[2]):
        for t in range(values.shape[3]):
            canvas = np.full((nx, ny), fill)
            canvas[: geom.columns, : geom.rows] = values[:, :, k, t]
            move = (shift_i[k] - lo_i, shift_j[k] - lo_j)
            if abs(move[0]) < 1e-6 and abs(move[1]) < 1e-6:
                sheared[:, :, k, t] = canvas
            else:
                sheared[:, :, k, t] = ndimage.shift(canvas, move, order=1, mode="constant", cval=fill)
    rel = geom.distances - geom.distances[0]
    count, step = equal_spacing_plan(geom.distances, geom.uneven)
    out = np.stack([_interpolate_planes(sheared[..., t], rel, count, step) for t in range(sheared.shape[3])], -1)
    if out.shape[-1] == 1:
        out = out[..., 0]
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        out = np.clip(np.round(out), info.min, info.max).astype(source.dtype)
    else:
        out = out.astype(np.float32)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * dc
    affine[:3, 1] = col_dir * dr
    affine[:3, 2] = geom.normal * step
    affine[:3, 3] = positions[0] + lo_i * dc * row_dir + lo_j * dr * col_dir
    nz = count
    ones = np.ones((nz,) + out.shape[3:])
    result = DicomVolume(raw=out, slopes=ones, intercepts=np.zeros_like(ones), geometry=geom)
    return result, lps_to_ras(affine)
