"""Whole-folder conversion (``medssl convert FOLDER OUT_DIR/``, medssl/data/convert.py): every stack written, named
without header text, each one voxel-exact against the volume it was made from (or dcm2niix's conversion)."""
from __future__ import annotations

import csv
import re

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import DATA_ERROR, main
from medssl.data.convert import convert_folder, is_folder_target
from medssl.data.phantoms import write_dicom_series
from tests.conftest import require_shared
from tests.data.test_dimensions import _enhanced_mr, _volumes, philips  # noqa: F401 - fixture

AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])
NAME = re.compile(r"^\d+(_[a-z]+\d+)*_[0-9a-f]{16}$")  # series number, split / disambiguators, salted key


def _ramp(shape=(12, 10, 5), offset=0):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (i + 20 * j + 400 * k - 1000 + offset).astype(np.float64)


def _canonical(img: nib.Nifti1Image):
    img = nib.as_closest_canonical(img)
    return img.get_fdata(), img.affine


@pytest.fixture
def folder(tmp_path):
    """Two classic series, an enhanced file with two echoes (4D each), a localizer, a text file."""
    root = tmp_path / "in"
    write_dicom_series(_ramp(), AFFINE, root / "a", series_number=3, patient_name="DOE^JANE", patient_id="PID-42")
    write_dicom_series(_ramp(offset=77), AFFINE, root / "b", series_number=5, patient_id="PID-42")
    write_dicom_series(_ramp((12, 10, 2)), AFFINE, root / "scout", series_number=1,
                       extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    (root / "enh").mkdir()
    _enhanced_mr(root / "enh" / "multi_echo.dcm", _volumes())
    (root / "notes.txt").write_text("not an image\n")
    return root


def test_every_stack_written_and_exact(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(folder), str(out) + "/"]) == 0
    assert "wrote 4 of 5 stacks" in capsys.readouterr().out
    with open(out / "conversion.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["series_number"], r["split"], r["status"], r["reason"]) for r in rows] == [
        ("1", "", "skipped", "localizer"), ("3", "", "written", ""), ("5", "", "written", ""),
        ("7", "echo1", "written", ""), ("7", "echo2", "written", "")]
    assert all(NAME.match(r["name"]) for r in rows), [r["name"] for r in rows]
    names = {r["series_number"] + r["split"]: r["name"] for r in rows}
    ref_affine = _canonical(nib.Nifti1Image(_ramp(), AFFINE))[1]
    for key, vol in (("3", _ramp()), ("5", _ramp(offset=77))):
        data, affine = _canonical(nib.load(out / f"{names[key]}.nii.gz"))
        np.testing.assert_array_equal(data, _canonical(nib.Nifti1Image(vol, AFFINE))[0])
        np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
    # the enhanced file: LPS position (-10, 5, 30), spacing 0.9 x 0.8 x 2.5, identity orientation -> RAS affine
    enhanced_affine = np.array([[-0.9, 0, 0, 10.0], [0, -0.8, 0, -5.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    for echo, vol in _volumes().items():
        img = nib.load(out / f"{names[f'7echo{echo}']}.nii.gz")
        assert img.shape == vol.shape  # 4D: the temporal dimension is the 4th axis
        data, affine = _canonical(img)
        ref_data, ref_affine = _canonical(nib.Nifti1Image(vol * 2.0 - 7, enhanced_affine))
        np.testing.assert_array_equal(data, ref_data)
        np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
    listing = " ".join(p.name for p in out.iterdir()) + (out / "conversion.csv").read_text()
    assert "DOE" not in listing and "PID-42" not in listing


def test_folder_reports_a_refused_stack_and_still_writes_the_rest(folder, tmp_path):
    write_dicom_series(_ramp((12, 10, 5)), AFFINE, folder / "gap", series_number=9, slice_positions=[0, 2.5, 5, 10,
                                                                                                       12.5])
    result = convert_folder(folder, tmp_path / "out")
    outcome = {(o.series_number, o.split): (o.status, o.reason) for o in result.stacks}
    assert outcome[(9, "")] == ("skipped", "missing_slice") and outcome[(3, "")] == ("written", "")
    assert result.skipped_files == {"not_dicom": 1}
    assert main(["convert", str(folder), str(tmp_path / "out2")]) == DATA_ERROR  # (not every image stack written)


def test_same_salt_same_names(folder, tmp_path):
    a = convert_folder(folder, tmp_path / "out")
    b = convert_folder(folder, tmp_path / "out")  # the folder's salt.txt is reused
    assert [o.name for o in a.stacks] == [o.name for o in b.stacks]


def test_folder_target_detection(tmp_path, folder):
    assert is_folder_target("out/") and is_folder_target(tmp_path) and is_folder_target("out")
    assert not is_folder_target("x.nii.gz") and not is_folder_target("x.nii")
    assert main(["convert", str(folder), str(tmp_path / "o") + "/", "--series", "2"]) == 2  # one stack: a file


@pytest.mark.realdata
def test_philips_folder_converts_to_every_reference(philips, tmp_path):  # noqa: F811 - fixture
    import sys

    sys.path.insert(0, str(require_shared().parent / "tools"))
    from compare_nifti import same

    result = convert_folder(philips, tmp_path / "out")
    assert [o.status for o in result.stacks] == ["written"] * 11 and result.skipped_files == {"no_pixel_data": 9}
    refs = sorted(require_shared("dicom", "dcm_qa_philips_asl_enh", "Ref_regenerated").glob("*.nii.gz"))
    matched = {ref.name for ref in refs for o in result.stacks if same(o.written[0], ref)[0]}
    assert matched == {ref.name for ref in refs}


@pytest.mark.realdata
def test_siemens_mosaic_folder_converts_to_every_reference(tmp_path):
    import sys

    sys.path.insert(0, str(require_shared().parent / "tools"))
    from compare_nifti import same

    root = require_shared("dicom", "dcm_qa_nih")
    result = convert_folder(root / "In" / "20180918Si", tmp_path / "out")
    assert [o.status for o in result.stacks] == ["written"] * 4
    refs = [root / "Ref" / f"EPI_PE={pe}_{n}.nii" for pe, n in (("AP", 3), ("PA", 4), ("RL", 5), ("LR", 6))]
    assert all(any(same(o.written[0], ref)[0] for o in result.stacks) for ref in refs)


def test_keys_agree_with_the_index(folder, tmp_path, capsys):
    """With --index, convert names stacks by the keys series.csv gives them (the index hashes UIDs before keying,
    the reader now hashes them the same way), so a series.csv key picks its stack, split stacks included."""
    from medssl.data.deid import load_or_create_salt
    from medssl.data.dicom import read_dicom_volume
    from medssl.data.index import build_index

    result = build_index(folder, tmp_path / "index", workers=1, progress=False)
    keys = {s["series_key"] for s in result.series}
    assert len(keys) == 4
    salt = load_or_create_salt(tmp_path / "index")
    for key in keys:
        read_dicom_volume(folder, series=key, salt=salt)  # found, unambiguous
    converted = convert_folder(folder, tmp_path / "out", salt=salt)
    assert {o.series_key for o in converted.stacks if o.status == "written"} == keys
    assert main(["convert", str(folder), "--list", "--index", str(tmp_path / "index")]) == 0
    listing = capsys.readouterr().out
    assert all(key in listing for key in keys)
