"""Synthetic CT-like phantoms with labels, written as real DICOM series and as NIfTI (MSD layout).

Geometry is exact by construction: a phantom is a voxel array ``volume[i, j, k]`` plus a 4x4 RAS affine (the nibabel
convention). :func:`write_dicom_series` converts that to DICOM (LPS, ``PixelSpacing = [row, column]``, rows x columns
= ``volume[:, :, k].T``) so that any correct reader recovers the same array and affine. The DICOM headers carry fake
patient identifiers on purpose, so that de-identification can be tested; ``phantoms.json`` carries none.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, MRImageStorage, UID,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds
from scipy.ndimage import gaussian_filter

from medssl.storage.atomic import atomic_write_text
from medssl.data.nifti import write_nifti

__all__ = ["write_dicom_series", "make_phantom", "phantom_affine", "generate_phantoms"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}
SPACINGS = ((1.0, 1.0, 2.5), (0.8, 0.8, 2.0), (1.2, 1.2, 3.0), (0.7, 0.7, 1.5))


def _ds(values: Sequence[float] | float) -> list[str] | str:
    """Format numbers as valid DICOM decimal strings (<= 16 chars, max precision)."""
    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))  # type: ignore[arg-type]
    return [format_number_as_ds(float(v)) for v in values]  # type: ignore[union-attr]


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    modality: str = "CT",
    rescale: tuple[float, float] = (1.0, -1024.0),
    series_uid: str | None = None,
    series_number: int = 1,
    study_uid: str | None = None,
    patient_name: str = "PHANTOM^TEST",
    patient_id: str = "MEDSSL-PHANTOM-0001",
    transfer_syntax: str = ExplicitVRLittleEndian,
    slice_positions: Sequence[float] | None = None,
    file_order: str = "shuffled",
    seed: int = 0,
    extra: Mapping[str, Any] | Callable[[FileDataset, int], None] | None = None,
) -> list[Path]:
    """Write ``volume`` (``X, Y, Z`` in physical units, e.g. HU) as one single-frame DICOM file per slice.

    Args:
        volume: ``volume[i, j, k]``; ``i`` runs along the DICOM row direction (column index), ``j`` along the column
            direction (row index), ``k`` over slices. A 2D array is written as one slice.
        affine: 4x4 RAS affine mapping ``(i, j, k)`` to mm. Sheared affines are written as given (IPP follows the
            third column), which is how tilted-gantry series look.
        rescale: ``(slope, intercept)``; stored ``int16 = round((value - intercept) / slope)``.
        slice_positions: optional offsets (mm) of each slice from voxel ``(0, 0, 0)`` along the unit third axis,
            one per slice, to make uneven / missing-slice series. ``SliceThickness`` = ``SpacingBetweenSlices`` =
            the (median) distance between slice planes along their normal.
        file_order: ``"shuffled"`` (hash-like hex names, written in random order) or ``"sorted"`` (``IM00001.dcm``).
            Either way names do not have to be trusted: readers must sort by geometry.
        extra: tag overrides ``{keyword: value}`` applied to every file (``None`` deletes the tag), or a callable
            ``f(ds, k)`` that edits slice ``k`` in place (gantry tilt, mixed orientation, ...).

    Returns:
        The file paths in slice order ``k = 0 .. Z-1``.
    """
    vol = np.asarray(volume)
    vol = vol[:, :, None] if vol.ndim == 2 else vol
    aff = np.asarray(affine, dtype=np.float64)
    if vol.ndim != 3 or aff.shape != (4, 4):
        raise ValueError(f"need a 2D/3D volume and a 4x4 affine, got {vol.shape} and {aff.shape}")
    if modality not in _SOP_CLASS or file_order not in ("shuffled", "sorted"):
        raise ValueError(f"modality must be one of {sorted(_SOP_CLASS)}, file_order 'shuffled'|'sorted'")
    nx, ny, nz = vol.shape
    lps = _RAS_TO_LPS @ aff
    sx, sy, sz = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / sx, lps[:3, 1] / sy
    normal = np.cross(row_dir, col_dir)
    cos_tilt = abs(float(np.dot(lps[:3, 2] / sz, normal)))  # < 1 for sheared (tilted) stacks
    if slice_positions is None:
        ipps = [lps[:3, 3] + k * lps[:3, 2] for k in range(nz)]
        step = float(sz) * cos_tilt
    else:
        if len(slice_positions) != nz:
            raise ValueError(f"{len(slice_positions)} slice_positions for {nz} slices")
        ipps = [lps[:3, 3] + float(s) * lps[:3, 2] / sz for s in slice_positions]
        step = (float(np.median(np.abs(np.diff(slice_positions)))) if nz > 1 else float(sz)) * cos_tilt
    slope, inter = (float(v) for v in rescale)
    stored = np.round((vol.astype(np.float64) - inter) / slope)
    if stored.size and (stored.min() < -32768 or stored.max() > 32767):
        raise ValueError(f"stored values [{stored.min()}, {stored.max()}] overflow int16; adjust rescale")
    stored = stored.astype(np.int16)
    key = f"{seed}/{series_number}/{patient_id}".encode()
    digest = hashlib.sha1(stored.tobytes() + aff.tobytes() + key).hexdigest()
    study_uid = study_uid or generate_uid(entropy_srcs=["study", patient_id, digest])
    series_uid = series_uid or generate_uid(entropy_srcs=["series", digest])
    frame_uid = generate_uid(entropy_srcs=["frame-of-reference", study_uid, digest])
    rng = np.random.default_rng(seed)
    if file_order == "shuffled":
        names = [hashlib.sha1(f"{digest}/{series_uid}/{k}".encode()).hexdigest()[:16] + ".dcm" for k in range(nz)]
        order = rng.permutation(nz)
    else:
        names, order = [f"IM{k + 1:05d}.dcm" for k in range(nz)], np.arange(nz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts = UID(transfer_syntax)
    common = {
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SOPClassUID": _SOP_CLASS[modality],
        "StudyDate": "20240102", "SeriesDate": "20240102", "ContentDate": "20240102", "StudyTime": "101500",
        "SeriesTime": "101700", "ContentTime": "101700", "AccessionNumber": f"ACC{digest[:8].upper()}",
        "Modality": modality, "Manufacturer": "medssl-phantom", "InstitutionName": "Phantom General Hospital",
        "ReferringPhysicianName": "REFERRER^FAKE", "StationName": "PHANTOM01", "PatientName": patient_name,
        "PatientID": patient_id, "PatientBirthDate": "19700101", "PatientSex": "O", "PatientAge": "054Y",
        "BodyPartExamined": "ABDOMEN", "SliceThickness": _ds(step), "SpacingBetweenSlices": _ds(step),
        "PatientPosition": "HFS", "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
        "StudyID": "1", "SeriesNumber": int(series_number), "AcquisitionNumber": 1,
        "ImageOrientationPatient": _ds(np.concatenate([row_dir, col_dir])), "FrameOfReferenceUID": frame_uid,
        "PositionReferenceIndicator": "", "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
        "Rows": ny, "Columns": nx, "PixelSpacing": _ds([sy, sx]), "BitsAllocated": 16, "BitsStored": 16,
        "HighBit": 15, "PixelRepresentation": 1, "RescaleIntercept": _ds(inter), "RescaleSlope": _ds(slope),
    }
    if modality == "CT":
        common.update(KVP="120", RescaleType="HU", WindowCenter="40", WindowWidth="400")
    paths = [out / n for n in names]
    pixel_dtype = ">i2" if ts == ExplicitVRBigEndian else "<i2"
    for k in order:
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts.is_compressed else ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(str(paths[k]), {}, file_meta=meta, preamble=b"\0" * 128,
                         is_implicit_VR=meta.TransferSyntaxUID.is_implicit_VR,
                         is_little_endian=meta.TransferSyntaxUID.is_little_endian)
        for key, value in common.items():
            setattr(ds, key, value)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = _ds(ipps[k])
        ds.SliceLocation = _ds(float(np.dot(ipps[k], normal)))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(pixel_dtype).tobytes()
        if callable(extra):
            extra(ds, int(k))
        elif extra:
            for key, value in extra.items():
                if value is not None:
                    setattr(ds, key, value)
                elif key in ds:
                    delattr(ds, key)
        if ts.is_compressed and "PixelData" in ds:
            ds.compress(ts, generate_instance_uid=False)
        ds.save_as(paths[k], enforce_file_format=True)
    return paths


def make_phantom(
    shape: Sequence[int] = (64, 64, 48), spacing: Sequence[float] = (1.0, 1.0, 2.5), *, seed: int = 0,
    spatial_dims: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like abdomen: body (fat rim, ~40 HU tissue) in air, spine (~700 HU), liver- and kidney-like organs
    (label 1) and a hypodense tumour sphere inside the liver (label 2, 20..40 HU darker than the liver, as most liver
    metastases are in portal-venous CT; a mix of dark and bright tumours asked a 1-2-case quick start to segment a
    kind of tumour its labelled cases might not show).

    Sizes are fractions of the field of view in mm (so spheres stay spheres with anisotropic spacing); positions,
    sizes and noise come from ``seed`` only. Returns ``(image float32 with integral HU values, label uint8)`` of
    ``shape``; with ``spatial_dims=2`` a single axial slice ``shape[:2]``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    shp = tuple(int(s) for s in shape[:spatial_dims]) + ((1,) if spatial_dims == 2 else ())
    sp = np.array(tuple(float(s) for s in spacing[:spatial_dims]) + ((1.0,) if spatial_dims == 2 else ()))
    rng = np.random.default_rng(seed)
    fov = np.array(shp) * sp
    if spatial_dims == 2:
        fov[2] = fov[:2].mean()  # the slice is the centre of a body as deep as it is wide
    zoff = 0.0 if spatial_dims == 2 else 1.0
    grid = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shp, sp)], indexing="ij")

    def ellipsoid(centre_frac: Sequence[float], semi_frac: Sequence[float]) -> np.ndarray:
        q = sum(((g - c * f) / (s * f)) ** 2 for g, c, s, f in zip(grid, centre_frac, semi_frac, fov))
        return q <= 1.0

    def jitter(scale: float) -> float:
        return float(rng.uniform(-scale, scale))

    body_semi = (0.45 + jitter(0.02), 0.36 + jitter(0.02), 0.62)
    body = ellipsoid((0, 0, 0), body_semi)
    inner = ellipsoid((0, 0, 0), [0.9 * s for s in body_semi[:2]] + [body_semi[2]])
    liver_c = (-0.18 + jitter(0.03), -0.06 + jitter(0.03), zoff * jitter(0.05))
    liver_s = (0.16 + jitter(0.02), 0.14 + jitter(0.02), 0.3 + jitter(0.05))
    kidney_c = (0.21 + jitter(0.02), 0.12 + jitter(0.02), zoff * jitter(0.05))
    kidney_s = (0.07 + jitter(0.01), 0.06 + jitter(0.01), 0.15 + jitter(0.03))
    liver, kidney = ellipsoid(liver_c, liver_s) & inner, ellipsoid(kidney_c, kidney_s) & inner
    spine = (((grid[0] - jitter(0.01) * fov[0]) ** 2 + (grid[1] - 0.25 * fov[1]) ** 2) <= (0.06 * fov[0]) ** 2) & inner
    # tumour: a ball inside the ball inscribed in the liver ellipsoid, so it lies strictly inside the organ
    r_in = min(s * f for s, f in zip(liver_s, fov))
    direction = rng.normal(size=3) * np.array([1.0, 1.0, zoff])
    direction /= max(float(np.linalg.norm(direction)), 1e-9)
    t_centre = np.array(liver_c) * fov + direction * rng.uniform(0, 0.25) * r_in
    t_radius = rng.uniform(0.35, 0.5) * r_in
    tumour = (sum((g - c) ** 2 for g, c in zip(grid, t_centre)) <= t_radius**2) & liver
    if not tumour.any() and liver.any():  # tiny grids: keep at least the liver voxel nearest the centre
        d2 = sum((g - c) ** 2 for g, c in zip(grid, t_centre))
        tumour.flat[np.argmin(np.where(liver, d2, np.inf))] = True

    image = np.full(shp, -1000.0)
    image[body] = -90.0  # subcutaneous fat rim
    image[inner] = 40.0
    image[liver], image[kidney] = 60.0, 30.0
    image[tumour] = 60.0 - rng.uniform(20, 40)  # hypodense, as most liver metastases in portal-venous CT
    image[spine] = 700.0
    smooth = gaussian_filter(rng.normal(size=shp), sigma=(2.0, 2.0, 2.0 if spatial_dims == 3 else 0.0))
    smooth *= 8.0 / max(float(smooth.std()), 1e-6)
    image += np.where(body, smooth + rng.normal(0.0, 4.0, size=shp), rng.normal(0.0, 3.0, size=shp))
    label = np.zeros(shp, dtype=np.uint8)
    label[(liver | kidney) & ~spine] = 1
    label[tumour] = 2
    if spatial_dims == 2:
        image, label = image[:, :, 0], label[:, :, 0]
    return np.round(image).astype(np.float32), label


def phantom_affine(
    shape: Sequence[int], spacing: Sequence[float], *, angle_deg: float = 0.0, axis: str = "z",
    flip_slices: bool = False,
) -> np.ndarray:
    """RAS affine of an axial acquisition (DICOM IOP ``[1,0,0,0,1,0]``: ``i`` -> patient left, ``j`` -> posterior),
    rotated by ``angle_deg`` about world ``axis`` (``"x"|"y"|"z"``), optionally with reversed slice direction, and
    centred on the world origin."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    p, q = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    rot = np.eye(3)
    rot[p, p], rot[p, q], rot[q, p], rot[q, q] = c, -s, s, c
    direction = rot @ np.diag([-1.0, -1.0, -1.0 if flip_slices else 1.0]) @ np.diag(np.asarray(spacing, float))
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = -direction @ ((np.asarray(shape, float) - 1) / 2)
    return affine


def generate_phantoms(out_dir: str | Path, n: int = 4, *, seed: int = 0, shape: Sequence[int] = (64, 64, 48)) -> dict:
    """Write ``n`` phantom cases as DICOM (``dicom/<case>/*.dcm``) and NIfTI in MSD layout (``nifti/imagesTr``,
    ``nifti/labelsTr``, ``nifti/dataset.json``) plus ``phantoms.json``; return that description.

    Case ``i`` uses spacing ``SPACINGS[i % 4]``; odd cases are oblique (10-25 degrees about world x, y, z in turn);
    cases with ``i % 4 == 2`` have a reversed slice direction. Patient identifiers exist only inside the DICOM files.
    """
    root = Path(out_dir)
    cases: list[dict[str, Any]] = []
    indices: Any = range(n)
    if n > 5:
        from rich.progress import track

        indices = track(indices, description="phantoms", total=n)
    for i in indices:
        case_id, case_seed = f"phantom_{i:03d}", seed * 1000 + i
        rng = np.random.default_rng([seed, i])
        spacing = SPACINGS[i % len(SPACINGS)]
        angle = round(float(rng.uniform(10, 25)), 2) if i % 2 == 1 else 0.0
        axis = ("x", "y", "z")[(i // 2) % 3] if angle else "z"  # case 1 tilts the slice planes
        flip = i % 4 == 2
        affine = phantom_affine(shape, spacing, angle_deg=angle, axis=axis, flip_slices=flip)
        image, label = make_phantom(shape, spacing, seed=case_seed)
        files = write_dicom_series(
            image, affine, root / "dicom" / case_id, series_number=1, patient_name=f"PHANTOM^CASE{i:03d}",
            patient_id=f"MEDSSL-{seed:04d}-{i:03d}", seed=case_seed,
        )
        img_rel, lbl_rel = f"nifti/imagesTr/{case_id}_0000.nii.gz", f"nifti/labelsTr/{case_id}.nii.gz"
        write_nifti(image.astype(np.int16), root / img_rel, affine)
        write_nifti(label, root / lbl_rel, affine)
        cases.append({
            "case_id": case_id, "seed": case_seed, "shape": [int(s) for s in image.shape], "spacing": list(spacing),
            "oblique_deg": angle, "oblique_axis": axis if angle else None, "flipped_slices": flip,
            "affine": affine.tolist(), "modality": "CT", "dicom_dir": f"dicom/{case_id}", "n_dicom_files": len(files),
            "image": img_rel, "label": lbl_rel,
            "label_voxels": {str(v): int((label == v).sum()) for v in (1, 2)},
        })
    desc = {"generator": "medssl.data.phantoms", "version": 1, "seed": seed, "n": n, "cases": cases}
    atomic_write_text(root / "phantoms.json", json.dumps(desc, indent=2))
    dataset = {
        "name": "medssl-phantoms", "description": "synthetic CT-like phantoms (medssl.data.phantoms)",
        "tensorImageSize": "3D", "reference": "synthetic", "licence": "CC0", "release": "1.0",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ", "2": "tumour"},
        "numTraining": n, "numTest": 0, "test": [],
        "training": [{"image": f"./imagesTr/{c['case_id']}_0000.nii.gz", "label": f"./labelsTr/{c['case_id']}.nii.gz"}
                     for c in cases],
    }
    atomic_write_text(root / "nifti" / "dataset.json", json.dumps(dataset, indent=2))
    return desc
