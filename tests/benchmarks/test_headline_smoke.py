"""benchmarks/headline.py: smallest budget, the fixed headline arm, paired gain, outputs; quick results skipped."""
from __future__ import annotations

import json

import pytest

from tests.benchmarks.script_loader import load_script


def load():
    return load_script("headline")


def _rec(method, seed, value, per_class=None, count=None, fraction=None, metric="auroc"):
    return {"method": method, "fraction": fraction, "count": count, "per_class": per_class, "n_labelled": 2,
            "seed": seed, "metric": metric, "value": value, "wall_s": 30.0,
            "pretrain_wall_s": None if method == "scratch" else 300.0}


def test_headline_rows_and_files(tmp_path):
    bench = load()
    cls = [_rec("scratch", s, 0.70 + s / 100, per_class=1) for s in range(5)]
    cls += [_rec("simclr finetune", s, 0.80 + s / 100, per_class=1) for s in range(5)]
    # a better-scoring arm that is not the headline arm must not be picked; nor a larger budget
    cls += [_rec("simclr knn", s, 0.99, per_class=1) for s in range(5)]
    cls += [_rec("scratch", s, 0.9, per_class=5) for s in range(5)] + [_rec("simclr finetune", s, 0.91, per_class=5)
                                                                       for s in range(5)]
    (tmp_path / "label_efficiency_pneumoniamnist.json").write_text(json.dumps(
        {"dataset": "pneumoniamnist", "metric": "auroc", "records": cls, "settings": {}}))
    seg = [_rec("scratch", s, 0.5, count=1, metric="dice") for s in range(3)]
    seg += [_rec("whole", s, 0.45 - s / 100, count=1, metric="dice") for s in range(3)]
    (tmp_path / "label_efficiency_phantoms.json").write_text(json.dumps(
        {"dataset": "phantoms", "task": "segmentation", "records": seg,
         "runs": [{"method": "whole", "wall_s": 20.0}]}))
    (tmp_path / "label_efficiency_toy_quick.json").write_text(json.dumps({"settings": {"quick": True}}))
    assert bench.main(["--results", str(tmp_path)]) == 0
    rows = {r["dataset"]: r for r in json.loads((tmp_path / "headline.json").read_text())["rows"]}
    assert set(rows) == {"pneumoniamnist", "phantoms"}
    p = rows["pneumoniamnist"]
    assert p["budget"] == "1/class" and p["arm"] == "simclr finetune" and p["verdict"] == "better"
    assert p["gain"] == pytest.approx(0.10) and p["seeds_won"] == 5 and p["peer"] is None
    ph = rows["phantoms"]
    assert ph["arm"] == "whole" and ph["budget"] == "1 case" and ph["verdict"] == "worse"
    md = (tmp_path / "headline.md").read_text()
    assert "| pneumoniamnist | 1/class | AUROC | 0.720 ± 0.016 | not run | 0.820 ± 0.016 (`simclr finetune`) | +0.100" in md
    assert (tmp_path / "headline.png").read_bytes()[:4] == b"\x89PNG"
