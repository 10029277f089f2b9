"""Fast pixel paths against the general ones, bit for bit.

- ``dicom._decode_native`` (native little-endian pixel bytes read with ``np.fromfile``) against pydicom's
  ``pixel_array`` on signed/unsigned 8/16/32-bit, bits stored below bits allocated with junk in the unused high bits,
  multi-frame and implicit VR files; compressed and big-endian files must fall back.
- ``DicomVolume.values`` (16-bit rescale) against the int32 / float64 reference it replaces, per-slice slopes and
  intercepts included.
- ``read_dicom_series`` end to end with every fast path on versus all of them off, on synthetic and real series.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from medssl.data import dicom, dicom_header
from medssl.data.dicom import DicomVolume, read_dicom_series
from medssl.data.dicom_header import read_header
from medssl.data.phantoms import write_dicom_series
from medssl.errors import DicomFileError
from tests.conftest import require_shared

AFFINE = np.diag([0.7, 0.8, 2.5, 1.0])


def general(path: Path) -> np.ndarray:
    """pydicom's decoder, shaped (frames, rows, columns) in native byte order, as ``_decode`` returns it."""
    arr = np.asarray(pydicom.dcmread(path).pixel_array)
    arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr[None] if arr.ndim == 2 else arr


def write_pixels(path: Path, stored: np.ndarray, *, bits_stored: int, signed: bool, ts=ExplicitVRLittleEndian) -> Path:
    """One file holding ``stored`` (frames, rows, columns) exactly as given (junk high bits included)."""
    frames, rows, cols = stored.shape
    bits = stored.dtype.itemsize * 8

    def fields(ds, _k):
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored = rows, cols, bits, bits_stored
        ds.HighBit, ds.PixelRepresentation = bits_stored - 1, int(signed)
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = stored.astype(stored.dtype.newbyteorder(">" if ts == ExplicitVRBigEndian else "<")).tobytes()

    out = write_dicom_series(np.zeros((cols, rows, 1)), AFFINE, path, transfer_syntax=ts, extra=fields,
                             file_order="sorted", rescale=(1.0, 0.0))
    return out[0]


CASES = {  # name: (dtype, bits stored, signed, frames)
    "int16": (np.int16, 16, True, 1),
    "uint16": (np.uint16, 16, False, 1),
    "uint8": (np.uint8, 8, False, 1),
    "int8": (np.int8, 8, True, 1),
    "int32": (np.int32, 32, True, 1),
    "uint32": (np.uint32, 32, False, 1),
    "12bit_signed_junk_high_bits": (np.uint16, 12, True, 1),
    "12bit_unsigned_junk_high_bits": (np.uint16, 12, False, 1),
    "multiframe_int16": (np.int16, 16, True, 3),
    "multiframe_10bit_signed": (np.uint16, 10, True, 4),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
def test_native_fast_path_matches_pydicom(tmp_path, name, ts):
    dtype, bits_stored, signed, frames = CASES[name]
    info = np.iinfo(dtype)
    rng = np.random.default_rng(len(name))
    stored = rng.integers(info.min, info.max, size=(frames, 9, 7), endpoint=True, dtype=dtype)
    stored.flat[:2] = info.min, info.max  # the extremes, with all high bits set in the junk cases
    path = write_pixels(tmp_path, stored, bits_stored=bits_stored, signed=signed, ts=ts)
    fast = dicom._decode_native(read_header(path))
    assert fast is not None
    want = general(path)
    assert fast.dtype == want.dtype and fast.shape == want.shape
    assert np.array_equal(fast, want)
    if bits_stored < stored.dtype.itemsize * 8:
        assert not np.array_equal(fast.astype(np.int64), stored.astype(np.int64))  # the junk really was removed


@pytest.mark.parametrize("ts", [RLELossless, ExplicitVRBigEndian], ids=["rle", "big_endian"])
def test_other_encodings_fall_back_to_pydicom(tmp_path, ts):
    stored = np.arange(-40, 23, dtype=np.int16).reshape(1, 9, 7) * 97
    path = write_pixels(tmp_path, stored, bits_stored=16, signed=True, ts=ts)
    header = read_header(path)
    assert dicom._decode_native(header) is None
    assert np.array_equal(dicom._decode(header), general(path))
    assert np.array_equal(dicom._decode(header), stored)


def reference_values(v: DicomVolume) -> np.ndarray:
    """The rescale in exact arithmetic: Python integers when slope and intercept are whole, then the smallest int
    dtype that holds the result, else float32 via float64."""
    if v.uniform_rescale == (1.0, 0.0) and np.issubdtype(v.raw.dtype, np.integer):
        return v.raw
    s, i = v.slopes[None, None], v.intercepts[None, None]
    whole = np.all(np.mod(v.slopes, 1) == 0) and np.all(np.mod(v.intercepts, 1) == 0)
    if whole and np.issubdtype(v.raw.dtype, np.integer) and np.abs(v.intercepts).max() < 2**40:
        exact = v.raw.astype(object) * s.astype(np.int64).astype(object) + i.astype(np.int64).astype(object)
        for dtype in (np.int16, np.int32):
            if exact.min() >= np.iinfo(dtype).min and exact.max() <= np.iinfo(dtype).max:
                return exact.astype(dtype)
    return (v.raw.astype(np.float64) * s + i).astype(np.float32)


# intercepts beyond int32 (2**31 + 5, -2**40, 1e20): no integer path may wrap around or cast out of range
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int8, np.int32])
def test_rescale_matches_reference(dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    used_16bit = 0
    for trial in range(40):
        nz, nt = int(rng.integers(1, 5)), int(rng.integers(1, 3))
        shape = (6, 5, nz) if nt == 1 else (6, 5, nz, nt)
        lo, hi = (info.min, info.max) if trial % 3 == 0 else (max(info.min, -2000), min(info.max, 3000))
        # (Z, T, rows, cols) memory transposed to (X, Y, Z, T), as load_pixels lays raw out
        raw = rng.integers(lo, hi, size=(nz, nt, shape[1], shape[0]), endpoint=True).astype(dtype)
        raw = raw.transpose(3, 2, 0, 1)[..., 0] if nt == 1 else raw.transpose(3, 2, 0, 1)
        per = shape[2:]
        slopes = rng.choice([1.0, 2.0, -1.0, 3.0, 0.5, 16384.0], size=per) if trial % 2 else np.full(per, 1.0)
        inters = rng.choice([0.0, -1024.0, 1000.0, -32768.0, 40000.0, 0.25, 1e20, -2.0**40, 2.0**31 + 5],
                            size=per) if trial % 4 else np.full(per, -1024.0)
        volume = DicomVolume(raw=raw, slopes=slopes, intercepts=inters, geometry=None)
        got, want = volume.values(), reference_values(volume)
        assert got.dtype == want.dtype and got.strides == want.strides
        assert np.array_equal(got, want)
        used_16bit += volume._whole_rescale_16() is not None
    assert used_16bit > 0 or dtype == np.int32  # the fast path was exercised (never for 32-bit stored values)


def test_intercept_beyond_int32_does_not_wrap():
    """16-bit stored values with intercept 2**31 + 5 used to be rescaled in int32 and wrap to negative values."""
    raw = np.array([0, 1, 65535], dtype=np.uint16).reshape(3, 1, 1)
    got = DicomVolume(raw=raw, slopes=np.ones(1), intercepts=np.full(1, 2.0**31 + 5), geometry=None).values()
    assert got.dtype == np.float32 and got.min() > 0
    assert np.array_equal(got.ravel(), (np.array([0, 1, 65535]) + 2.0**31 + 5).astype(np.float32))
    near = DicomVolume(raw=raw, slopes=np.ones(1), intercepts=np.full(1, 2.0**31 - 65536.0), geometry=None).values()
    assert near.dtype == np.int32 and int(near.max()) == 2**31 - 1  # still exact in int32 where it fits


def all_general(monkeypatch) -> None:
    monkeypatch.setattr(dicom_header, "_scan", lambda path: None)
    monkeypatch.setattr(dicom, "_decode_native", lambda header: None)
    monkeypatch.setattr(DicomVolume, "_whole_rescale_16", lambda self: None)


def assert_same_series(fast, slow) -> None:
    assert fast.dtype == slow.dtype and tuple(fast.shape) == tuple(slow.shape)
    assert np.array_equal(fast.numpy(), slow.numpy())
    assert np.array_equal(fast.affine.numpy(), slow.affine.numpy())
    skip = {"filename_or_obj", "affine", "original_affine", "spatial_shape"}
    assert {k: v for k, v in fast.meta.items() if k not in skip} == {k: v for k, v in slow.meta.items()
                                                                    if k not in skip}


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_series_with_per_slice_rescale_identical(tmp_path, monkeypatch, ts):
    volume = np.linspace(-1000, 2000, 16 * 12 * 5).reshape(16, 12, 5)

    def per_slice(ds, k):
        ds.RescaleSlope, ds.RescaleIntercept = ("1", "2", "1", "3", "1")[k], str(-1024 + 10 * k)

    folder = tmp_path / "s"
    write_dicom_series(volume, AFFINE, folder, transfer_syntax=ts, extra=per_slice)
    fast = read_dicom_series(folder, salt="x")
    with monkeypatch.context() as m:
        all_general(m)
        slow = read_dicom_series(folder, salt="x")
    assert_same_series(fast, slow)


@pytest.mark.realdata
@pytest.mark.parametrize("rel,options", [
    ("dcm_qa_nih/In/20180918GE/mr_0004", {}),
    ("dcm_qa_ct/In/GE", {"tilt": "correct", "uneven": "resample"}),
    ("dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm", {}),
    ("dcm_qa_12bit/In/12bitUnsigned_0x0F0F.dcm", {}),
])
def test_real_series_identical(monkeypatch, rel, options):
    source = require_shared("dicom", *rel.split("/"))
    fast = read_dicom_series(source, salt="x", **options)
    with monkeypatch.context() as m:
        all_general(m)
        slow = read_dicom_series(source, salt="x", **options)
    assert_same_series(fast, slow)


def header_or_none(path: Path):
    """Header of an image file; None for non-image or damaged files (other tests' business)."""
    try:
        return read_header(path)
    except DicomFileError:
        return None


@pytest.mark.realdata
def test_real_native_files_decode_identically():
    root = require_shared("dicom")
    compared = 0
    for path in sorted(root.rglob("*.dcm")):
        header = header_or_none(path)
        fast = dicom._decode_native(header) if header is not None and header.samples_per_pixel == 1 else None
        if fast is None:
            continue
        want = general(path)
        assert fast.dtype == want.dtype and np.array_equal(fast, want.reshape(fast.shape)), path
        compared += 1
    assert compared > 100
