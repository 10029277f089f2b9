"""Smoke test of benchmarks/ssl_medmnist.py on the real MedMNIST files: --quick runs complete and the report holds
probe metrics before (random initialisation) and after pretraining."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO, require_shared

pytestmark = pytest.mark.realdata


def load_bench():
    spec = importlib.util.spec_from_file_location("medssl_bench_ssl", REPO / "benchmarks" / "ssl_medmnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method, dataset", [("simclr", "pneumonia2d"), ("dino", "adrenal3d")])
def test_quick_run_writes_results(method, dataset, tmp_path, monkeypatch, one_thread):
    require_shared("medmnist", "pneumoniamnist.npz")
    require_shared("medmnist", "adrenalmnist3d.npz")
    bench = load_bench()
    out = tmp_path / "out"
    assert bench.main(["--quick", "--methods", method, "--datasets", dataset, "--runs-dir", str(tmp_path / "runs"),
                       "--out", str(out)]) == 0
    report = json.loads((out / "ssl_medmnist_quick.json").read_text())
    (run,) = report["runs"]
    assert run["method"] == method and run["dataset"] == dataset and run["steps"] == 2
    for stage in ("before", "after"):
        assert 0.0 <= run[stage]["knn_acc"] <= 1.0 and 0.0 <= run[stage]["linear_acc"] <= 1.0
    assert len(report["machine"]["loadavg_start"]) == len(report["machine"]["loadavg_end"]) == 3
    assert report["machine"]["versions"]["torch"]
    text = (out / "ssl_medmnist_quick.md").read_text()
    assert text.startswith("# Self-supervised pretraining on MedMNIST")
    assert "load average start" in text and f"| {method} | {dataset} | 1 | 2 |" in text
    assert (tmp_path / "runs" / f"{method}_{dataset}" / "probe.json").is_file()
