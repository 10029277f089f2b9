"""Bad-input catalogue: every case gives a typed error naming the file and its reason, or a reason-coded row in the
index, or (where the input is valid but awkward) exactly the right volume. Never a crash of the crawl, never a
silently wrong volume.

Each case is read twice: **direct** (``load_volume`` / ``check_same_grid`` on the bad file or folder) and **crawl**
(``build_index`` on an archive holding the case under ``bad/`` next to a good 16x16x6 series under ``good/``, which
must still be indexed). ``ok`` = reads, values checked against a reference; a reason code = ``MedsslError`` with
that exact reason whose ``files`` include the offending file(s). Crawl column: reason codes of the rows under
``bad/`` (``indexed`` = no reason; ``-`` = not an archive case: NIfTI is not crawled).

====================================  ===========================  ==============================================
case                                  direct                       crawl (rows under bad/)
====================================  ===========================  ==============================================
zero_byte_file                        empty_file                   empty_file
truncated_header                      truncated                    truncated
truncated_pixel_data                  truncated                    truncated
truncated_slice_in_series             damaged_member               truncated, damaged_member x5 (series refused)
truncated_copy_elsewhere              ok (intact series whole)     indexed x6, truncated
truncated_slice_resent_intact         ok (re-sent copy fills it)   indexed x6, truncated
truncated_scout_of_the_series         ok (scout is not a slice)    indexed x6, truncated
non_utf8_file_name                    ok (file read)               indexed x6 (name escaped)
pixel_spacing_zero                    bad_geometry                 bad_geometry x6
pixel_spacing_negative                bad_geometry                 bad_geometry x6
pixel_spacing_nan                     bad_geometry                 bad_geometry x6
orientation_all_zero                  bad_geometry                 bad_geometry x6
orientation_not_orthogonal            bad_geometry                 bad_geometry x6
orientation_not_unit                  bad_geometry                 bad_geometry x6
truncated_pydicom_MR                  truncated                    truncated
not_dicom_with_dcm_name               not_dicom                    not_dicom
sr_without_pixels                     no_pixel_data                no_pixel_data
rt_plan_without_pixels                no_pixel_data                no_pixel_data
rt_struct_without_pixels              no_pixel_data                no_pixel_data
presentation_state_without_pixels     no_pixel_data                no_pixel_data
rt_dose_grid                          not_anatomy                  not_anatomy
segmentation_labels                   not_anatomy                  not_anatomy x6
dicomdir                              dicomdir                     dicomdir
size_bomb_rows_columns                size_limit                   size_limit
size_bomb_frames                      size_limit                   size_limit
rgb_ultrasound                        unsupported_photometric      unsupported_photometric
palette_ultrasound                    unsupported_photometric      unsupported_photometric
ybr_jpeg_multiframe_ultrasound        unsupported_photometric      unsupported_photometric
unsupported_syntax_mpeg2              unsupported_transfer_syntax  unsupported_transfer_syntax x3
undecodable_jpeg_stream               undecodable                  indexed x6 (header-only crawl; read fails)
jpeg_baseline                         ok (within 3 of original)    indexed x4
jpeg_lossless_sv1                     ok (exact)                   indexed x4
jpeg_lossless_p14                     ok (exact)                   indexed x4
jpeg_ls_lossless_MR_small             ok (== MR_small)             indexed
jpeg2000_lossless_MR_small            ok (== MR_small)             indexed
jpeg2000_lossy_CT                     ok (== pydicom decode)       indexed
rle_MR_small                          ok (== MR_small)             indexed
jpeg_extended_without_geometry        missing_geometry             missing_geometry
signed_12bit_with_rescale             ok (sign-extended, exact)    indexed x6
per_slice_rescale                     ok (exact, float slopes)     indexed x6
missing_slice                         missing_slice                missing_slice x5
uneven_spacing                        uneven_spacing               uneven_spacing x6
duplicate_slice_position              duplicate_position           duplicate_position x7
gantry_tilt                           gantry_tilt                  gantry_tilt x6
mixed_orientation_one_series          mixed_orientation            mixed_orientation x6
localizer_mixed_into_series           ok (localizer left out)      indexed x6, localizer x2
differing_rows_columns                inconsistent_shape           inconsistent_shape x6
multi_echo_one_uid                    ambiguous_series             indexed x12 (two series, one per echo)
multi_phase_one_uid                   ok (4D, phases in order)     indexed x12 (one 4D series)
multi_phase_missing_slice             inconsistent_timepoints      inconsistent_timepoints x11
enhanced_multiframe                   ok (exact)                   indexed
legacy_multiframe_without_positions   missing_geometry             missing_geometry
enhanced_frame_count_mismatch         inconsistent_shape           inconsistent_shape
symlink_loop_files                    symlink_loop                 symlink_loop x2
symlink_loop_folder                   ok (good series once)        symlink_loop
unreadable_permissions (non-root)     permission_denied            permission_denied
empty_folder                          empty_series                 (no rows)
nifti_truncated                       bad_nifti_header             -
nifti_broken_header                   bad_nifti_header             -
nifti_zero_dimension                  bad_nifti_header             -
nifti_non_orthonormal_affine          non_orthonormal_affine       -
nifti_label_image_shape_mismatch      shape_mismatch               -
====================================  ===========================  ==============================================
"""
from __future__ import annotations

import csv
import gzip
import os
import shutil
import struct
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from medssl.data.index import build_index
from medssl.data.loading import load_volume
from medssl.data.nifti import check_same_grid, write_nifti
from medssl.errors import MedsslError
from tests.data.test_dicom import _enhanced_multiframe
from tests.reliability.conftest import (
    bundled,
    copy_bundled,
    gdcm_transcode,
    ramp,
    series,
)

NIFTI_AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


@dataclass
class Built:
    """What a builder wrote: the path to read directly, the files an error must name, and a value check."""

    read: Path
    offending: list[Path] = field(default_factory=list)
    check: Callable | None = None  # check(volume) for inputs that must read correctly
    label: Path | None = None  # NIfTI pairs: compared with check_same_grid instead of read


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], Built]
    direct: str  # "ok" or a reason code
    crawl: dict | None  # Counter of reasons ("" = indexed) of the rows under bad/; None = not crawled
    root_only_differs: bool = False


# ----------------------------------------------------------------------------------------- builders: files
def _slice_bytes(d: Path) -> bytes:
    """Bytes of one good slice, written to a scratch folder that is removed again."""
    data = series(d / "_scratch", n=1)[0].read_bytes()
    shutil.rmtree(d / "_scratch")
    return data


def zero_byte(d: Path) -> Built:
    p = d / "empty.dcm"
    p.write_bytes(b"")
    return Built(p, [p])


def truncated_header(d: Path) -> Built:
    data = _slice_bytes(d)
    p = d / "cut_in_header.dcm"
    p.write_bytes(data[:300])
    return Built(p, [p])


def truncated_pixels(d: Path) -> Built:
    data = _slice_bytes(d)
    p = d / "cut_in_pixels.dcm"
    p.write_bytes(data[:-100])
    return Built(p, [p])


def file_case(name: str, rel: str | None = None) -> Callable[[Path], Built]:
    def build(d: Path) -> Built:
        p = copy_bundled(name, d / (rel or Path(name).name))
        return Built(p, [p])

    build.__name__ = f"copy_{name}"
    return build


def truncated_member(d: Path) -> Built:
    """The last slice of a series arrived cut short: the series must be refused, not read one slice short."""
    files = series(d)
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) - 200])
    return Built(d, [files[-1]])


def truncated_copy_elsewhere(d: Path) -> Built:
    """A stray truncated copy of one slice elsewhere in the archive: the intact series stays whole and usable."""
    vol = ramp()
    files = series(d / "series", vol=vol)
    data = files[3].read_bytes()
    (d / "stray").mkdir()
    cut = d / "stray" / "copy_of_slice4.dcm"
    cut.write_bytes(data[: len(data) - 200])

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)

    return Built(d, [cut], check)


def truncated_resent(d: Path) -> Built:
    """The last slice arrived cut short and was sent again, intact, under a new SOPInstanceUID: the re-sent copy
    takes its place (same position)."""
    vol = ramp()
    files = series(d / "first", vol=vol)
    ds = pydicom.dcmread(files[-1])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    (d / "resent").mkdir()
    ds.save_as(d / "resent" / "IM00006.dcm")
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) - 200])

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)

    return Built(d, [files[-1]], check)


def truncated_scout(d: Path) -> Built:
    """A sagittal localizer slice of the same series arrived cut short: it claims the series UID, but its header
    still says it is a localizer in another orientation, so the axial stack keeps all its slices."""
    vol = ramp()
    files = series(d, vol=vol)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    sag = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    from medssl.data.phantoms import write_dicom_series

    [scout] = write_dicom_series(ramp((16, 16, 1)), sag, d / "scout", series_uid=uid, series_number=1,
                                 extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    data = scout.read_bytes()
    scout.write_bytes(data[: len(data) - 200])

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)

    return Built(d, [scout], check)


def non_utf8_name(d: Path) -> Built:
    """One slice's file name is not valid UTF-8 (Latin-1 bytes from an old archive): read and indexed like any."""
    vol = ramp()
    files = series(d, vol=vol)
    os.rename(files[2], os.fsencode(str(files[2].parent)) + b"/IM\xe9\xff\xfe.dcm")

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)

    return Built(d, [], check)


def degenerate(**extra) -> Callable[[Path], Built]:
    """A series whose every slice carries the given degenerate geometry value."""
    def build(d: Path) -> Built:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pydicom warns writing "nan" as DS: that is the point
            files = series(d, extra=extra)
        return Built(d, files)

    build.__name__ = "degenerate_" + "_".join(extra)
    return build


def not_dicom(d: Path) -> Built:
    p = d / "IM0001.dcm"
    p.write_text("this is a scanned referral letter, not an image\n" * 20)
    return Built(p, [p])


def presentation_state(d: Path) -> Built:
    """A grayscale softcopy presentation state: a valid DICOM object that references images and holds none."""
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.dcmread(series(d / "_scratch", n=1)[0])
    shutil.rmtree(d / "_scratch")
    del ds.PixelData
    for tag in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, tag)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State Storage
    ds.Modality = "PR"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    p = d / "PS0001.dcm"
    ds.save_as(p, enforce_file_format=True)
    return Built(p, [p])


def segmentation_labels(d: Path) -> Built:
    """A DICOM SEG-class series: binary label frames with full image geometry, which must not enter a pretraining
    set as if they were scans (the class alone decides; the pixels look like any other stack)."""
    files = series(d)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
        ds.Modality = "SEG"
        ds.save_as(f, enforce_file_format=True)
    return Built(d, files)


def legacy_multiframe(d: Path) -> Built:
    """Three frames behind one ImagePositionPatient (no per-frame positions): neither one slice nor a made-up stack."""
    p = series(d, n=1)[0]
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    ds.save_as(p)
    return Built(p, [p])


def enhanced_frame_count(d: Path) -> Built:
    """An enhanced object declaring 8 frames with 6 per-frame groups (and 6 frames of pixels)."""
    built = enhanced(d)
    ds = pydicom.dcmread(built.read)
    ds.NumberOfFrames = 8
    ds.PixelData = ds.PixelData + bytes(2 * 16 * 16 * 2)
    ds.save_as(built.read)
    return Built(built.read, [built.read])


def size_bomb(rows: int, cols: int, frames: int) -> Callable[[Path], Built]:
    def build(d: Path) -> Built:
        p = series(d, n=1)[0]
        ds = pydicom.dcmread(p)
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
        ds.save_as(p)
        return Built(p, [p])

    return build


def mpeg2(d: Path) -> Built:
    def video(ds, k):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = encapsulate([ds.PixelData])

    files = series(d, n=3, extra=video)
    return Built(d, files)


def undecodable(d: Path) -> Built:
    files = series(d)
    ds = pydicom.dcmread(files[2])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit  # claims JPEG, holds garbage
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0garbage-not-a-jpeg-stream"])
    ds.save_as(files[2], enforce_file_format=True)
    return Built(d, [files[2]])


# --------------------------------------------------------------------------------- builders: compressed
def _eight_bit(ds, k):
    """Store the slice as unsigned 8-bit (JPEG baseline needs 8 bits)."""
    arr = np.frombuffer(ds.PixelData, "<i2").astype(np.int64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.clip(arr, 0, 255).astype(np.uint8).tobytes()


def transcoded(syntax: str, exact: bool, bits8: bool = False) -> Callable[[Path], Built]:
    def build(d: Path) -> Built:
        shape = (16, 16, 4)
        vol = (ramp(shape) + 1000) % 250 if bits8 else ramp(shape)
        kw = {"extra": _eight_bit, "rescale": (1.0, 0.0)} if bits8 else {}
        src = series(d / "_scratch", n=4, vol=vol, **kw)
        files = [gdcm_transcode(f, d / f.name, syntax) for f in src]
        shutil.rmtree(d / "_scratch")
        ts = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert ts.is_compressed, ts

        def check(img):
            out = img.numpy().astype(np.float64)
            assert out.shape == vol.shape
            if exact:
                np.testing.assert_array_equal(out, vol)
            else:  # lossy: close to the original, and what an independent decoder (Pillow) makes of the stream
                assert np.abs(out - vol).max() <= 3, np.abs(out - vol).max()

        return Built(d, files, check)

    return build


def same_as_mr_small(name: str) -> Callable[[Path], Built]:
    def build(d: Path) -> Built:
        p = copy_bundled(name, d / name)

        def check(img):
            ref = load_volume(bundled("MR_small.dcm")).numpy()
            np.testing.assert_array_equal(img.numpy(), ref)
            assert pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed

        return Built(p, [p], check)

    return build


def j2k_lossy_ct(d: Path) -> Built:
    p = copy_bundled("693_J2KI.dcm", d / "693_J2KI.dcm")

    def check(img):
        ds = pydicom.dcmread(p)
        ref = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(img.numpy()[:, :, 0], ref.T)  # (columns, rows) = reader's (X, Y)
        assert img.shape == (512, 512, 1) and float(np.median(img.numpy())) > -1100  # CT numbers, not raw

    return Built(p, [p], check)


# ----------------------------------------------------------------------------------------- builders: values
def signed_12bit(d: Path) -> Built:
    """BitsStored 12 signed, unused high bits holding garbage (0xF000 / 0x5000); rescale 2x - 100."""
    rng = np.random.default_rng(0)
    stored = rng.integers(-2048, 2048, size=(16, 16, 6))

    def twelve(ds, k):
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        raw = (stored[:, :, k].T.astype(np.int64) & 0x0FFF) | (0x5000 if k % 2 else 0xF000)
        ds.PixelData = raw.astype("<u2").tobytes()

    files = series(d, vol=np.zeros((16, 16, 6)), extra=twelve)

    def check(img):
        np.testing.assert_array_equal(img.numpy(), stored * 2 - 100)

    return Built(d, files, check)


def per_slice_rescale(d: Path) -> Built:
    vol = ramp()
    files = series(d, vol=vol, rescale=(1.0, 0.0))
    slopes = [0.5, 1.0, 2.0, 0.25, 3.0, 1.5]
    inters = [-1024.0, 0.0, 7.5, -3.0, 100.0, -0.5]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope, ds.RescaleIntercept = slopes[k], inters[k]
        ds.save_as(f)

    def check(img):
        expected = vol * np.asarray(slopes) + np.asarray(inters)
        np.testing.assert_allclose(img.numpy(), expected, rtol=0, atol=1e-4)

    return Built(d, files, check)


# ----------------------------------------------------------------------------------------- builders: series
def positions(pos) -> Callable[[Path], Built]:
    def build(d: Path) -> Built:
        files = series(d, n=len(pos), slice_positions=pos)
        return Built(d, files)

    return build


def duplicate_position(d: Path) -> Built:
    files = series(d)
    dup = d / "copy_of_slice3.dcm"
    dup.write_bytes(files[3].read_bytes())
    return Built(d, [dup, files[3]])


def gantry_tilt(d: Path) -> Built:
    shear = np.diag([1.0, 1.0, 3.0, 1.0])
    shear[:3, 2] += [0.0, 1.0, 0.0]
    files = write_series_affine(d, shear, extra={"GantryDetectorTilt": 18.4})
    return Built(d, files)


def write_series_affine(d: Path, affine, **kw):
    from medssl.data.phantoms import write_dicom_series

    return write_dicom_series(ramp(), affine, d, file_order="sorted", **kw)


def mixed_orientation(d: Path) -> Built:
    def tilt_one(ds, k):
        if k == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]

    files = series(d, extra=tilt_one)
    return Built(d, files)


def localizer_mixed(d: Path) -> Built:
    vol = ramp()
    files = series(d, vol=vol)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    sag = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])  # sagittal planes
    from medssl.data.phantoms import write_dicom_series

    write_dicom_series(ramp((16, 16, 2)), sag, d / "scout", series_uid=uid, series_number=1,
                       extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)
        assert any("localizer" in w for w in img.meta["warnings"]), img.meta["warnings"]

    return Built(d, files, check)


def differing_rows(d: Path) -> Built:
    files = series(d, n=5)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    from medssl.data.phantoms import write_dicom_series

    odd = np.eye(4)
    odd[:3, :3] = np.diag([1.0, 1.0, 2.5])
    odd[2, 3] = 5 * 2.5
    extra = write_dicom_series(ramp((16, 12, 1)), odd, d / "odd", series_uid=uid, series_number=1)
    return Built(d, files + extra)


def multi_echo(d: Path) -> Built:
    e1 = series(d / "e1", vol=ramp(), extra={"EchoNumbers": 1})
    uid = pydicom.dcmread(e1[0], stop_before_pixels=True).SeriesInstanceUID
    series(d / "e2", vol=ramp() + 7, series_uid=uid, extra={"EchoNumbers": 2})

    def check_choice(d):
        np.testing.assert_array_equal(load_volume(d, series=1).numpy(), ramp())
        np.testing.assert_array_equal(load_volume(d, series=2).numpy(), ramp() + 7)

    return Built(d, [d], check=check_choice)  # the error names the folder and lists the stacks to choose from


def _phase(t):
    return {"AcquisitionNumber": t + 1, "TemporalPositionIdentifier": t + 1, "InstanceNumber": None}


def multi_phase(d: Path) -> Built:
    p1 = series(d / "arterial", vol=ramp(), extra=_phase(0))
    uid = pydicom.dcmread(p1[0], stop_before_pixels=True).SeriesInstanceUID
    p2 = series(d / "venous", vol=ramp() + 50, series_uid=uid, extra=_phase(1))

    def check(img):
        assert img.shape == (16, 16, 6, 2)
        np.testing.assert_array_equal(img.numpy()[..., 0], ramp())
        np.testing.assert_array_equal(img.numpy()[..., 1], ramp() + 50)

    return Built(d, p1 + p2, check)


def multi_phase_missing(d: Path) -> Built:
    built = multi_phase(d)
    built.offending[-2].unlink()  # slice 5 of the second phase never arrived
    return Built(d, [built.offending[4]])  # the error names the first phase's slice 5, left without a partner


def enhanced(d: Path) -> Built:
    vol = ramp()
    p = d / "enhanced.dcm"
    d.mkdir(parents=True, exist_ok=True)
    _enhanced_multiframe(p, vol, np.diag([1.0, 1.0, 2.5, 1.0]))

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)
        np.testing.assert_allclose(img.meta["spacing"], (1.0, 1.0, 2.5), atol=1e-6)

    return Built(p, [p], check)


# ------------------------------------------------------------------------------------- builders: file system
def symlink_loop_files(d: Path) -> Built:
    d.mkdir(parents=True, exist_ok=True)
    os.symlink("b.dcm", d / "a.dcm")
    os.symlink("a.dcm", d / "b.dcm")
    return Built(d / "a.dcm", [d / "a.dcm"])


def symlink_loop_folder(d: Path) -> Built:
    vol = ramp()
    series(d / "series", vol=vol)
    os.symlink("..", d / "series" / "up")

    def check(img):
        np.testing.assert_array_equal(img.numpy(), vol)

    return Built(d, [], check)


def unreadable(d: Path) -> Built:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (simulated in test_permission_denied_simulated)")
    p = series(d, n=1)[0]
    os.chmod(p, 0)
    return Built(p, [p])


def empty_folder(d: Path) -> Built:
    (d / "nothing_here").mkdir(parents=True)
    return Built(d / "nothing_here")


# ----------------------------------------------------------------------------------------------- NIfTI
def _nifti(d: Path, name="img.nii", shape=(8, 7, 6), affine=NIFTI_AFFINE) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return write_nifti(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), d / name, affine)


def nifti_truncated(d: Path) -> Built:
    good = _nifti(d, "good.nii.gz")
    p = d / "cut.nii.gz"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return Built(p, [p])


def nifti_broken_header(d: Path) -> Built:
    raw = bytearray(_nifti(d).read_bytes())
    raw[0:4] = struct.pack("<i", 12345)  # sizeof_hdr must be 348 (or 540 for NIfTI-2)
    raw[344:348] = b"xx\0\0"  # and the magic is gone
    p = d / "broken.nii.gz"
    p.write_bytes(gzip.compress(bytes(raw)))
    return Built(p, [p])


def nifti_zero_dim(d: Path) -> Built:
    raw = bytearray(_nifti(d).read_bytes())
    raw[40:56] = struct.pack("<8h", 3, 8, 0, 6, 1, 1, 1, 1)
    p = d / "zero_dim.nii"
    p.write_bytes(bytes(raw))
    return Built(p, [p])


def nifti_sheared(d: Path) -> Built:
    aff = NIFTI_AFFINE.copy()
    aff[:3, 2] += [0.0, 0.9, 0.0]  # slice axis leans along y: not orthogonal
    p = _nifti(d, "sheared.nii.gz", affine=aff)
    return Built(p, [p])


def nifti_mismatch(d: Path) -> Built:
    image = _nifti(d, "case_0000.nii.gz", shape=(8, 7, 6))
    label = _nifti(d, "case.nii.gz", shape=(8, 7, 5))
    return Built(image, [image, label], label=label)


# ------------------------------------------------------------------------------------------------ catalogue
def C(*reasons: tuple[str, int]) -> dict:
    return dict(reasons)


CASES = [
    Case("zero_byte_file", zero_byte, "empty_file", C(("empty_file", 1))),
    Case("truncated_header", truncated_header, "truncated", C(("truncated", 1))),
    Case("truncated_pixel_data", truncated_pixels, "truncated", C(("truncated", 1))),
    Case("truncated_slice_in_series", truncated_member, "damaged_member", C(("truncated", 1), ("damaged_member", 5))),
    Case("truncated_copy_elsewhere", truncated_copy_elsewhere, "ok", C(("", 6), ("truncated", 1))),
    Case("truncated_slice_resent_intact", truncated_resent, "ok", C(("", 6), ("truncated", 1))),
    Case("truncated_scout_of_the_series", truncated_scout, "ok", C(("", 6), ("truncated", 1))),
    Case("non_utf8_file_name", non_utf8_name, "ok", C(("", 6))),
    Case("pixel_spacing_zero", degenerate(PixelSpacing=[0, 0]), "bad_geometry", C(("bad_geometry", 6))),
    Case("pixel_spacing_negative", degenerate(PixelSpacing=[-1, 1]), "bad_geometry", C(("bad_geometry", 6))),
    Case("pixel_spacing_nan", degenerate(PixelSpacing=["nan", "nan"]), "bad_geometry", C(("bad_geometry", 6))),
    Case("orientation_all_zero", degenerate(ImageOrientationPatient=[0] * 6), "bad_geometry",
         C(("bad_geometry", 6))),
    Case("orientation_not_orthogonal", degenerate(ImageOrientationPatient=[1, 0, 0, 0.6, 0.8, 0]), "bad_geometry",
         C(("bad_geometry", 6))),
    Case("orientation_not_unit", degenerate(ImageOrientationPatient=[2, 0, 0, 0, 2, 0]), "bad_geometry",
         C(("bad_geometry", 6))),
    Case("truncated_pydicom_MR", file_case("MR_truncated.dcm"), "truncated", C(("truncated", 1))),
    Case("not_dicom_with_dcm_name", not_dicom, "not_dicom", C(("not_dicom", 1))),
    Case("sr_without_pixels", file_case("test-SR.dcm"), "no_pixel_data", C(("no_pixel_data", 1))),
    Case("rt_plan_without_pixels", file_case("rtplan.dcm"), "no_pixel_data", C(("no_pixel_data", 1))),
    Case("rt_struct_without_pixels", file_case("rtstruct.dcm"), "no_pixel_data", C(("no_pixel_data", 1))),
    Case("presentation_state_without_pixels", presentation_state, "no_pixel_data", C(("no_pixel_data", 1))),
    Case("rt_dose_grid", file_case("rtdose.dcm"), "not_anatomy", C(("not_anatomy", 1))),
    Case("segmentation_labels", segmentation_labels, "not_anatomy", C(("not_anatomy", 6))),
    Case("dicomdir", file_case("dicomdirtests/DICOMDIR", "DICOMDIR"), "dicomdir", C(("dicomdir", 1))),
    Case("size_bomb_rows_columns", size_bomb(65535, 65535, 1), "size_limit", C(("size_limit", 1))),
    Case("size_bomb_frames", size_bomb(16, 16, 2**31 - 1), "size_limit", C(("size_limit", 1))),
    Case("rgb_ultrasound", file_case("examples_rgb_color.dcm"), "unsupported_photometric",
         C(("unsupported_photometric", 1))),
    Case("palette_ultrasound", file_case("examples_palette.dcm"), "unsupported_photometric",
         C(("unsupported_photometric", 1))),
    Case("ybr_jpeg_multiframe_ultrasound", file_case("examples_ybr_color.dcm"), "unsupported_photometric",
         C(("unsupported_photometric", 1))),
    Case("unsupported_syntax_mpeg2", mpeg2, "unsupported_transfer_syntax", C(("unsupported_transfer_syntax", 3))),
    Case("undecodable_jpeg_stream", undecodable, "undecodable", C(("", 6))),
    Case("jpeg_baseline", transcoded("JPEGBaselineProcess1", exact=False, bits8=True), "ok", C(("", 4))),
    Case("jpeg_lossless_sv1", transcoded("JPEGLosslessProcess14_1", exact=True), "ok", C(("", 4))),
    Case("jpeg_lossless_p14", transcoded("JPEGLosslessProcess14", exact=True), "ok", C(("", 4))),
    Case("jpeg_ls_lossless_MR_small", same_as_mr_small("MR_small_jpeg_ls_lossless.dcm"), "ok", C(("", 1))),
    Case("jpeg2000_lossless_MR_small", same_as_mr_small("MR_small_jp2klossless.dcm"), "ok", C(("", 1))),
    Case("jpeg2000_lossy_CT", j2k_lossy_ct, "ok", C(("", 1))),
    Case("rle_MR_small", same_as_mr_small("MR_small_RLE.dcm"), "ok", C(("", 1))),
    Case("jpeg_extended_without_geometry", file_case("JPGExtended.dcm"), "missing_geometry",
         C(("missing_geometry", 1))),
    Case("signed_12bit_with_rescale", signed_12bit, "ok", C(("", 6))),
    Case("per_slice_rescale", per_slice_rescale, "ok", C(("", 6))),
    Case("missing_slice", positions([0, 2.5, 5, 10, 12.5]), "missing_slice", C(("missing_slice", 5))),
    Case("uneven_spacing", positions([0, 2.0, 4.0, 7.0, 10.0, 13.0]), "uneven_spacing", C(("uneven_spacing", 6))),
    Case("duplicate_slice_position", duplicate_position, "duplicate_position", C(("duplicate_position", 7))),
    Case("gantry_tilt", gantry_tilt, "gantry_tilt", C(("gantry_tilt", 6))),
    Case("mixed_orientation_one_series", mixed_orientation, "mixed_orientation", C(("mixed_orientation", 6))),
    Case("localizer_mixed_into_series", localizer_mixed, "ok", C(("", 6), ("localizer", 2))),
    Case("differing_rows_columns", differing_rows, "inconsistent_shape", C(("inconsistent_shape", 6))),
    Case("multi_echo_one_uid", multi_echo, "ambiguous_series", C(("", 12))),
    Case("multi_phase_one_uid", multi_phase, "ok", C(("", 12))),
    Case("multi_phase_missing_slice", multi_phase_missing, "inconsistent_timepoints",
         C(("inconsistent_timepoints", 11))),
    Case("enhanced_multiframe", enhanced, "ok", C(("", 1))),
    Case("legacy_multiframe_without_positions", legacy_multiframe, "missing_geometry", C(("missing_geometry", 1))),
    Case("enhanced_frame_count_mismatch", enhanced_frame_count, "inconsistent_shape",
         C(("inconsistent_shape", 1))),
    Case("symlink_loop_files", symlink_loop_files, "symlink_loop", C(("symlink_loop", 2))),
    Case("symlink_loop_folder", symlink_loop_folder, "ok", C(("", 6), ("symlink_loop", 1))),
    Case("unreadable_permissions", unreadable, "permission_denied", C(("permission_denied", 1))),
    Case("empty_folder", empty_folder, "empty_series", C()),
    Case("nifti_truncated", nifti_truncated, "bad_nifti_header", None),
    Case("nifti_broken_header", nifti_broken_header, "bad_nifti_header", None),
    Case("nifti_zero_dimension", nifti_zero_dim, "bad_nifti_header", None),
    Case("nifti_non_orthonormal_affine", nifti_sheared, "non_orthonormal_affine", None),
    Case("nifti_label_image_shape_mismatch", nifti_mismatch, "shape_mismatch", None),
]
CRAWLED = [c for c in CASES if c.crawl is not None]


def test_catalogue_is_complete():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    table = __doc__.split("=\n", 2)[2].split("\n=")[0]  # the body between the 2nd and 3rd rule
    listed = [line.split()[0] for line in table.strip().splitlines()]
    assert listed == [c.id for c in CASES], "the table in the module docstring lists every case, in order"


# ------------------------------------------------------------------------------------------------- direct
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_direct(case: Case, tmp_path: Path):
    (tmp_path / "bad").mkdir()
    built = case.build(tmp_path / "bad")
    if case.direct == "ok":
        img = load_volume(built.read)
        built.check(img)
        return
    with pytest.raises(MedsslError) as info:
        if built.label is not None:
            check_same_grid(built.read, built.label)
        else:
            load_volume(built.read)
    err = info.value
    assert err.reason.value == case.direct, str(err)
    missing = {str(p) for p in built.offending} - set(err.files)
    assert not missing, f"error does not name {sorted(missing)[:3]}: {err}"
    if built.offending:
        assert Path(built.offending[0]).name in str(err), "the message names the file"
    if built.check is not None and case.direct == "ambiguous_series":
        built.check(built.read)  # the listed choices read the right stacks


# -------------------------------------------------------------------------------------------------- crawl
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("case", CRAWLED, ids=[c.id for c in CRAWLED])
def test_crawl(case: Case, tmp_path: Path):
    archive = tmp_path / "archive"
    good = series(archive / "good", vol=ramp(), seed=777, patient_id="GOOD-0001")  # its own UIDs
    (archive / "bad").mkdir()
    case.build(archive / "bad")
    result = build_index(archive, tmp_path / "index", workers=1, progress=False)

    rows = _rows(result.files_csv)
    assert result.seen == result.indexed + result.skipped == len(rows)
    bad_rows = [r for r in rows if r["path"].startswith("bad/")]
    assert Counter(r["reason"] for r in bad_rows) == Counter(case.crawl), bad_rows
    assert all((r["status"] == "indexed") == (r["reason"] == "") for r in rows)

    good_rows = [r for r in rows if r["path"].startswith("good/")]
    assert len(good_rows) == len(good) and {r["status"] for r in good_rows} == {"indexed"}
    key = good_rows[0]["series_key"]
    series_rows = {s["series_key"]: s for s in result.series}
    assert series_rows[key]["shape"] == "16x16x6" and series_rows[key]["status"] == "ok"
    rejected = {r["series_key"]: r["reason"] for r in result.rejected}
    for r in bad_rows:  # every grouped bad row agrees with series.csv / rejected_series.csv
        if r["series_key"] and r["reason"] not in ("localizer",):
            assert (r["series_key"] in series_rows) == (r["reason"] == "")
            assert r["reason"] == "" or rejected[r["series_key"]] == r["reason"]


def test_crawl_multi_echo_and_phase_series_shapes(tmp_path: Path):
    """The multi-echo UID gives two 3D series, the multi-phase UID one 4D series: never a mix."""
    multi_echo(tmp_path / "a" / "echo")
    multi_phase(tmp_path / "a" / "phase")
    result = build_index(tmp_path / "a", tmp_path / "index", workers=1, progress=False)
    assert sorted(s["shape"] for s in result.series) == ["16x16x6", "16x16x6", "16x16x6x2"]


def test_crawl_of_empty_archive(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = build_index(tmp_path / "empty", tmp_path / "index", workers=1, progress=False)
    assert (result.seen, result.indexed, result.skipped, result.series) == (0, 0, 0, [])
    assert _rows(result.files_csv) == []


def test_permission_denied_simulated(tmp_path: Path, monkeypatch):
    """The permission case also runs as root: os.access is made to refuse one file."""
    p = series(tmp_path / "bad", n=1)[0]
    access = os.access
    monkeypatch.setattr(os, "access", lambda q, mode: Path(q) != p and access(q, mode))
    with pytest.raises(MedsslError) as info:
        load_volume(p)
    assert info.value.reason.value == "permission_denied" and str(p) in info.value.files


def test_undecodable_slice_names_the_file_when_read_via_the_index(tmp_path: Path):
    """The crawl is header-only, so a corrupt JPEG stream is indexed; reading that series must then fail with the
    file named (never a volume with a hole)."""
    from medssl.data.index import series_files

    built = undecodable(tmp_path / "archive" / "s")
    build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False)
    [files] = series_files(tmp_path / "index", tmp_path / "archive").values()
    with pytest.raises(MedsslError) as info:
        load_volume(files)
    assert info.value.reason.value == "undecodable" and str(built.offending[0]) in info.value.files


def test_convert_refuses_degenerate_geometry_with_its_reason(tmp_path: Path, capsys):
    """`medssl convert` on PixelSpacing 0\\0 ends in a typed bad_geometry error (was nibabel's HeaderDataError)."""
    from medssl.cli import DATA_ERROR, main

    degenerate(PixelSpacing=[0, 0])(tmp_path / "s")
    assert main(["convert", str(tmp_path / "s"), str(tmp_path / "out.nii.gz")]) == DATA_ERROR
    assert "bad_geometry" in capsys.readouterr().out and not (tmp_path / "out.nii.gz").exists()


def test_non_utf8_name_is_counted_and_found_again(tmp_path: Path):
    """files.csv spells the name with \\xNN escapes; index.json counts it; series_files finds the file on disk."""
    import json

    from medssl.data.index import series_files

    non_utf8_name(tmp_path / "archive" / "s")
    result = build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False)
    assert result.non_utf8_names == 1 == json.loads(result.index_json.read_text())["counts"]["non_utf8_names"]
    assert "s/IM\\xe9\\xff\\xfe.dcm" in {r["path"] for r in _rows(result.files_csv)}
    [files] = series_files(tmp_path / "index", tmp_path / "archive").values()
    assert len(files) == 6 and all(f.is_file() for f in files)
    np.testing.assert_array_equal(load_volume(files).numpy(), ramp())
