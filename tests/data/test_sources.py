"""NiftiFiles leaves the validation/test cases of a recorded split out of pretraining."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.data.nifti import write_nifti
from medssl.data.sources import DatasetRequest, NiftiFiles, case_id


def test_case_id_strips_extension_and_channel_suffix():
    assert case_id("a/hippocampus_001.nii.gz") == "hippocampus_001"
    assert case_id("BRATS_002_0001.nii.gz") == "BRATS_002" and case_id("x.nii") == "x"


def test_exclude_split_leaves_val_and_test_cases_out(tmp_path):
    for i in range(5):
        write_nifti(np.full((8, 8, 8), i, np.float32), tmp_path / f"case{i}_0000.nii.gz", np.eye(4))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case0", "case1", "case4"], "val": ["case2"], "test": ["case3"]}))
    src = NiftiFiles(str(tmp_path / "*_0000.nii.gz"), cache_dir=str(tmp_path / "cache"), val_fraction=0.0,
                     exclude_split=str(split))
    train, _ = src.datasets(DatasetRequest(3, None, 2, 0, None, None))
    assert sorted(case_id(s) for s in train.sources) == ["case0", "case1", "case4"]
    assert src.summary()["excluded_scans"] == 2 and src.summary()["scans"] == 3
    with pytest.raises(ValueError, match="no \\['test'\\]"):
        split.write_text(json.dumps({"val": []}))
        NiftiFiles(str(tmp_path / "*_0000.nii.gz"), exclude_split=str(split)).datasets(
            DatasetRequest(3, None, 2, 0, None, None))
