"""Smoke test of benchmarks/pipeline.py: the --quick run builds the 2D and 3D configs through the pretraining CLI,
times loader and model, and the reported ratios and cache states follow from the measured numbers."""
from __future__ import annotations

import importlib.util
import json
import sys

from tests.conftest import REPO


def load_pipeline():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    spec = importlib.util.spec_from_file_location("medssl_bench_pipeline", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path, one_thread):
    bench = load_pipeline()
    out = tmp_path / "out"
    assert bench.main(["--quick", "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads((out / "pipeline_quick.json").read_text())
    assert {"cpu", "cores", "versions", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    by_name = {r["config"]: r for r in report["results"]}
    assert set(by_name) == {"simclr2d_pneumonia", "mae3d_demo"}
    assert by_name["simclr2d_pneumonia"]["method"] == "SimCLR" and by_name["mae3d_demo"]["method"] == "MAE"
    for r in report["results"]:
        model = r["model"]
        assert model["step_s"] > 0 and model["timed_steps"] == 2
        assert model["samples_per_s"] == model["batch_size"] / model["step_s"]
        for row in r["loader"]:
            assert row["samples"] > 0 and row["seconds"] > 0
            assert row["samples_per_s"] == row["samples"] / row["seconds"]
            assert row["ratio_loader_over_model"] == row["samples_per_s"] / model["samples_per_s"]
    # the 2D MedMNIST source has no preprocessing cache; the 3D archive source is measured cold and warm
    assert [(row["num_workers"], row["cache"]) for row in by_name["simclr2d_pneumonia"]["loader"]] == [
        (0, "n/a (in memory)"), (2, "n/a (in memory)")]
    rows = {(row["num_workers"], row["cache"]): row for row in by_name["mae3d_demo"]["loader"]}
    assert set(rows) == {(w, c) for w in (0, 2) for c in ("cold (miss)", "warm (hit)")}
    train_scans = by_name["mae3d_demo"]["train_items"]
    for w in (0, 2):  # a cold epoch writes one entry per training scan, a warm one none
        assert rows[w, "cold (miss)"]["entries_written"] == train_scans
        assert rows[w, "warm (hit)"]["entries_written"] == 0
    assert rows[0, "cold (miss)"]["misses_in_process"] == train_scans and rows[0, "cold (miss)"]["hits_in_process"] == 0
    assert rows[0, "warm (hit)"]["misses_in_process"] == 0 and rows[0, "warm (hit)"]["hits_in_process"] > 0
    text = (out / "pipeline_quick.md").read_text()
    assert text.startswith("# Data pipeline vs model") and "| mae3d_demo | MAE |" in text and "cold (miss)" in text
