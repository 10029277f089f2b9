"""Smoke test of benchmarks/overhead.py: the --quick run times both arms for both methods and writes the results."""
from __future__ import annotations

import importlib.util
import json
import sys

from tests.conftest import REPO


def load_overhead():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its machine description from ingest.py
    spec = importlib.util.spec_from_file_location("medssl_bench_overhead", REPO / "benchmarks" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path, one_thread):
    bench = load_overhead()
    assert bench.main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "overhead_quick.json").read_text())
    assert [r["method"] for r in report["results"]] == ["mae", "simclr"]
    for r in report["results"]:
        assert r["medssl_s"] > 0 and r["hand_s"] > 0 and r["ratio"] == r["medssl_s"] / r["hand_s"]
        assert r["timed_steps"] == 4
    assert {"cpu", "cores", "versions", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    text = (tmp_path / "overhead_quick.md").read_text()
    assert text.startswith("# Framework overhead") and "| mae |" in text and "| simclr |" in text


def test_both_arms_compute_the_same_loss():
    """The hand-written arm is a fair reference: on the same weights, batch and mask seed its loss equals the
    method's own compute_loss."""
    import torch

    bench = load_overhead()
    for name in ("mae", "simclr"):
        method = bench.make_method(name, quick=True).eval()
        batch = bench.make_batches(name, 1, 4)[0]
        hand = bench.hand_step_fn(method, name)(batch, torch.Generator().manual_seed(3))
        engine = method.compute_loss(batch, torch.Generator().manual_seed(3))["loss"]
        torch.testing.assert_close(hand, engine)
