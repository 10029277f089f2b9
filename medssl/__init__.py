"""medssl: self-supervised learning on medical images.

Public API (data layer)::

    from medssl.data import read_dicom_series, read_nifti, write_nifti, find_series
"""
from __future__ import annotations

__version__ = "0.1.0"

from medssl.errors import (  # noqa: F401
    CacheError,
    DicomFileError,
    DicomSeriesError,
    MedsslError,
    NiftiError,
    Reason,
)
