"""One entry point for any scan source, plus a MONAI ``ImageReader`` for DICOM series.

``load_volume(source)`` accepts a NIfTI file, a DICOM folder / file / list of files, and returns a MetaTensor
(X, Y, Z[, T]) with a RAS affine. ``DicomSeriesReader`` lets MONAI ``LoadImage(d)`` pipelines read DICOM series
through medssl's geometry-correct reader (strict policy by default, same options as :func:`read_dicom_series`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.data import ImageReader, MetaTensor
from monai.utils import ensure_tuple

from medssl.data.dicom import read_dicom_series
from medssl.data.nifti import read_nifti

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_volume(source, **dicom_options: Any) -> MetaTensor:
    """NIfTI path -> :func:`read_nifti`; anything else (folder, DICOM file, list of files) -> DICOM reader."""
    if isinstance(source, (str, os.PathLike)) and is_nifti(source):
        return read_nifti(source)
    return read_dicom_series(source, **dicom_options)


class DicomSeriesReader(ImageReader):
    """MONAI reader: ``LoadImaged(keys, reader=DicomSeriesReader(tilt="correct"))`` on folders of DICOM files."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        names = ensure_tuple(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith((".dcm", ".ima")) for n in names)

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs: Any) -> MetaTensor:
        names = ensure_tuple(data)
        source = names[0] if len(names) == 1 else list(names)
        return read_dicom_series(source, **(self.options | kwargs))

    def get_data(self, img: MetaTensor) -> tuple[np.ndarray, dict]:
        meta = {k: v for k, v in img.meta.items() if k not in ("affine",)}
        meta.update({
            "affine": img.affine.numpy().copy(),
            "original_affine": img.affine.numpy().copy(),
            "spatial_shape": np.asarray(img.shape[:3]),
            "original_channel_dim": float("nan") if img.ndim == 3 else -1,
            "space": "RAS",
        })
        return img.as_tensor().numpy(), meta
