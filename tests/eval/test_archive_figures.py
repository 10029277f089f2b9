"""Archive figures: the index accounting chart counts what the manifest says, and the orthogonal planes show
every stored orientation in the same radiological convention with the physical aspect ratio."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl.data.index import build_index
from medssl.data.phantoms import write_dicom_series
from medssl.eval.archive_figures import index_accounting, orthogonal_planes, volume_planes
from medssl.eval.figures import FigureInputError


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_index_accounting_draws_the_manifest(tmp_path):
    archive = tmp_path / "archive"
    vol = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    write_dicom_series(vol, np.diag([1.0, 1.0, 2.0, 1.0]), archive / "s1")
    (archive / "junk.dcm").write_bytes(b"not a dicom file")
    (archive / "empty.dcm").write_bytes(b"")
    build_index(archive, tmp_path / "index", progress=False)
    out = index_accounting(tmp_path / "index", tmp_path / "acc.png")
    assert _is_png(out)


def test_index_accounting_names_a_missing_manifest(tmp_path):
    with pytest.raises(FigureInputError, match="files.csv"):
        index_accounting(tmp_path, tmp_path / "x.png")


def _stored(arr, base_affine, perm, flips):
    """The same physical volume stored with voxel axes permuted (stored axis j = base axis perm[j]) and flipped."""
    stored = arr.transpose(perm)
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for j, (axis, flip) in enumerate(zip(perm, flips)):
        if flip:
            stored = np.flip(stored, axis=j)
            m[axis, j], m[axis, 3] = -1.0, arr.shape[axis] - 1
        else:
            m[axis, j] = 1.0
    return MetaTensor(torch.as_tensor(stored.copy()), affine=torch.as_tensor(base_affine @ m))


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("flips", [(False, False, False), (True, True, False), (True, False, True), (False, True, True)])
def test_planes_are_the_same_for_every_stored_orientation(perm, flips):
    arr = np.random.default_rng(0).normal(size=(6, 8, 10))
    base_affine = np.diag([-0.5, -0.8, 3.0, 1.0])  # L-P-S voxel axes (as DICOM stores axial slices)
    reference, ref_spacing, note = orthogonal_planes(MetaTensor(torch.as_tensor(arr), affine=torch.as_tensor(base_affine)))
    planes, spacing, _ = orthogonal_planes(_stored(arr, base_affine, perm, flips))
    assert note == "L-P-S display" and spacing == pytest.approx((0.5, 0.8, 3.0)) == ref_spacing
    for (name_a, a, aspect_a), (name_b, b, aspect_b) in zip(reference, planes):
        assert name_a == name_b and aspect_a == pytest.approx(aspect_b)
        np.testing.assert_array_equal(a, b)
    assert [p[2] for p in planes] == pytest.approx([0.8 / 0.5, 3.0 / 0.5, 3.0 / 0.8])


def test_planes_put_left_right_anterior_up_and_superior_up():
    # voxel axes already L-P-S (a DICOM-like RAS affine with -x, -y): the pictures are plain transposes/flips
    arr = np.zeros((6, 8, 10))
    arr[5, 0, 5] = 1.0   # most left (+L), most anterior (y index 0 = anterior), mid z
    arr[3, 4, 9] = 2.0   # most superior
    vol = MetaTensor(torch.as_tensor(arr), affine=torch.as_tensor(np.diag([-1.0, -1.0, 1.0, 1.0])))
    (_, axial, _), (_, coronal, _), (_, sagittal, _) = orthogonal_planes(vol)[0]
    assert axial.shape == (8, 6) and axial[0, 5] == 1.0  # anterior at the top, left on the right
    assert coronal.shape == (10, 6) and coronal[0, 3] == 2.0  # superior at the top
    assert sagittal.shape == (10, 8) and sagittal[0, 4] == 2.0
    # the same volume stored R-A-I (every axis reversed) gives identical pictures
    flipped = MetaTensor(torch.as_tensor(arr[::-1, ::-1, ::-1].copy()),
                         affine=torch.as_tensor(np.array([[1.0, 0, 0, -5], [0, 1, 0, -7], [0, 0, -1, 9], [0, 0, 0, 1]])))
    for (_, a, _), (_, b, _) in zip(orthogonal_planes(vol)[0], orthogonal_planes(flipped)[0]):
        np.testing.assert_array_equal(a, b)


def test_volume_planes_writes_png_and_checks_input(tmp_path):
    out = volume_planes(np.random.default_rng(0).normal(size=(1, 12, 10, 6)), tmp_path / "p.png", spacing=(1, 1, 2))
    assert _is_png(out)
    with pytest.raises(FigureInputError, match="volume"):
        volume_planes(np.zeros((4, 4)), tmp_path / "q.png")
    with pytest.raises(FigureInputError, match="spacing"):
        volume_planes(np.zeros((4, 4, 4)), tmp_path / "q.png", spacing=(1, 0, 1))
    with pytest.raises(FigureInputError, match="channel"):
        volume_planes(np.zeros((2, 4, 4, 4)), tmp_path / "q.png", channel=2)
