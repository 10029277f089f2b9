"""Tests for medssl.data.phantoms.

Geometry is checked with plain pydicom + numpy (independent of any medssl reader) and cross-checked with SimpleITK's
DICOM series reader, which sorts slices by position and reports LPS origin / direction / spacing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, RLELossless
from scipy.ndimage import binary_dilation

from medssl.data.nifti import read_nifti
from medssl.data.phantoms import generate_phantoms, make_phantom, phantom_affine, write_dicom_series

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (40, 36, 24)  # small for speed; non-square on purpose


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("phantoms")
    start = time.perf_counter()
    desc = generate_phantoms(root, n=4, seed=7, shape=SHAPE)
    assert time.perf_counter() - start < 10.0  # budget: n=4 at 64x64x48 in ~1 s
    return root, desc


def _series(case_dir: Path) -> list[pydicom.Dataset]:
    """All files of a series (force=False: must be valid Part 10), sorted by InstanceNumber."""
    return sorted((pydicom.dcmread(f, force=False) for f in case_dir.iterdir()), key=lambda d: int(d.InstanceNumber))


def test_make_phantom_deterministic_and_labelled() -> None:
    image, label = make_phantom(seed=5)
    again, label_again = make_phantom(seed=5)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(label, label_again)
    assert not np.array_equal(image, make_phantom(seed=6)[0])
    assert image.shape == label.shape == (64, 64, 48)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    np.testing.assert_array_equal(image, np.round(image))  # integral HU, so DICOM int16 storage is lossless
    assert set(np.unique(label)) == {0, 1, 2}
    assert (label == 1).sum() > 500 and (label == 2).sum() > 10
    tumour = label == 2
    assert np.all(label[binary_dilation(tumour)] > 0)  # tumour is enclosed by organ
    assert abs(np.median(image[0]) + 1000) < 10 and image.max() > 600  # air at the border, bone present
    assert abs(np.median(image[label == 1]) - 60) < 40


def test_make_phantom_2d_and_anisotropic() -> None:
    image, label = make_phantom((48, 40), (0.7, 0.9), seed=1, spatial_dims=2)
    assert image.shape == label.shape == (48, 40)
    assert (label == 1).any() and (label == 2).any()
    small, small_label = make_phantom((16, 16, 8), (2.0, 2.0, 5.0), seed=3)
    assert (small_label == 2).any() and np.all(small_label[small_label == 2] == 2)


def test_dicom_files_valid_and_identifiers_present(phantoms: tuple[Path, dict]) -> None:
    root, desc = phantoms
    case = desc["cases"][0]
    files = sorted((root / case["dicom_dir"]).iterdir())
    datasets = _series(root / case["dicom_dir"])
    assert len(files) == SHAPE[2] == case["n_dicom_files"]
    assert all(len(f.stem) == 16 and int(f.stem, 16) >= 0 for f in files)  # random hex: names carry no order
    assert [d.filename for d in datasets] != [str(f) for f in files]
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
    for d in datasets:
        assert d.preamble == b"\0" * 128
        assert d.file_meta.MediaStorageSOPClassUID == CTImageStorage == d.SOPClassUID
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert d.Modality == "CT" and d.Manufacturer == "medssl-phantom" and list(d.ImageType) == [
            "ORIGINAL", "PRIMARY", "AXIAL"]
        assert d.PatientName and d.PatientID and d.PatientBirthDate and d.AccessionNumber and d.StudyDate
        assert (d.BitsStored, d.PixelRepresentation, d.pixel_array.dtype) == (16, 1, np.int16)
    assert len({(d.SeriesInstanceUID, d.StudyInstanceUID, d.FrameOfReferenceUID) for d in datasets}) == 1
    # identifiers live only in DICOM: phantoms.json must not leak them
    text = (root / "phantoms.json").read_text()
    for ident in (str(datasets[0].PatientName), datasets[0].PatientID, datasets[0].AccessionNumber, "19700101"):
        assert ident not in text


@pytest.mark.parametrize("index", range(4))
def test_dicom_geometry_is_exact(phantoms: tuple[Path, dict], index: int) -> None:
    root, desc = phantoms
    case = desc["cases"][index]
    affine = np.array(case["affine"])
    lps = LPS @ affine
    volume, label = make_phantom(case["shape"], case["spacing"], seed=case["seed"])
    datasets = _series(root / case["dicom_dir"])
    sx, sy, sz = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose([sx, sy, sz], case["spacing"], atol=1e-12)
    for k, d in enumerate(datasets):
        np.testing.assert_allclose(np.array(d.ImagePositionPatient, float), (lps @ [0, 0, k, 1])[:3], atol=1e-9)
        np.testing.assert_allclose(np.array(d.ImageOrientationPatient, float)[:3], lps[:3, 0] / sx, atol=1e-12)
        np.testing.assert_allclose(np.array(d.ImageOrientationPatient, float)[3:], lps[:3, 1] / sy, atol=1e-12)
        np.testing.assert_allclose(np.array(d.PixelSpacing, float), [sy, sx], atol=1e-12)  # [row, column]
        assert (d.Rows, d.Columns) == (volume.shape[1], volume.shape[0])
        assert float(d.SliceThickness) == pytest.approx(sz)
        hu = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_array_equal(hu, volume[:, :, k].T)
    # pixel (row r, column c) of slice k sits at IPP + c*dc*X + r*dr*Y == affine @ (c, r, k)
    d = datasets[-1]
    x_dir, y_dir = np.array(d.ImageOrientationPatient[:3], float), np.array(d.ImageOrientationPatient[3:], float)
    r, c = 5, 7
    world = np.array(d.ImagePositionPatient, float) + c * float(d.PixelSpacing[1]) * x_dir
    world += r * float(d.PixelSpacing[0]) * y_dir
    np.testing.assert_allclose(world, (lps @ [c, r, len(datasets) - 1, 1])[:3], atol=1e-9)
    # the NIfTI copy has the same voxels and (float32-precision) affine
    image = read_nifti(root / case["image"])
    np.testing.assert_array_equal(image.numpy(), volume)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-4)
    np.testing.assert_array_equal(read_nifti(root / case["label"]).numpy(), label)


@pytest.mark.parametrize("index", range(4))
def test_simpleitk_cross_check(phantoms: tuple[Path, dict], index: int) -> None:
    sitk = pytest.importorskip("SimpleITK")
    root, desc = phantoms
    case = desc["cases"][index]
    affine, nz = np.array(case["affine"]), case["shape"][2]
    volume, _ = make_phantom(case["shape"], case["spacing"], seed=case["seed"])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(root / case["dicom_dir"])))
    img = reader.Execute()
    got = np.eye(4)
    got[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    got[:3, 3] = img.GetOrigin()
    expected, expected_volume = LPS @ affine, volume
    if np.dot(np.cross(expected[:3, 0], expected[:3, 1]), expected[:3, 2]) < 0:  # ITK orders slices along X x Y
        expected = expected @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, nz - 1], [0, 0, 0, 1]])
        expected_volume = volume[:, :, ::-1]
    assert case["flipped_slices"] == (expected_volume is not volume)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), expected_volume)
    nii = sitk.ReadImage(str(root / case["image"]))  # ITK reads NIfTI into LPS as well
    np.testing.assert_allclose(np.array(nii.GetOrigin()), (LPS @ affine)[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.array(nii.GetDirection()).reshape(3, 3) @ np.diag(nii.GetSpacing()),
                               (LPS @ affine)[:3, :3], atol=1e-4)


def test_generate_layout_and_dataset_json(phantoms: tuple[Path, dict]) -> None:
    root, desc = phantoms
    assert json.loads((root / "phantoms.json").read_text()) == desc
    cases = desc["cases"]
    assert [c["case_id"] for c in cases] == [f"phantom_{i:03d}" for i in range(4)]
    assert any(c["oblique_deg"] >= 10 for c in cases) and any(c["oblique_deg"] == 0 for c in cases)
    assert all(c["oblique_deg"] == 0 or 10 <= c["oblique_deg"] <= 25 for c in cases)
    assert len({tuple(c["spacing"]) for c in cases}) > 1 and sum(c["flipped_slices"] for c in cases) == 1
    dataset = json.loads((root / "nifti" / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "organ", "2": "tumour"} and dataset["modality"] == {"0": "CT"}
    assert dataset["numTraining"] == len(dataset["training"]) == 4
    for entry in dataset["training"]:
        assert (root / "nifti" / entry["image"]).is_file() and (root / "nifti" / entry["label"]).is_file()
        assert entry["image"].endswith("_0000.nii.gz")


def test_write_dicom_series_options(tmp_path: Path) -> None:
    volume = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4) * 3 - 100
    affine = phantom_affine(volume.shape, (0.5, 0.7, 2.0), angle_deg=20, axis="y")
    lps = LPS @ affine
    for ts in (ImplicitVRLittleEndian, RLELossless):
        files = write_dicom_series(volume, affine, tmp_path / ts.name, transfer_syntax=ts, modality="MR",
                                   rescale=(0.5, -200.0), file_order="sorted")
        assert [f.name for f in files] == [f"IM{k:05d}.dcm" for k in range(1, 5)]
        for k, f in enumerate(files):
            d = pydicom.dcmread(f)
            assert d.file_meta.TransferSyntaxUID == ts and d.SOPClassUID == MRImageStorage
            np.testing.assert_array_equal(d.pixel_array * 0.5 - 200.0, volume[:, :, k].T)
    # uneven spacing / missing slice: IPP follows the requested offsets along the unit slice axis
    positions = [0.0, 2.0, 6.0, 8.0]
    files = write_dicom_series(volume, affine, tmp_path / "uneven", slice_positions=positions)
    unit = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    for s, f in zip(positions, files):
        np.testing.assert_allclose(np.array(pydicom.dcmread(f).ImagePositionPatient, float), lps[:3, 3] + s * unit,
                                   atol=1e-9)
    # overrides: a dict for every file, a callable per slice (here: a gantry-tilt-like IPP shear)
    files = write_dicom_series(volume, affine, tmp_path / "extra", extra={"BodyPartExamined": None,
                                                                         "PatientName": "OTHER^NAME"})
    d = pydicom.dcmread(files[0])
    assert "BodyPartExamined" not in d and d.PatientName == "OTHER^NAME"

    def tilt(ds: pydicom.Dataset, k: int) -> None:
        ds.ImagePositionPatient = [float(v) + (0.0, 0.5 * k, 0.0)[i] for i, v in enumerate(ds.ImagePositionPatient)]

    files = write_dicom_series(volume, affine, tmp_path / "tilt", extra=tilt)
    ys = [float(pydicom.dcmread(f).ImagePositionPatient[1]) for f in files]
    np.testing.assert_allclose(np.diff(ys), 0.5 + lps[1, 2], atol=1e-9)
    # same inputs -> same UIDs (deterministic), fake identifiers configurable
    a = write_dicom_series(volume, affine, tmp_path / "a", patient_id="X1")
    b = write_dicom_series(volume, affine, tmp_path / "b", patient_id="X1")
    assert [f.name for f in a] == [f.name for f in b]
    assert pydicom.dcmread(a[0]).SeriesInstanceUID == pydicom.dcmread(b[0]).SeriesInstanceUID
    with pytest.raises(ValueError, match="overflow"):
        write_dicom_series(volume * 1000, affine, tmp_path / "overflow")
