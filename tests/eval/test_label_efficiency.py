"""Label-efficiency summaries, tables and plots against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medssl.eval.label_efficiency import budget_label, label_efficiency_plot, markdown_table, summarise


def _records():
    recs = []
    for method, base in (("scratch", 0.6), ("finetune", 0.8)):
        for count in (5, 20):
            for seed, noise in zip((0, 1, 2), (0.0, 0.02, -0.01)):
                recs.append({"method": method, "fraction": None, "count": count, "n_labelled": count, "seed": seed,
                             "metric": "dice", "value": base + count / 100 + noise})
    recs.append({"method": "finetune", "fraction": None, "count": 5, "n_labelled": 5, "seed": 3,
                 "metric": "hd95", "value": None})
    return recs


def test_summarise_mean_std_and_order():
    rows = summarise(_records(), method_order=("finetune", "scratch"))
    assert [r["method"] for r in rows][:3] == ["finetune"] * 3
    dice = next(r for r in rows if r["method"] == "scratch" and r["count"] == 20 and r["metric"] == "dice")
    vals = np.array([0.8, 0.82, 0.79])
    assert dice["mean"] == pytest.approx(vals.mean()) and dice["std"] == pytest.approx(vals.std(ddof=1))
    assert dice["n_seeds"] == 3 and dice["n_undefined"] == 0
    hd = next(r for r in rows if r["metric"] == "hd95")
    assert math.isnan(hd["mean"]) and hd["n_undefined"] == 1


def test_markdown_table_rows_and_plot(tmp_path):
    result = {"dataset": "toy", "split": "test", "records": _records(),
              "data": {"path": "x", "n_train": 20, "n_val": None, "n_test": 4}}
    md = markdown_table(result, ("dice", "hd95"), ("finetune", "scratch"), unit="cases")
    assert "| finetune | 5 cases | 5 | 3 | 0.853 ± 0.015 | n/a |" in md
    assert "| scratch | 20 cases | 20 | 3 | 0.803 ± 0.015 | n/a |" in md
    assert "20 train / 4 test cases" in md
    png = label_efficiency_plot(result, tmp_path / "le.png", "dice", x="count")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no records"):
        label_efficiency_plot(result, tmp_path / "x.png", "auroc")
    assert budget_label(0.01, None) == "1%" and budget_label(None, 5) == "5 items"
