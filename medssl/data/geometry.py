"""Header-only geometry of a DICOM stack: slice order, 4D layout, affine, and the strict-policy checks.

Everything here works on :class:`DicomHeader` objects, without decoding pixels, so the archive crawler can validate
and describe a series cheaply. Slices are ordered by the projection of ImagePositionPatient on the slice normal
(never by InstanceNumber or file name). The affine maps voxel (i = column, j = row, k = slice) to LPS mm and is
built from ImageOrientationPatient, PixelSpacing and the *measured* slice step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from medssl.data.dicom_header import DicomHeader
from medssl.data.dimensions import FrameGroup
from medssl.data.geometry_values import check_geometry_values
from medssl.data.mosaic import mosaic_first_position, mosaic_grid
from medssl.errors import DicomSeriesError, Reason

TiltPolicy = Literal["error", "correct"]
UnevenPolicy = Literal["error", "resample"]
FourDPolicy = Literal["stack", "split", "error"]

#: Relative tolerance on slice gaps (fraction of the median gap) and absolute floor in mm.
GAP_RTOL = 0.01
GAP_ATOL = 0.01
#: Photometric interpretations whose single sample is an intensity (everything else is colour or a palette index).
SCALAR_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
#: Largest angle (degrees) between the slice-to-slice step and the slice normal accepted as "not tilted".
TILT_TOL_DEG = 0.1


@dataclass(frozen=True)
class SliceRef:
    """One 2D slice: which file, which frame (multi-frame) or tile (mosaic), and where it lies (LPS)."""

    header: DicomHeader
    frame: int | None
    tile: int | None
    position: np.ndarray
    slope: float
    intercept: float
    order: tuple = ()  # an enhanced frame's place along the 4th axis (its non-splitting dimension index values)


@dataclass
class StackGeometry:
    """Layout of a stack: ``slices[z][t]``; affine (LPS, voxel -> mm) for the equally spaced / untilted case."""

    slices: list[list[SliceRef]]
    rows: int
    columns: int
    orientation: np.ndarray  # (6,)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    normal: np.ndarray
    distances: np.ndarray  # position of each z along the normal (mm, ascending)
    affine_lps: np.ndarray
    tilt_deg: float = 0.0
    uneven: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def n_timepoints(self) -> int:
        return len(self.slices[0]) if self.slices else 0

    @property
    def shape(self) -> tuple[int, ...]:
        base = (self.columns, self.rows, self.n_slices)
        return base + ((self.n_timepoints,) if self.n_timepoints > 1 else ())

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))

    @property
    def files(self) -> list[str]:
        return sorted({s.header.path for col in self.slices for s in col})

    @property
    def affine_ras(self) -> np.ndarray:
        return lps_to_ras(self.affine_lps)


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:2, :] *= -1
    return out


def _expand(headers: Sequence[DicomHeader], group: FrameGroup | None = None) -> list[SliceRef]:
    """Files -> slices (mosaic tiles and enhanced frames become slices with their own positions); ``group``: only
    these frames of an enhanced file (one stack of several, :mod:`medssl.data.dimensions`)."""
    out: list[SliceRef] = []
    for h in headers:
        if h.enhanced_frames and len(h.enhanced_frames) != h.number_of_frames:
            raise DicomSeriesError(Reason.INCONSISTENT_SHAPE, f"{h.number_of_frames} frames but "
                                   f"{len(h.enhanced_frames)} per-frame functional groups", [h.path])
        if h.number_of_frames > 1 and not h.enhanced_frames and not h.is_mosaic:
            # legacy multi-frame (NM, US cine, RT dose grids ...): one position for all frames; reading it as one
            # slice would silently drop frames, stacking it would invent their positions
            raise DicomSeriesError(Reason.MISSING_GEOMETRY, f"multi-frame object ({h.number_of_frames} frames) "
                                   "without per-frame positions", [h.path])
        if h.enhanced_frames:
            chosen = zip(group.frames, group.order) if group else ((f, ()) for f in range(len(h.enhanced_frames)))
            first_ori = first_ps = None
            for f, order in chosen:
                pos, ori, ps, slope, inter, _idx = h.enhanced_frames[f]
                if pos is None:
                    raise DicomSeriesError(Reason.MISSING_GEOMETRY, f"frame {f} has no position", [h.path])
                if first_ori is None:
                    first_ori, first_ps = ori, ps
                elif _differ(ori, first_ori, 1e-3) or _differ(ps, first_ps, 1e-4):
                    raise DicomSeriesError(Reason.MIXED_ORIENTATION, f"frame {f} has another orientation or pixel "
                                           "spacing than the stack's first frame", [h.path])
                out.append(SliceRef(h, f, None, np.asarray(pos, float), slope, inter, order))
        elif h.is_mosaic:
            if h.position is None or h.orientation is None or h.pixel_spacing is None:
                raise DicomSeriesError(Reason.MISSING_GEOMETRY, "mosaic without geometry", [h.path])
            first = mosaic_first_position(h.position, h.orientation, h.pixel_spacing, h.rows, h.columns,
                                          h.mosaic_images)
            out.append(SliceRef(h, None, 0, first, h.slope, h.intercept))  # tiles expanded in plan_stack
        else:
            if h.position is None:
                raise DicomSeriesError(Reason.MISSING_GEOMETRY, "no ImagePositionPatient", [h.path])
            out.append(SliceRef(h, None, None, np.asarray(h.position, float), h.slope, h.intercept))
    return out


def _slice_step(h: DicomHeader) -> float | None:
    """Declared slice step: SpacingBetweenSlices, else SliceThickness; only a positive, finite value counts."""
    return next((v for v in (h.spacing_between_slices, h.slice_thickness)
                 if v is not None and math.isfinite(v) and v > 0), None)


def _differ(a, b, tol: float) -> bool:
    if a is None or b is None:
        return a is not b
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > tol


def _frame_geometry(h: DicomHeader, group: FrameGroup | None = None):
    """(orientation, pixel spacing) of a file, from enhanced per-frame groups (the stack's first frame) when
    present."""
    if h.enhanced_frames:
        first = h.enhanced_frames[group.frames[0] if group else 0]
        ori = first[1] or h.orientation
        ps = first[2] or h.pixel_spacing
        return ori, ps
    return h.orientation, h.pixel_spacing


def _time_key(s: SliceRef):
    h = s.header
    return (
        s.order,
        h.temporal_position if h.temporal_position is not None else -1,
        h.acquisition_number if h.acquisition_number is not None else -1,
        h.acquisition_time if h.acquisition_time is not None else -1.0,
        h.trigger_time if h.trigger_time is not None else -1.0,
        h.instance_number if h.instance_number is not None else -1,
        -1 if s.frame is None else s.frame,
    )


def plan_stack(
    headers: Sequence[DicomHeader],
    *,
    frames: FrameGroup | None = None,
    tilt: TiltPolicy = "error",
    uneven: UnevenPolicy = "error",
    fourd: FourDPolicy = "stack",
) -> StackGeometry:
    """Validate and lay out one stack. Raises :class:`DicomSeriesError` with a reason code under strict policy.

    ``frames``: the frames of an enhanced file that form the stack (:attr:`medssl.data.series.Stack.frame_group`);
    None takes every frame."""
    if not headers:
        raise DicomSeriesError(Reason.EMPTY_SERIES, "no files in stack")
    files = [h.path for h in headers]
    colour = [h.path for h in headers if h.samples_per_pixel != 1 or h.photometric not in SCALAR_PHOTOMETRIC]
    if colour:
        kinds = sorted({f"{h.photometric} x{h.samples_per_pixel}" for h in headers if h.path in colour})
        raise DicomSeriesError(Reason.UNSUPPORTED_PHOTOMETRIC, f"not a scalar image ({', '.join(kinds)}): colour, "
                               "palette or YBR data (ultrasound, photos, screenshots) is no training volume", colour)
    check_geometry_values(headers)
    shapes = {(h.rows, h.columns, h.samples_per_pixel) for h in headers}
    if len(shapes) > 1:
        raise DicomSeriesError(Reason.INCONSISTENT_SHAPE, f"rows/columns/samples differ: {sorted(shapes)}", files)
    geoms = [_frame_geometry(h, frames) for h in headers]
    if any(o is None or p is None for o, p in geoms):
        bad = [h.path for h, (o, p) in zip(headers, geoms) if o is None or p is None]
        raise DicomSeriesError(Reason.MISSING_GEOMETRY, "no ImageOrientationPatient/PixelSpacing", bad)
    ori = np.asarray(geoms[0][0], dtype=np.float64)
    if max(np.max(np.abs(np.asarray(o) - ori)) for o, _ in geoms) > 1e-3:
        raise DicomSeriesError(Reason.MIXED_ORIENTATION, "slices have different ImageOrientationPatient", files)
    spacings = np.asarray([p for _, p in geoms], dtype=np.float64)
    if np.max(np.abs(spacings - spacings[0])) > 1e-4:
        raise DicomSeriesError(Reason.INCONSISTENT_SHAPE, "PixelSpacing differs between slices", files)
    row_dir, col_dir = ori[:3], ori[3:]
    normal = np.cross(row_dir, col_dir)
    h0 = headers[0]
    rows, columns = h0.rows, h0.columns
    pixel_spacing = (float(spacings[0][0]), float(spacings[0][1]))

    refs = _expand(headers, frames)
    if h0.is_mosaic:
        if len({h.mosaic_images for h in headers}) > 1:
            raise DicomSeriesError(Reason.INCONSISTENT_SHAPE, "mosaics hold different slice counts", files)
        _, rows, columns = mosaic_grid(h0.rows, h0.columns, h0.mosaic_images)
        if h0.mosaic_normal is not None:
            normal = np.asarray(h0.mosaic_normal, dtype=np.float64)
        step = _slice_step(h0)
        if not step:
            raise DicomSeriesError(Reason.MISSING_GEOMETRY, "mosaic without slice spacing", files)
        refs = [
            SliceRef(r.header, None, t, r.position + t * step * normal, r.slope, r.intercept)
            for r in refs
            for t in range(h0.mosaic_images)
        ]
    normal = normal / np.linalg.norm(normal)

    # group slices by their distance along the normal; repeated positions are time points (or duplicates)
    dist = np.array([r.position @ normal for r in refs])
    order = np.argsort(dist, kind="stable")
    columns_z: list[list[SliceRef]] = []
    z_dist: list[float] = []
    tol_same = 1e-3 * max(pixel_spacing)
    for idx in order:
        if z_dist and abs(dist[idx] - z_dist[-1]) <= max(tol_same, 1e-4):
            columns_z[-1].append(refs[idx])
        else:
            columns_z.append([refs[idx]])
            z_dist.append(float(dist[idx]))
    counts = {len(c) for c in columns_z}
    if len(counts) > 1:
        # most positions hold one slice: the extra ones are duplicates; most hold several: a time series (or
        # multi-phase stack) in which some positions lack a time point
        per_position = [len(c) for c in columns_z]
        typical = max(sorted(counts), key=per_position.count)
        odd = [s.header.path for c in columns_z if len(c) != typical for s in c]
        raise DicomSeriesError(
            Reason.DUPLICATE_POSITION if typical == 1 else Reason.INCONSISTENT_TIMEPOINTS,
            f"slice positions repeat unevenly (slices per position: {sorted(counts)}, typically {typical})", odd)
    n_t = counts.pop()
    if n_t > 1:
        for c in columns_z:
            c.sort(key=_time_key)
            keys = [_time_key(s)[:6] for s in c]
            if len(set(keys)) < len(keys):
                raise DicomSeriesError(Reason.DUPLICATE_POSITION,
                                       "several files at one position with identical time/instance tags",
                                       [s.header.path for s in c])
        if fourd == "error":
            raise DicomSeriesError(Reason.INCONSISTENT_TIMEPOINTS, f"4D series ({n_t} volumes) not allowed", files)

    distances = np.asarray(z_dist)
    first = columns_z[0][0].position
    warnings: list[str] = []
    tilt_deg = 0.0
    is_uneven = False
    if len(columns_z) > 1:
        last = columns_z[-1][0].position
        delta = last - first
        cos = abs(delta @ normal) / np.linalg.norm(delta)
        tilt_deg = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        if tilt_deg > TILT_TOL_DEG:
            if tilt == "error":
                declared = f" (GantryDetectorTilt {h0.gantry_tilt:g})" if h0.gantry_tilt else ""
                raise DicomSeriesError(Reason.GANTRY_TILT,
                                       f"slices are sheared by {tilt_deg:.2f} deg{declared}; "
                                       "use tilt='correct' (--tilt correct) to resample", files)
            warnings.append(f"gantry tilt {tilt_deg:.2f} deg corrected by resampling")
        gaps = np.diff(distances)
        median = float(np.median(gaps))
        tol = max(GAP_ATOL, GAP_RTOL * median)
        if np.max(np.abs(gaps - median)) > tol:
            is_uneven = True
            if uneven == "error":
                ratio = gaps / median
                missing = np.any((np.abs(ratio - np.round(ratio)) * median <= tol) & (np.round(ratio) >= 2))
                reason = Reason.MISSING_SLICE if missing else Reason.UNEVEN_SPACING
                raise DicomSeriesError(reason, f"slice gaps vary: {np.round(np.unique(np.round(gaps, 3)), 3)} mm; "
                                       "use uneven='resample' (--uneven resample) to resample to equal spacing",
                                       files)
            warnings.append(f"uneven slice gaps {np.unique(np.round(gaps, 3))} mm resampled")
        step_vec = delta / (len(columns_z) - 1)
    else:
        thickness = _slice_step(h0) or 1.0
        step_vec = normal * thickness

    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = step_vec
    affine[:3, 3] = first
    return StackGeometry(
        slices=columns_z, rows=rows, columns=columns, orientation=ori, pixel_spacing=pixel_spacing, normal=normal,
        distances=distances, affine_lps=affine, tilt_deg=tilt_deg, uneven=is_uneven, warnings=warnings,
    )
