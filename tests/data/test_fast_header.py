"""The fast header scan (``header_scan.scan_header``, bound as ``dicom_header._scan``) against pydicom's dataset
path, file by file.

Every file is read twice: as shipped, and with ``_scan`` switched off (so ``read_header`` parses with pydicom). The
two outcomes (the whole :class:`DicomHeader`, or the reason code and message of the error) must be equal, and each
case also asserts whether the fast path was taken, so a scan that silently always falls back cannot pass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from medssl.data import dicom_header
from medssl.data.phantoms import write_dicom_series
from medssl.errors import DicomFileError
from tests.conftest import require_shared

AFFINE = np.diag([0.7, 0.8, 2.5, 1.0])


def outcome(path: Path):
    try:
        return dicom_header.read_header(path, salt="fixed-salt")
    except DicomFileError as exc:
        return ("error", exc.reason, exc.detail)


def both(path: Path, monkeypatch) -> tuple[bool, object, object]:
    """(fast path taken, outcome with the fast scan, outcome through pydicom)."""
    taken = dicom_header._scan(Path(path)) is not None
    fast = outcome(path)
    with monkeypatch.context() as m:
        m.setattr(dicom_header, "_scan", lambda p: None)
        slow = outcome(path)
    return taken, fast, slow


def one_file(tmp_path: Path, transfer_syntax=ExplicitVRLittleEndian, extra=None, rescale=(1.0, -1024.0)) -> Path:
    volume = np.arange(6 * 5 * 2, dtype=np.float64).reshape(6, 5, 2) * 7 - 100
    return write_dicom_series(volume, AFFINE, tmp_path / "s", transfer_syntax=transfer_syntax, extra=extra,
                              rescale=rescale, file_order="sorted")[0]


def nested_sequence(ds, _k):
    """Undefined-length sequences, nested two deep, before the pixel data (pydicom's default encoding)."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "T-D0050", "SRT"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.AnatomicRegionSequence = Sequence([])
    ds.add(DataElement(0x00291010, "OB", b"\x01\x02" * 600))  # a large private blob: skipped, never decoded


def odd_numbers(ds, _k):
    """Strings pydicom reads leniently: padded, signed, exponents, one value where two are expected."""
    ds.SliceThickness = " 2.50"
    ds.RescaleIntercept = "-1.024E3"
    ds.SeriesNumber = "+12"
    ds.PixelSpacing = "0.7"
    ds.ImageType = "ORIGINAL"
    ds.EchoNumbers = "3"
    ds.TriggerTime = "1.5\\2.5"
    ds.AcquisitionTime = "101500.25 "
    ds.TemporalPositionIdentifier = "2"


def empty_values(ds, _k):
    ds.Modality = ""
    ds.BodyPartExamined = ""
    ds.SeriesNumber = None
    ds.SpacingBetweenSlices = None
    ds.Manufacturer = None
    ds.PatientID = ""


@pytest.mark.parametrize("name,transfer_syntax,extra,fast", [
    ("explicit", ExplicitVRLittleEndian, None, True),
    ("implicit", ImplicitVRLittleEndian, None, True),
    ("implicit_sequences", ImplicitVRLittleEndian, nested_sequence, True),
    ("explicit_sequences", ExplicitVRLittleEndian, nested_sequence, True),
    ("odd_numbers", ExplicitVRLittleEndian, odd_numbers, True),
    ("empty_values", ExplicitVRLittleEndian, empty_values, True),
    ("padded_text", ExplicitVRLittleEndian,  # odd lengths: written with a trailing space that reading removes
     {"Manufacturer": "Philips", "PatientID": "P-001", "BodyPartExamined": "CHEST", "SeriesInstanceUID": "1.2.34"},
     True),
    ("rle_encapsulated", RLELossless, None, True),
    ("multiframe", ExplicitVRLittleEndian, {"NumberOfFrames": "1"}, True),
    ("latin1_text", ExplicitVRLittleEndian, {"SpecificCharacterSet": "ISO_IR 100", "Manufacturer": "Müller"}, False),
    ("multi_valued_modality", ExplicitVRLittleEndian, {"Modality": "CT\\MR"}, False),
    ("mosaic", ExplicitVRLittleEndian, {"ImageType": ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]}, False),
    ("big_endian", ExplicitVRBigEndian, None, False),
    ("deflated", DeflatedExplicitVRLittleEndian, None, False),
])
def test_fast_scan_matches_pydicom(tmp_path, monkeypatch, name, transfer_syntax, extra, fast):
    path = one_file(tmp_path, transfer_syntax, extra)
    taken, got, want = both(path, monkeypatch)
    assert taken is fast
    assert got == want
    assert isinstance(want, dicom_header.DicomHeader)


@pytest.mark.parametrize("value", [b"abc ", b"1.5\\\\", b"\t2.0", b"1_00"])
def test_numbers_pydicom_reads_its_own_way_fall_back(tmp_path, monkeypatch, value):
    """Values outside the plain decimal-string grammar are left to pydicom, whatever it makes of them."""
    path = one_file(tmp_path, extra={"SliceThickness": "9.75"})
    data = path.read_bytes()
    assert data.count(b"9.75") == 1
    path.write_bytes(data.replace(b"9.75", value))
    taken, got, want = both(path, monkeypatch)
    assert not taken and got == want


def test_enhanced_multiframe_falls_back(tmp_path, monkeypatch):
    def enhanced(ds, _k):
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0, 0, 0]
        frame.PlanePositionSequence = Sequence([position])
        ds.PerFrameFunctionalGroupsSequence = Sequence([frame])

    taken, got, want = both(one_file(tmp_path, extra=enhanced), monkeypatch)
    assert not taken and got == want and got.enhanced_frames


def test_damaged_files_give_the_same_error(tmp_path, monkeypatch):
    path = one_file(tmp_path, extra=nested_sequence)
    data = path.read_bytes()
    offset = dicom_header.read_header(path).pixel_offset
    cases = {"in_meta": 140, "in_sequence": data.index(b"1.2.3.4") + 3, "in_pixels": offset + 11,
             "before_pixels": offset - 12, "empty": 0}
    for name, cut in cases.items():
        broken = tmp_path / f"{name}.dcm"
        broken.write_bytes(data[:cut])
        taken, got, want = both(broken, monkeypatch)
        assert not taken, name
        assert got == want and got[0] == "error", name
    no_preamble = tmp_path / "no_preamble.dcm"
    no_preamble.write_bytes(data[128:])  # starts at "DICM": neither a Part-10 file nor a legacy stream
    taken, got, want = both(no_preamble, monkeypatch)
    assert not taken and got == want


def test_pixel_offset_points_at_the_pixels(tmp_path):
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        path = one_file(tmp_path / ts, ts, nested_sequence)
        header = dicom_header.read_header(path)
        raw = path.read_bytes()[header.pixel_offset:header.pixel_offset + header.pixel_length]
        import pydicom

        assert raw == pydicom.dcmread(path).PixelData


@pytest.mark.realdata
def test_fast_scan_matches_pydicom_on_real_files(monkeypatch):
    root = require_shared("dicom")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".json", ".txt",
                                                                                             ".nii", ".gz"))
    taken = 0
    for path in files:
        fast, got, want = both(path, monkeypatch)
        assert got == want, path
        taken += fast
    assert len(files) > 300 and taken > 0.7 * len(files)  # most real files take the fast path
