"""Smoke test of benchmarks/index_scaling.py: the --quick run indexes three archive sizes, and the growth and
re-index ratios in the results are the ones the measured times give."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO


def load_index_scaling():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    spec = importlib.util.spec_from_file_location("medssl_bench_index_scaling", REPO / "benchmarks" / "index_scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # build_index's worker processes (fork) resolve functions by module name
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path):
    bench = load_index_scaling()
    out = tmp_path / "out"
    assert bench.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads((out / "index_scaling_quick.json").read_text())
    results = report["results"]
    assert [r["files"] for r in results] == [100, 200, 400]
    assert [r["series"] for r in results] == [5, 10, 20]
    for r in results:
        assert r["indexed"] == r["files"] and r["rejected"] == 0
        assert r["reindex_headers_read"] == 0 and r["reindex_headers_reused"] == r["files"]
        assert r["first_files_per_s"] == r["files"] / r["first_s"]
        assert r["reindex_over_first"] == r["reindex_s"] / r["first_s"]
        assert r["per_file_cost_ratio"] == pytest.approx((r["first_s"] / r["files"]) / (results[0]["first_s"] / 100))
    assert results[0]["per_file_cost_ratio"] == 1.0
    v = report["verdict"]
    assert v["per_file_cost_ratio"] == results[-1]["per_file_cost_ratio"] and v["largest"] == 400
    assert v["growth"] == ("linear" if v["per_file_cost_ratio"] <= bench.LINEAR_MAX else "SUPERLINEAR")
    assert {"cpu", "cores", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    text = (out / "index_scaling_quick.md").read_text()
    assert text.startswith("# Cost growth") and "| 400 | 20 |" in text and "**Growth**" in text
