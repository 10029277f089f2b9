"""Smoke test of benchmarks/memory.py: the --quick run measures peak memory in fresh processes (plain,
gradient checkpointing, bf16) and runs the max-batch search; plus the pure helpers the search relies on."""
from __future__ import annotations

import importlib.util
import json
import sys

import torch

from tests.conftest import REPO


def load_memory():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    spec = importlib.util.spec_from_file_location("medssl_bench_memory", REPO / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path):
    bench = load_memory()
    out = tmp_path / "out"
    assert bench.main(["--quick", "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads((out / "memory_quick.json").read_text())
    rows = {(r["precision"], r["checkpointing"]): r for r in report["rss"]}
    assert set(rows) == {("32-true", False), ("32-true", True), ("bf16-mixed", False)}
    for r in rows.values():
        assert r["status"] == "ok", r.get("error_tail")
        assert r["steps"] == 2 and len(r["step_s"]) == 2
        # the peak covers the process after building (model, data, one batch) plus the training steps
        assert r["peak_rss_bytes"] >= r["rss_after_build_bytes"] > 100 * 2**20
    assert rows["32-true", True]["checkpointing_modules"] == ["model.encoder"]  # the MAE's ViT encoder
    search = report["search"][0]
    assert search["config"] == "mae3d_demo" and search["size"] == 32
    assert [p["batch"] for p in search["probes"]] == [1, 2] and all(p["fits"] for p in search["probes"])
    assert search["max_batch"] == 2 and search["stopped_by"] == "--max-batch 2" and search["first_failure"] is None
    text = (out / "memory_quick.md").read_text()
    assert "| mae3d_demo | 2 |" in text and "| mae3d_demo | 32^3 | >= 2 |" in text


def test_tile_repeats_per_sample_tensors_only():
    bench = load_memory()
    batch = {"image": torch.arange(2.0).view(2, 1), "views": [torch.zeros(2, 3)], "affine": torch.eye(4), "n": 7}
    out = bench.tile(batch, 2, 5)
    assert out["image"].flatten().tolist() == [0, 1, 0, 1, 0] and out["views"][0].shape == (5, 3)
    assert out["affine"].shape == (4, 4) and out["n"] == 7


def test_search_doubles_then_bisects(monkeypatch):
    """Against a fake probe whose peak is 1 GiB + 0.3 GiB per sample under a 4 GiB cap (max batch 10)."""
    bench = load_memory()
    gib = bench.GIB

    def fake_probe(spec, cap, timeout):
        peak = int((1 + 0.3 * spec["batch"]) * gib)
        return {"status": "ok", "peak_rss_bytes": peak, "peak_cuda_bytes": None, "wall_s": 0.1,
                "max_rss_seen_bytes": peak}

    monkeypatch.setattr(bench, "probe", fake_probe)
    args = bench.parse_args(["--max-batch", "64", "--bisect-steps", "5"])
    result = bench.search({"batch": None, "device": "cpu"}, 4 * gib, args)
    assert [p["batch"] for p in result["probes"]] == [1, 2, 4, 8, 16, 12, 10, 11]
    assert result["max_batch"] == 10 and result["first_failure"] == 11 and result["exact"]
    assert result["linear_estimate"]["max_batch"] == 10
    assert abs(result["linear_estimate"]["per_sample_mib"] - 0.3 * 1024) < 1
