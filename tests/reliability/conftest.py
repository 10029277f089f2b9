"""Generators shared by the reliability tests: small DICOM series of known values, pydicom's bundled test files
(looked up locally only: ``get_testdata_file`` downloads names it does not bundle, which must never happen in a
test), and gdcm transcoding to the compressed syntaxes pydicom cannot encode itself."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medssl.data.phantoms import write_dicom_series

PATIENT_FREE_AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])
BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"


def ramp(shape=(16, 16, 6)) -> np.ndarray:
    """Values that encode their voxel index (any transposition or reordering changes them)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (i + 20 * j + 400 * k - 1000).astype(np.float64)


def series(out: Path, n: int = 6, number: int = 1, vol: np.ndarray | None = None, **kw) -> list[Path]:
    """A 16x16xN axial series (1 x 1 x 2.5 mm, identity orientation) in slice order; the reader returns ``vol``."""
    vol = ramp((16, 16, n)) if vol is None else vol
    kw.setdefault("file_order", "sorted")
    return write_dicom_series(vol, PATIENT_FREE_AFFINE, out, series_number=number, **kw)


def bundled(name: str) -> Path:
    """A file shipped inside pydicom's wheel (skip, never download, when a pydicom build lacks it)."""
    path = BUNDLED.joinpath(*name.split("/"))
    if not path.exists():
        pytest.skip(f"pydicom does not bundle {name}")
    return path


def copy_bundled(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundled(name), dest)
    return dest


def gdcm_transcode(src: Path, dst: Path, syntax: str) -> Path:
    """Re-encode one file with gdcm (``syntax``: a ``gdcm.TransferSyntax`` attribute name, e.g. ``JPEGBaselineProcess1``)."""
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read(), f"gdcm cannot read {src}"
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change(), f"gdcm cannot encode {syntax}"
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst
