"""Degenerate geometry values: refused before any affine is built from them (``bad_geometry``).

A header can hold a PixelSpacing of 0\\0, a negative or NaN spacing, an ImageOrientationPatient of all zeros, or
direction cosines that are not unit vectors or not orthogonal. Built into an affine, such values give voxels of
``0x0x2.5`` mm or NaN, which the index would list as usable and a NIfTI writer refuses with its own traceback.
:func:`check_geometry_values` is the one check, called by :func:`medssl.data.geometry.plan_stack` and so shared by
the reader, ``medssl convert`` and the archive index; absent values are not its business (``missing_geometry``).
"""
from __future__ import annotations

import math
from typing import Sequence

from medssl.data.dicom_header import DicomHeader
from medssl.errors import DicomSeriesError, Reason

#: Largest deviation of ImageOrientationPatient's direction cosines from unit length / orthogonality accepted.
ORTHONORMAL_TOL = 0.01


def _degenerate(position, orientation, spacing) -> str:
    """Why a slice's geometry values are degenerate ("" when they are not, or absent: that is missing_geometry)."""
    if spacing is not None and not all(math.isfinite(v) and v > 0 for v in spacing):
        return f"PixelSpacing {'/'.join(f'{v:g}' for v in spacing)} is not positive and finite"
    if orientation is not None:
        if not all(map(math.isfinite, orientation)):
            return "ImageOrientationPatient is not finite"
        row, col = orientation[:3], orientation[3:]  # (math, not numpy: this runs for every file the index plans)
        norms = (math.hypot(*row), math.hypot(*col))
        if abs(norms[0] - 1) > ORTHONORMAL_TOL or abs(norms[1] - 1) > ORTHONORMAL_TOL:
            return f"ImageOrientationPatient vectors have lengths {norms[0]:.3g}, {norms[1]:.3g}, not 1"
        cosine = sum(a * b for a, b in zip(row, col))
        if abs(cosine) > ORTHONORMAL_TOL:
            return f"ImageOrientationPatient vectors are not orthogonal (cosine {cosine:.3g})"
    if position is not None and not all(map(math.isfinite, position)):
        return "ImagePositionPatient is not finite"
    return ""


def check_geometry_values(headers: Sequence[DicomHeader]) -> None:
    """Refuse degenerate geometry (``bad_geometry``): zero, negative or non-finite pixel spacing, orientation vectors
    that are zero, non-finite, not unit length or not orthogonal, non-finite positions; in every enhanced frame too.
    Such values would give an affine of zeros or NaNs (a series of ``0x0x2.5`` mm voxels, a NIfTI no reader takes)."""
    bad: dict[str, str] = {}
    for h in headers:
        whys = [_degenerate(h.position, h.orientation, h.pixel_spacing)]
        whys += [f"frame {f}: {w}" for f, frame in enumerate(h.enhanced_frames) if (w := _degenerate(*frame[:3]))]
        why = next((w for w in whys if w), "")
        if why:
            bad[h.path] = why
    if bad:
        first = next(iter(bad))
        raise DicomSeriesError(Reason.BAD_GEOMETRY, f"degenerate geometry in {len(bad)} file(s), e.g. {first}: "
                               f"{bad[first]}", sorted(bad))
