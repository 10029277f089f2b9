"""Smoke test of benchmarks/dedup_search.py: the --quick run times both searches on two sizes, they agree (the
script exits otherwise), and the ratios in the results are the ones the measured times give."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO


def test_quick_run_writes_results(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    spec = importlib.util.spec_from_file_location("medssl_bench_dedup_search", REPO / "benchmarks" / "dedup_search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "dedup_search_quick.json").read_text())
    assert [r["series"] for r in report["results"]] == [200, 400]
    for r in report["results"]:
        assert r["ratio"] == pytest.approx(r["reference_s"] / r["medssl_s"])
        assert r["ns_per_pair"] == pytest.approx(r["medssl_s"] / (r["series"] * (r["series"] - 1) / 2) * 1e9)
    assert {"cpu", "cores", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    text = (tmp_path / "dedup_search_quick.md").read_text()
    assert text.startswith("# Near-duplicate search") and "| 400 |" in text
