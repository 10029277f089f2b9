"""DICOM series -> NIfTI conversion (``medssl convert``).

Voxel data and affine follow the reader's geometry; when every slice shares RescaleSlope/Intercept the stored
integers are written with ``scl_slope``/``scl_inter`` (as dcm2niix does) so scaled values are bit-identical to the
DICOM's; otherwise rescaled values are written as float32 (int16/int32 when slopes and intercepts are whole). A
de-identified JSON sidecar (modality, series key, geometry warnings; no names, IDs, dates or UIDs) is written beside
the image.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medssl.data.deid import safe_metadata
from medssl.data.dicom import read_dicom_volume
from medssl.data.nifti import write_nifti


def _sidecar_path(out: Path) -> Path:
    name = out.name[:-7] if out.name.endswith(".nii.gz") else out.stem
    return out.with_name(name + ".json")


def convert_series(source, out: str | Path, *, series=None, tilt="error", uneven="error", fourd="stack",
                   salt: str | None = None) -> list[Path]:
    """Convert one stack of ``source`` to ``out`` (.nii or .nii.gz). Returns the written image paths
    (several when ``fourd="split"``: ``<name>_t0000.nii.gz`` ...)."""
    out = Path(out)
    split = fourd == "split"
    volume, affine, meta = read_dicom_volume(source, series=series, tilt=tilt, uneven=uneven,
                                             fourd="stack" if split else fourd, salt=salt)
    scl = volume.uniform_rescale
    if scl is not None and np.issubdtype(volume.raw.dtype, np.integer):
        data = volume.raw
        if data.dtype == np.uint16 and data.max() <= np.iinfo(np.int16).max:
            data = data.astype(np.int16)  # dcm2niix stores such data as int16 too

        def writer(arr: np.ndarray, path: Path) -> Path:
            if scl == (1.0, 0.0):
                return write_nifti(arr, path, affine)
            # stored integers + scl_slope/scl_inter: readers recover exactly raw * slope + inter
            return write_nifti(arr.astype(np.float64) * scl[0] + scl[1], path, affine, dtype=arr.dtype, scl=scl)
    else:
        data = volume.values()

        def writer(arr: np.ndarray, path: Path) -> Path:
            return write_nifti(arr, path, affine)

    written: list[Path] = []
    if split and data.ndim == 4:
        base = out.name[:-7] if out.name.endswith(".nii.gz") else out.stem
        suffix = ".nii.gz" if out.name.endswith(".nii.gz") else ".nii"
        for t in range(data.shape[3]):
            written.append(writer(data[..., t], out.with_name(f"{base}_t{t:04d}{suffix}")))
    else:
        written.append(writer(data, out))
    sidecar = safe_metadata(meta) | {"warnings": meta.get("warnings", []), "shape": list(data.shape),
                                     "spacing": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]}
    _sidecar_path(out).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    return written
