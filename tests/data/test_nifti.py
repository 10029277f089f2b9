"""Tests for medssl.data.nifti: exact round trips, scaling, boundary validation, MONAI integration."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl.data.nifti import NiftiReader, check_same_grid, read_nifti, write_nifti
from medssl.errors import NiftiError, Reason

# float32-representable oblique affine (rotation by a right angle + flips, non-integer spacing and offset)
AFFINE = np.array([[0.0, -1.5, 0.0, 10.25], [2.0, 0.0, 0.0, -3.5], [0.0, 0.0, -2.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


def _rotated_affine(deg: float = 17.0) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.8, 2.0])
    a[:3, 3] = [-30.1, 12.7, -40.3]
    return a


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_exact(tmp_path: Path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(7, 6, 5)) * 100).astype(dtype)
    path = write_nifti(arr, tmp_path / f"img{suffix}", AFFINE)
    img = read_nifti(path)
    assert isinstance(img, MetaTensor)
    assert img.dtype == torch.from_numpy(arr).dtype  # integers stay integers, float32 stays float32
    np.testing.assert_array_equal(img.numpy(), arr)
    assert img.affine.dtype == torch.float64
    np.testing.assert_array_equal(img.affine.numpy(), AFFINE)
    assert img.meta["spacing"] == (2.0, 1.5, 2.5)
    assert img.meta["space"] == "RAS" and img.meta["filename_or_obj"] == str(path)
    assert img.meta["spatial_shape"] == (7, 6, 5)
    np.testing.assert_array_equal(img.meta["original_affine"], AFFINE)
    hdr = nib.load(path).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units() == ("mm", "sec")


def test_round_trip_oblique_metatensor_and_dims(tmp_path: Path) -> None:
    aff = _rotated_affine()
    t = MetaTensor(torch.arange(4 * 5 * 6 * 3, dtype=torch.float32).reshape(4, 5, 6, 3), affine=torch.from_numpy(aff))
    img = read_nifti(write_nifti(t, tmp_path / "t.nii.gz"))  # affine taken from the MetaTensor
    np.testing.assert_array_equal(img.numpy(), t.numpy())
    np.testing.assert_allclose(img.affine.numpy(), aff, atol=1e-5)  # the header stores float32
    assert img.meta["spatial_shape"] == (4, 5, 6)
    np.testing.assert_allclose(img.meta["spacing"], (0.8, 0.8, 2.0), atol=1e-6)
    flat = read_nifti(write_nifti(np.ones((9, 8), np.int16), tmp_path / "slice.nii"))
    assert flat.shape == (9, 8) and flat.meta["spatial_shape"] == (9, 8) and len(flat.meta["spacing"]) == 2


def test_scl_storage_and_get_fdata_semantics(tmp_path: Path) -> None:
    hu = np.random.default_rng(1).integers(-1024, 2000, size=(6, 5, 4)).astype(np.float32)
    path = write_nifti(hu, tmp_path / "ct.nii.gz", AFFINE, scl=(1.0, -1024.0))
    on_disk = nib.load(path)
    assert on_disk.get_data_dtype() == np.int16
    np.testing.assert_array_equal(on_disk.dataobj.get_unscaled(), hu + 1024)
    assert (on_disk.dataobj.slope, on_disk.dataobj.inter) == (1.0, -1024.0)  # nibabel moves scl_* here
    img = read_nifti(path)
    assert img.dtype == torch.float32
    np.testing.assert_array_equal(img.numpy(), hu)
    np.testing.assert_array_equal(img.numpy(), on_disk.get_fdata().astype(np.float32))
    half = read_nifti(write_nifti(hu, tmp_path / "half.nii", AFFINE, scl=(0.5, -1024.0), dtype=np.int32))
    np.testing.assert_array_equal(half.numpy(), hu)
    assert read_nifti(path, dtype=np.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="overflow"):
        write_nifti(hu * 100, tmp_path / "bad.nii", AFFINE, scl=(1.0, 0.0))


def test_canonical_matches_nibabel(tmp_path: Path) -> None:
    arr = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)
    path = write_nifti(arr, tmp_path / "o.nii.gz", AFFINE)
    img = read_nifti(path, canonical=True)
    ref = nib.as_closest_canonical(nib.load(path))
    assert img.dtype == torch.int16
    np.testing.assert_array_equal(img.numpy(), ref.get_fdata())
    np.testing.assert_allclose(img.affine.numpy(), ref.affine)
    np.testing.assert_array_equal(img.meta["original_affine"], AFFINE)
    assert img.meta["spatial_shape"] == (6, 7, 5)


def _patched_header(tmp_path: Path, name: str, offset: int, fmt: str, values: tuple) -> Path:
    raw = bytearray((tmp_path / "good.nii").read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    (tmp_path / name).write_bytes(bytes(raw))
    return tmp_path / name


@pytest.fixture
def good(tmp_path: Path) -> Path:
    noise = np.random.default_rng(2).normal(size=(32, 32, 16)).astype(np.float32)
    write_nifti(noise, tmp_path / "good.nii.gz", AFFINE)
    return write_nifti(noise, tmp_path / "good.nii", AFFINE)


def test_broken_files_raise_bad_header(tmp_path: Path, good: Path) -> None:
    gz = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(gz[: len(gz) // 2])  # header intact, data stream cut
    (tmp_path / "trunc.nii").write_bytes(good.read_bytes()[:-100])
    (tmp_path / "garbage.nii.gz").write_bytes(b"not a nifti" * 50)
    (tmp_path / "garbage.nii").write_bytes(gzip.compress(b"\x01" * 400))
    (tmp_path / "header_only.nii.gz").write_bytes(gzip.compress(good.read_bytes()[:100]))
    zero = _patched_header(tmp_path, "zero.nii", 40, "<8h", (3, 32, 0, 16, 1, 1, 1, 1))
    negative = _patched_header(tmp_path, "neg.nii", 40, "<8h", (3, 32, -32, 16, 1, 1, 1, 1))
    names = ["trunc.nii.gz", "trunc.nii", "garbage.nii.gz", "garbage.nii", "header_only.nii.gz"]
    for path in [tmp_path / n for n in names] + [zero, negative]:
        with pytest.raises(NiftiError) as info:
            read_nifti(path)
        assert info.value.reason is Reason.BAD_NIFTI_HEADER, path
        assert info.value.files == [str(path)] and path.name in str(info.value)
    with pytest.raises(NiftiError) as info:
        read_nifti(tmp_path / "missing.nii.gz")
    assert info.value.reason is Reason.UNREADABLE


def test_affine_validation(tmp_path: Path, good: Path) -> None:
    sheared = AFFINE.copy()
    sheared[:3, 2] += 0.3 * AFFINE[:3, 0]  # tilted-gantry-like shear of the slice axis
    path = write_nifti(np.zeros((4, 4, 3), np.int16), tmp_path / "shear.nii.gz", sheared)
    with pytest.raises(NiftiError) as info:
        read_nifti(path)
    assert info.value.reason is Reason.NON_ORTHONORMAL_AFFINE and "shear.nii.gz" in str(info.value)
    np.testing.assert_allclose(read_nifti(path, check_affine=False).affine.numpy(), sheared, atol=1e-6)
    # srow_x/srow_y start at bytes 280/296: zeroing srow_y[0] zeroes column i (singular); NaN -> non-finite
    for name, offset, row in [("singular.nii", 296, (0.0, 0.0, 0.0, -3.5)), ("nan.nii", 280, (np.nan, -1.5, 0, 10.25))]:
        bad = _patched_header(tmp_path, name, offset, "<4f", row)
        with pytest.raises(NiftiError) as info:
            read_nifti(bad)
        assert info.value.reason is Reason.NON_ORTHONORMAL_AFFINE


def test_check_same_grid(tmp_path: Path) -> None:
    image = read_nifti(write_nifti(np.zeros((6, 5, 4, 2), np.float32), tmp_path / "img.nii.gz", AFFINE))
    label = read_nifti(write_nifti(np.zeros((6, 5, 4), np.uint8), tmp_path / "lbl.nii.gz", AFFINE))
    check_same_grid(image, label)  # extra trailing dim on the image is fine
    check_same_grid(tmp_path / "img.nii.gz", tmp_path / "lbl.nii.gz")
    small = read_nifti(write_nifti(np.zeros((6, 5, 3), np.uint8), tmp_path / "small.nii.gz", AFFINE))
    moved = AFFINE.copy()
    moved[0, 3] += 0.5
    shifted = read_nifti(write_nifti(np.zeros((6, 5, 4), np.uint8), tmp_path / "shifted.nii.gz", moved))
    for other in (small, shifted):
        with pytest.raises(NiftiError) as info:
            check_same_grid(image, other)
        assert info.value.reason is Reason.SHAPE_MISMATCH
        assert info.value.files == [str(tmp_path / "img.nii.gz"), other.meta["filename_or_obj"]]
    moved[0, 3] = AFFINE[0, 3] + 1e-4
    check_same_grid(image, MetaTensor(torch.zeros(6, 5, 4), affine=torch.from_numpy(moved)))


def test_write_is_atomic_and_checks_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.nii.gz"
    write_nifti(np.zeros((3, 3, 3), np.float32), target, AFFINE)
    write_nifti(np.ones((3, 3, 3), np.float32), target, AFFINE)  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.nii.gz"]
    assert read_nifti(target).numpy().min() == 1
    with pytest.raises(ValueError):
        write_nifti(np.zeros((3, 3, 3)), tmp_path / "x.nrrd")


def test_loadimaged_matches_read_nifti(tmp_path: Path) -> None:
    from monai.transforms import LoadImaged

    hu = np.random.default_rng(3).integers(-1000, 1000, size=(8, 7, 6)).astype(np.float32)
    img_path = write_nifti(hu, tmp_path / "img.nii.gz", _rotated_affine(), scl=(1.0, -1024.0))
    lbl_path = write_nifti((hu > 0).astype(np.uint8), tmp_path / "lbl.nii.gz", _rotated_affine())
    load = LoadImaged(["image", "label"], reader=NiftiReader(), dtype=None)  # dtype=None: keep the stored dtype
    out = load({"image": str(img_path), "label": str(lbl_path)})
    for key, path in (("image", img_path), ("label", lbl_path)):
        ref = read_nifti(path)
        assert isinstance(out[key], MetaTensor) and out[key].dtype == ref.dtype
        np.testing.assert_array_equal(out[key].numpy(), ref.numpy())
        np.testing.assert_array_equal(out[key].affine.numpy(), ref.affine.numpy())
        assert np.isnan(out[key].meta["original_channel_dim"])
        np.testing.assert_array_equal(out[key].meta["spatial_shape"], [8, 7, 6])
        np.testing.assert_allclose(out[key].meta["spacing"], ref.meta["spacing"])
        assert out[key].meta["filename_or_obj"] == str(path)
    first = LoadImaged("image", reader=NiftiReader(), ensure_channel_first=True)({"image": str(img_path)})
    assert first["image"].shape == (1, 8, 7, 6)
    four_d = write_nifti(np.zeros((4, 3, 2, 5), np.float32), tmp_path / "4d.nii", AFFINE)
    cf = LoadImaged("x", reader=NiftiReader(), ensure_channel_first=True)({"x": str(four_d)})["x"]
    assert cf.shape == (5, 4, 3, 2) and cf.meta["original_channel_dim"] == -1
    assert NiftiReader().verify_suffix("a.nii.gz") and not NiftiReader().verify_suffix("a.dcm")
