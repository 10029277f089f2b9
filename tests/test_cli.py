"""The `medssl` command end to end on generated phantoms: phantoms -> index -> convert -> dataset."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import DATA_ERROR, main
from medssl.data.cache import PreprocessCache, PreprocessPlan
from medssl.data.dataset import ScanDataset


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["phantoms", str(root / "demo"), "--n", "3", "--shape", "32", "32", "24"]) == 0
    return root


def test_phantoms_index_convert(archive, capsys):
    demo = archive / "demo"
    assert main(["index", str(demo / "dicom"), "--out", str(archive / "index"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "seen 72 = indexed 72 + skipped 0" in out
    with open(archive / "index" / "series.csv") as fh:
        series = list(csv.DictReader(fh))
    assert len(series) == 3 and {r["status"] for r in series} == {"ok"}
    # identifiers written into the phantom headers never reach the outputs
    for f in (archive / "index").iterdir():
        if f.is_file():
            text = f.read_bytes()
            assert b"PHANTOM" not in text and b"MEDSSL-PHANTOM" not in text, f.name

    case = sorted((demo / "dicom").iterdir())[0]
    out_nii = archive / "case.nii.gz"
    assert main(["convert", str(case), str(out_nii)]) == 0
    ref = nib.as_closest_canonical(nib.load(demo / "nifti" / "imagesTr" / f"{case.name}_0000.nii.gz"))
    ours = nib.as_closest_canonical(nib.load(out_nii))
    np.testing.assert_array_equal(ours.get_fdata(), ref.get_fdata())
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    sidecar = json.loads((archive / "case.json").read_text())
    assert sidecar["modality"] == "CT" and "PatientName" not in json.dumps(sidecar)


def test_convert_needs_a_choice_when_folder_holds_several_series(archive, capsys):
    code = main(["convert", str(archive / "demo" / "dicom"), str(archive / "x.nii.gz")])
    assert code == DATA_ERROR
    assert "ambiguous_series" in capsys.readouterr().out
    assert main(["convert", str(archive / "demo" / "dicom"), str(archive / "x.nii.gz"), "--series", "2"]) == 0


def test_dataset_from_real_index(archive):
    index = archive / "index_ds"
    assert main(["index", str(archive / "demo" / "dicom"), "--out", str(index), "--quiet"]) == 0
    cache = PreprocessCache(archive / "cache", PreprocessPlan(target_spacing=(2.0, 2.0, 2.0), intensity="ct_window"))
    ds = ScanDataset.from_index(index, archive / "demo" / "dicom", cache, spatial_dims=3, patch_size=(16, 16, 16))
    assert len(ds) == 3
    item = ds[0]
    assert tuple(item["image"].shape) == (1, 16, 16, 16)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    slices = ScanDataset.from_index(index, archive / "demo" / "dicom", cache, spatial_dims=2)
    assert len(slices) > 3 and slices[0]["image"].ndim == 3


@pytest.mark.realdata
def test_dataset_reads_series_accepted_under_opt_in_policy(tmp_path):
    """The tilted CT is indexed only with --tilt correct --uneven resample; the dataset must read it the same way."""
    from tests.conftest import require_shared

    ct = require_shared("dicom", "dcm_qa_ct", "In")
    assert main(["index", str(ct), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    with open(tmp_path / "idx" / "series.csv") as fh:
        assert list(csv.DictReader(fh)) == []  # strict: rejected
    assert main(["index", str(ct), "--out", str(tmp_path / "idx2"), "--quiet", "--tilt", "correct",
                 "--uneven", "resample"]) == 0
    cache = PreprocessCache(tmp_path / "cache", PreprocessPlan(target_spacing=(4.0, 4.0, 4.0), intensity="ct_window"))
    ds = ScanDataset.from_index(tmp_path / "idx2", ct, cache, spatial_dims=3)
    assert len(ds) == 1 and ds[0]["image"].shape[0] == 1
