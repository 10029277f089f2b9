"""Data layer: DICOM/NIfTI readers, archive index, preprocessing cache, datasets, phantoms.

The public names below are imported lazily (on first use), so importing one submodule stays cheap::

    from medssl.data import read_dicom_series, read_nifti, write_nifti, find_series, build_index
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS = {
    "find_series": "medssl.data.dicom",
    "read_dicom_series": "medssl.data.dicom",
    "read_nifti": "medssl.data.nifti",
    "write_nifti": "medssl.data.nifti",
    "build_index": "medssl.data.index",
    "load_index": "medssl.data.index",
    "series_files": "medssl.data.index",
    "generate_phantoms": "medssl.data.phantoms",
    "write_dicom_series": "medssl.data.phantoms",
    "MedMNISTDataset": "medssl.data.medmnist",
    "load_medmnist_split": "medssl.data.medmnist",
    "download_medmnist": "medssl.data.medmnist",
    "PreprocessPlan": "medssl.data.plan",
    "PreprocessCache": "medssl.data.cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medssl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
