"""benchmarks/pretraining_budget.py: scratch taken once, gains per pretraining budget, outputs written."""
from __future__ import annotations

import json

import pytest

from tests.benchmarks.script_loader import load_script


def load():
    return load_script("pretraining_budget")


def _rec(method, arm, seed, value, per_class=1):
    return {"method": method, "arm": arm, "evaluation": method.split()[-1], "fraction": None, "count": None,
            "per_class": per_class, "n_labelled": 2 * per_class, "seed": seed, "metric": "auroc", "value": value}


def _report(epochs, steps, records, tag):
    return {"dataset": "toy", "metric": "auroc", "records": records, "settings": {"tag": tag},
            "pretraining": {"simclr": {"epochs": epochs, "steps": steps, "wall_s": 10.0 * epochs}}}


def test_gain_per_budget_against_one_scratch_run(tmp_path):
    bench = load()
    scratch = [_rec("scratch", "scratch", s, 0.6 + s / 100) for s in range(5)]
    # 5 per class is another budget: it must not enter the 1-per-class comparison
    scratch += [_rec("scratch", "scratch", s, 0.9, per_class=5) for s in range(5)]
    e1 = _report(1, 37, [_rec("simclr finetune", "simclr", s, 0.62 + s / 100 + (s % 2) / 50) for s in range(5)], "e1")
    e5 = _report(5, 185, scratch + [_rec("simclr finetune", "simclr", s, 0.70 + s / 100) for s in range(5)], "scarce")
    rows = bench.budget_points([e1, e5])
    assert [(r["pretrain_steps"], r["arm"]) for r in rows] == [(37, "simclr finetune"), (185, "simclr finetune")]
    assert rows[1]["mean_gain"] == pytest.approx(0.10) and rows[1]["verdict"] == "better"
    assert rows[0]["mean_gain"] == pytest.approx(0.02 + 0.02 * 2 / 5) and rows[0]["n_pairs"] == 5
    paths = [tmp_path / "e1.json", tmp_path / "e5.json"]
    for path, rep in zip(paths, (e1, e5)):
        path.write_text(json.dumps(rep))
    assert bench.main([str(p) for p in paths] + ["--out", str(tmp_path)]) == 0
    md = (tmp_path / "pretraining_budget_toy.md").read_text()
    assert "| simclr finetune | 5 | 185 | 50 | 0.720 | 0.620 | +0.100 [" in md
    assert (tmp_path / "pretraining_budget_toy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "pretraining_budget_toy.json").read_text())["rows"][0]["pretrain_steps"] == 37


def test_refuses_mixed_datasets_and_missing_scratch():
    bench = load()
    with pytest.raises(SystemExit, match="several datasets"):
        bench.budget_points([_report(1, 1, [], "a"), {**_report(1, 1, [], "b"), "dataset": "other"}])
    with pytest.raises(SystemExit, match="no scratch"):
        bench.budget_points([_report(1, 1, [_rec("simclr finetune", "simclr", 0, 0.7)], "a")])
