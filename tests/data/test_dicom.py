"""DICOM series reader: geometry on synthetic series of known affine, strict-policy reason codes, real references."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medssl.data.convert import convert_series
from medssl.data.dicom import find_series, read_dicom_series, read_dicom_volume
from medssl.data.phantoms import write_dicom_series
from medssl.errors import DicomSeriesError, MedsslError, Reason
from tests.conftest import require_shared


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def make_affine(spacing=(0.8, 0.9, 2.5), rot=np.eye(3), origin=(-20.0, 15.0, 30.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def ramp(shape=(12, 10, 6)) -> np.ndarray:
    """Voxel values that encode their own index, so any transposition or reordering is detected."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (i + 20 * j + 400 * k - 1000).astype(np.float64)


@pytest.mark.parametrize(
    "rot",
    [np.eye(3), rotation(0, 17), rotation(1, -23) @ rotation(2, 11), np.diag([1.0, -1.0, -1.0])],
    ids=["axial", "oblique-x", "double-oblique", "flipped"],
)
def test_geometry_matches_known_affine(tmp_path, rot):
    vol, aff = ramp(), make_affine(rot=rot)
    write_dicom_series(vol, aff, tmp_path, rescale=(1.0, -1024.0))
    img = read_dicom_series(tmp_path)
    # the reader orders slices by position along the normal; compare in world space via canonical orientation
    ours = nib.as_closest_canonical(nib.Nifti1Image(img.numpy().astype(np.float64), img.affine.numpy()))
    ref = nib.as_closest_canonical(nib.Nifti1Image(vol, aff))
    np.testing.assert_array_equal(ours.get_fdata(), ref.get_fdata())
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)
    assert img.meta["spacing"] == pytest.approx((0.8, 0.9, 2.5), abs=1e-4)


def test_slice_order_ignores_instance_number_and_file_names(tmp_path):
    vol, aff = ramp(), make_affine()
    files = write_dicom_series(vol, aff, tmp_path, file_order="sorted")
    for k, f in enumerate(files):  # scramble InstanceNumber
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = (k * 7) % len(files) + 1
        ds.save_as(f)
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.numpy(), vol)


def test_per_slice_rescale(tmp_path):
    vol, aff = ramp(), make_affine()
    files = write_dicom_series(vol, aff, tmp_path, rescale=(1.0, 0.0), file_order="sorted")
    for k, f in enumerate(files):  # slice k stores raw; declare slope 2 on odd slices
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = 2 if k % 2 else 1
        ds.RescaleIntercept = -5 * k
        ds.save_as(f)
    img = read_dicom_series(tmp_path).numpy()
    expected = vol * np.where(np.arange(vol.shape[2]) % 2, 2, 1) - 5 * np.arange(vol.shape[2])
    np.testing.assert_array_equal(img, expected)


def _expect(tmp_path, reason: Reason, **kwargs):
    with pytest.raises(DicomSeriesError) as info:
        read_dicom_series(tmp_path, **kwargs)
    assert info.value.reason == reason, str(info.value)
    assert info.value.files, "error must name the offending files"
    return info.value


def test_missing_slice(tmp_path):
    pos = [0, 2.5, 5, 10, 12.5, 15]
    write_dicom_series(ramp(), make_affine(), tmp_path, slice_positions=pos)
    _expect(tmp_path, Reason.MISSING_SLICE)


def test_uneven_spacing_strict_and_resampled(tmp_path):
    pos = [0, 2.0, 4.0, 7.0, 10.0, 13.0]
    write_dicom_series(ramp(), make_affine(), tmp_path, slice_positions=pos)
    _expect(tmp_path, Reason.UNEVEN_SPACING)
    img = read_dicom_series(tmp_path, uneven="resample")
    assert img.meta["warnings"], "resampling must be reported"
    assert img.shape[2] == 8  # 13 mm at no more than the 2 mm minimum gap, end slices kept -> 8 planes
    assert img.meta["spacing"][2] == pytest.approx(13.0 / 7.0, abs=1e-6)
    out, vol = img.numpy(), ramp()
    np.testing.assert_array_equal(out[:, :, 0], vol[:, :, 0])
    np.testing.assert_array_equal(out[:, :, -1], vol[:, :, -1])
    # plane 1 lies at 13/7 mm, between the slices at 0 and 2 mm: linear interpolation (ramp is linear in k)
    np.testing.assert_allclose(out[:, :, 1], np.round(vol[:, :, 0] + (13.0 / 7.0) / 2.0 * 400), atol=0.5)


def test_duplicate_position(tmp_path):
    files = write_dicom_series(ramp(), make_affine(), tmp_path, file_order="sorted")
    shutil.copy(files[2], tmp_path / "copy_of_slice.dcm")
    _expect(tmp_path, Reason.DUPLICATE_POSITION)


def test_gantry_tilt_strict_and_corrected(tmp_path):
    shear = make_affine(spacing=(1.0, 1.0, 3.0))
    shear[:3, 2] += np.array([0.0, 1.0, 0.0])  # slices slide along y: a sheared (tilted) stack
    vol = ramp((12, 10, 6))
    write_dicom_series(vol, shear, tmp_path, extra={"GantryDetectorTilt": 18.4})
    err = _expect(tmp_path, Reason.GANTRY_TILT)
    assert "18.4" in str(err)
    img = read_dicom_series(tmp_path, tilt="correct")
    a = img.affine.numpy()
    cols = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    np.testing.assert_allclose(cols.T @ cols, np.eye(3), atol=1e-6)  # orthogonal grid after correction
    assert img.shape[1] == vol.shape[1] + 5  # 5 mm of shear over the stack -> 5 extra rows
    # world position of a voxel centre in the original sheared stack must carry the same value
    k, j, i = 4, 3, 2
    world = shear @ np.array([i, j, k, 1.0])
    idx = np.linalg.solve(a, world)
    np.testing.assert_allclose(idx[:3], np.round(idx[:3]), atol=1e-6)
    assert img.numpy()[tuple(np.round(idx[:3]).astype(int))] == vol[i, j, k]


def test_mixed_orientation(tmp_path):
    def tilt_one(ds, k):
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]

    write_dicom_series(ramp(), make_affine(), tmp_path, extra=tilt_one)
    _expect(tmp_path, Reason.MIXED_ORIENTATION)


def test_inconsistent_rows(tmp_path):
    write_dicom_series(ramp(), make_affine(), tmp_path)
    small = tmp_path / "small"
    write_dicom_series(ramp((12, 8, 1)), make_affine(origin=(-20.0, 15.0, 50.0)), small,
                       series_uid=pydicom.dcmread(next(tmp_path.glob("*.dcm"))).SeriesInstanceUID)
    _expect(tmp_path, Reason.INCONSISTENT_SHAPE)


def test_several_series_need_a_choice(tmp_path):
    write_dicom_series(ramp(), make_affine(), tmp_path / "a", series_number=3)
    write_dicom_series(ramp() * 0 + 7, make_affine(), tmp_path / "b", series_number=4)
    _expect(tmp_path, Reason.AMBIGUOUS_SERIES)
    assert [s.first.series_number for s in find_series(tmp_path)] == [3, 4]
    assert float(read_dicom_series(tmp_path, series=2).numpy().max()) == 7


def test_4d_time_series(tmp_path):
    uid = pydicom.uid.generate_uid()
    for t in range(3):
        write_dicom_series(ramp() + 10 * t, make_affine(), tmp_path / f"t{t}", series_uid=uid,
                           extra={"AcquisitionNumber": t + 1, "InstanceNumber": None})
    img = read_dicom_series(tmp_path)
    assert img.shape == (12, 10, 6, 3)
    np.testing.assert_array_equal(img.numpy()[..., 2] - img.numpy()[..., 0], 20)
    _expect(tmp_path, Reason.INCONSISTENT_TIMEPOINTS, fourd="error")


def test_no_pixel_data_and_not_dicom(tmp_path):
    sr = pydicom.data.get_testdata_file("test-SR.dcm")
    shutil.copy(sr, tmp_path / "report.dcm")
    (tmp_path / "notes.dcm").write_text("not a dicom file")
    with pytest.raises(MedsslError) as info:
        read_dicom_series(tmp_path)
    assert info.value.reason in (Reason.NO_PIXEL_DATA, Reason.NOT_DICOM)


def test_undecodable_pixel_data(tmp_path):
    files = write_dicom_series(ramp(), make_affine(), tmp_path, file_order="sorted")
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"  # claims JPEG baseline, holds raw bytes
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8garbage"])
    ds.save_as(files[0], enforce_file_format=True)
    with pytest.raises(MedsslError) as info:
        read_dicom_series(tmp_path)
    assert info.value.reason in (Reason.UNDECODABLE, Reason.UNSUPPORTED_TRANSFER_SYNTAX)
    assert str(files[0]) in info.value.files


def test_compressed_transfer_syntaxes_match_uncompressed():
    """pydicom ships MR_small in several syntaxes: all must decode to the same volume."""
    base = read_dicom_series(pydicom.data.get_testdata_file("MR_small.dcm")).numpy()
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
                 "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_dicom_series(pydicom.data.get_testdata_file(name)).numpy(), base,
                                      err_msg=name)


# ---------------------------------------------------------------- real reference conversions (dcm2niix)
def _compare():
    sys.path.insert(0, str(require_shared().parent / "tools"))
    from compare_nifti import same

    return same


REFERENCES = [(f"dcm_qa_ts/In/{n}.dcm", f"dcm_qa_ts/Ref/{n}.nii") for n in range(1, 10)] + [
    ("dcm_qa_12bit/In/12bitUnsigned.dcm", "dcm_qa_12bit/Ref/2.nii"),
    ("dcm_qa_12bit/In/12bitUnsigned_0x0F0F.dcm", "dcm_qa_12bit/Ref/3.nii"),
    ("dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm", "dcm_qa_12bit/Ref/4.nii"),
    ("dcm_qa_nih/In/20180918Si/mr_0003", "dcm_qa_nih/Ref/EPI_PE=AP_3.nii"),
    ("dcm_qa_nih/In/20180918Si/mr_0004", "dcm_qa_nih/Ref/EPI_PE=PA_4.nii"),
    ("dcm_qa_nih/In/20180918Si/mr_0005", "dcm_qa_nih/Ref/EPI_PE=RL_5.nii"),
    ("dcm_qa_nih/In/20180918Si/mr_0006", "dcm_qa_nih/Ref/EPI_PE=LR_6.nii"),
    ("dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii"),
    ("dcm_qa_nih/In/20180918GE/mr_0007", "dcm_qa_nih/Ref/DCM2NIIX_regression_test_7.nii"),
]


@pytest.mark.realdata
@pytest.mark.parametrize("source,reference", REFERENCES, ids=[r[1].split("/")[-1] for r in REFERENCES])
def test_convert_matches_dcm2niix_reference(tmp_path, source, reference):
    root = require_shared("dicom")
    out = tmp_path / "out.nii.gz"
    convert_series(root / source, out)
    ok, why = _compare()(out, root / reference)
    assert ok, why


@pytest.mark.realdata
def test_tilted_ct_raises_then_matches_tilt_eq_reference(tmp_path):
    root = require_shared("dicom", "dcm_qa_ct")
    with pytest.raises(DicomSeriesError) as info:
        read_dicom_volume(root / "In" / "GE")
    assert info.value.reason == Reason.GANTRY_TILT
    with pytest.raises(DicomSeriesError) as info:
        read_dicom_volume(root / "In" / "GE", tilt="correct")
    assert info.value.reason == Reason.UNEVEN_SPACING
    out = tmp_path / "tilt.nii.gz"
    convert_series(root / "In" / "GE", out, tilt="correct", uneven="resample")
    ours = nib.as_closest_canonical(nib.load(out))
    ref = nib.as_closest_canonical(nib.load(root / "Ref_regenerated" / "_2_Tilt_Eq_1.nii.gz"))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    a, b = ours.get_fdata(), ref.get_fdata()
    diff = np.abs(a - b)
    # dcm2niix rounds twice (after shear, after slice interpolation); we round once: differences are tiny
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9999
    assert diff.mean() < 1.0
    assert np.percentile(diff, 99) <= 2.0


def _enhanced_multiframe(path: Path, vol: np.ndarray, aff: np.ndarray) -> None:
    """Write ``vol`` as one enhanced multi-frame object (per-frame positions in functional groups)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    from tests.data.enhanced_objects import ENHANCED_CT, enhanced_dataset

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    iop = list(lps[:3, 0] / sx) + list(lps[:3, 1] / sy)
    ds = enhanced_dataset(ENHANCED_CT, "CT", 9)
    ds.Rows, ds.Columns, ds.NumberOfFrames = vol.shape[1], vol.shape[0], vol.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing, pm.SliceThickness = [sy, sx], float(np.linalg.norm(lps[:3, 2]))
    po = Dataset()
    po.ImageOrientationPatient = iop
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, 0, "HU"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Seq([pm]), Seq([po])
    shared.PixelValueTransformationSequence = Seq([pvt])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    frames = []
    for k in reversed(range(vol.shape[2])):  # frames stored in reverse: order must come from positions
        f = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = list(lps[:3, :3] @ np.array([0, 0, k]) + lps[:3, 3])
        f.PlanePositionSequence = Seq([pp])
        frames.append(f)
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    ds.PixelData = np.stack([vol[:, :, k].T for k in reversed(range(vol.shape[2]))]).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe(tmp_path):
    vol, aff = ramp(), make_affine(rot=rotation(0, 12))
    _enhanced_multiframe(tmp_path / "enhanced.dcm", vol, aff)
    img = read_dicom_series(tmp_path / "enhanced.dcm")
    ours = nib.as_closest_canonical(nib.Nifti1Image(img.numpy().astype(np.float64), img.affine.numpy()))
    ref = nib.as_closest_canonical(nib.Nifti1Image(vol, aff))
    np.testing.assert_array_equal(ours.get_fdata(), ref.get_fdata())
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)


def test_size_bomb_refused_before_allocation(tmp_path):
    files = write_dicom_series(ramp(), make_affine(), tmp_path, file_order="sorted")
    ds = pydicom.dcmread(files[0])
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(files[0])
    with pytest.raises(MedsslError) as info:
        read_dicom_series(files[0])
    assert info.value.reason == Reason.SIZE_LIMIT


def test_rgb_is_refused_with_reason(tmp_path):
    rgb = pydicom.data.get_testdata_file("SC_rgb_rle.dcm")
    with pytest.raises(MedsslError) as info:
        read_dicom_series(rgb)
    assert info.value.reason in (Reason.UNSUPPORTED_PHOTOMETRIC, Reason.MISSING_GEOMETRY)
