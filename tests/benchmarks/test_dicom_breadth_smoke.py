"""Smoke test of benchmarks/dicom_breadth.py: the --quick run converts dcm_qa_12bit and three pydicom files with
both tools and every dcm2niix volume is reproduced (those inputs are all reproduced today)."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from tests.benchmarks.script_loader import load_script
from tests.conftest import REPO, require_shared


@pytest.mark.realdata
def test_quick_run_agrees_with_dcm2niix(tmp_path):
    require_shared("dicom", "dcm_qa_12bit")
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    bench = load_script("dicom_breadth")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "dicom_breadth_quick.json").read_text())
    assert report["totals"]["references"] >= 5 and report["totals"]["agree"] == report["totals"]["references"]
    assert {r["verdict"] for r in report["rows"]} == {"agree"}
    assert (tmp_path / "dicom_breadth_quick.md").read_text().startswith("# DICOM breadth")
