"""Smoke test of benchmarks/ingest.py: the --quick run completes in-process and writes complete, positive results."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_ingest():
    # registered in sys.modules so that the worker processes (fork) can unpickle its functions by reference
    spec = importlib.util.spec_from_file_location("medssl_bench_ingest", REPO / "benchmarks" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path, capsys):
    ingest = load_ingest()
    assert ingest.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "ingest.json").read_text())
    assert (tmp_path / "out" / "ingest.md").read_text().startswith("# Ingestion benchmark")

    assert {"machine", "settings", "workloads", "headline", "notes"} <= set(report)
    assert {"cpu", "cores", "ram_gib", "python", "versions", "date"} <= set(report["machine"])
    assert {"torch", "pydicom", "SimpleITK"} <= set(report["machine"]["versions"])
    gen = report["workloads"]["generated"]
    assert gen["n_files"] == 60 and gen["n_series"] == 3
    expected = {f"{tool}_w{w}" for tool in ("medssl_index", "medssl_read", "medssl_index_read", "sitk", "dicom2nifti")
                for w in (1, 2)} | {"medssl_reindex_reuse_w2"}
    assert set(gen["results"]) == expected
    for key, row in gen["results"].items():
        assert row["seconds"] > 0 and row["files_per_s"] > 0 and row["mb_per_s"] > 0, key
        assert row["series_ok"] == row["series_total"] == 3, (key, row["outputs"])
    assert gen["results"]["medssl_index_w1"]["extra"]["indexed"] == 60
    assert gen["results"]["medssl_reindex_reuse_w2"]["extra"]["headers_read"] == 0
    assert all(v is not None and v > 0 for v in gen["ratios"].values())

    head = report["headline"]
    assert head["ratio"] == gen["ratios"]["index_read_vs_sitk_w2"]
    assert head["status"] == ("PASS" if head["ratio"] >= head["target"] else "BELOW TARGET")
    assert head["status"] in capsys.readouterr().out
