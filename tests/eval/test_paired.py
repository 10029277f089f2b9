"""Paired gains over scratch: pairing by budget and seed, signs, bootstrap interval and verdict, against naive code."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medssl.eval.label_efficiency import label_efficiency_plot, markdown_table
from medssl.eval.paired import bootstrap_mean_ci, budget_key, higher_is_better, paired_gains, verdict


def _rec(method, seed, value, metric="dice", count=1, per_class=None, fraction=None):
    n = per_class * 2 if per_class else (count or 10)
    return {"method": method, "fraction": fraction, "count": None if (per_class or fraction) else count,
            "per_class": per_class, "n_labelled": n, "seed": seed, "metric": metric, "value": value}


def _naive_percentile_ci(x, n_resamples=4000, seed=1):
    """Reference: resample with replacement, take the 2.5 / 97.5 percentiles of the means."""
    rng = np.random.default_rng(seed)
    means = [np.mean(rng.choice(x, size=len(x), replace=True)) for _ in range(n_resamples)]
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def test_pairs_by_seed_and_budget_not_by_position():
    scratch = [0.60, 0.70, 0.50, 0.65, 0.55]
    gains = [0.05, 0.02, 0.08, 0.03, 0.06]
    records = [_rec("scratch", s, v) for s, v in enumerate(scratch)]
    # the arm's records arrive in reverse seed order: pairing must follow the seed, not the list position
    records += [_rec("finetune", s, scratch[s] + gains[s]) for s in reversed(range(5))]
    # another budget with other values must not mix into count=1
    records += [_rec("scratch", s, 0.9, count=2) for s in range(5)] + [_rec("finetune", s, 0.8, count=2)
                                                                          for s in range(5)]
    rows = {(r["arm"], r["count"]): r for r in paired_gains(records)}
    one = rows[("finetune", 1)]
    assert one["gains"] == pytest.approx(gains) and one["seeds"] == [0, 1, 2, 3, 4]
    assert one["mean_gain"] == pytest.approx(np.mean(gains))
    assert one["seeds_won"] == 5 and one["verdict"] == "better" and 0 < one["ci_low"] < one["mean_gain"] < one["ci_high"]
    two = rows[("finetune", 2)]
    assert two["mean_gain"] == pytest.approx(-0.1) and two["verdict"] == "worse" and two["seeds_won"] == 0
    assert ("scratch", 1) not in rows


def test_bootstrap_interval_close_to_a_naive_percentile_bootstrap():
    x = np.array([0.12, -0.03, 0.07, 0.01, 0.09, 0.04, -0.01, 0.05])
    low, high = bootstrap_mean_ci(x)
    ref_low, ref_high = _naive_percentile_ci(x)
    assert low < x.mean() < high
    # BCa shifts the percentile interval a little; both describe the same spread
    assert low == pytest.approx(ref_low, abs=0.015) and high == pytest.approx(ref_high, abs=0.015)
    assert bootstrap_mean_ci(x) == bootstrap_mean_ci(x)  # seeded: the same report twice


def test_degenerate_and_short_inputs():
    assert bootstrap_mean_ci([0.2, 0.2, 0.2]) == (0.2, 0.2)
    for short in ([0.3], [0.1, 0.2]):  # two values: their bootstrap only spans them, no interval is claimed
        low, high = bootstrap_mean_ci(short)
        assert math.isnan(low) and math.isnan(high) and verdict(low, high) == "tie"
    assert verdict(-0.01, 0.02) == "tie" and verdict(0.001, 0.02) == "better" and verdict(-0.2, -0.1) == "worse"


def test_lower_is_better_metrics_flip_the_sign_and_undefined_pairs_are_left_out():
    assert not higher_is_better("hd95") and not higher_is_better("hd95_organ") and higher_is_better("dice_organ")
    records = [_rec("scratch", s, 10.0, metric="hd95") for s in range(3)]
    records += [_rec("finetune", 0, 8.0, metric="hd95"), _rec("finetune", 1, 7.0, metric="hd95"),
                _rec("finetune", 2, None, metric="hd95")]
    (row,) = paired_gains(records)
    assert row["gains"] == [2.0, 3.0] and row["n_undefined"] == 1 and row["n_pairs"] == 2
    assert row["verdict"] == "tie" and math.isnan(row["ci_low"])


def test_tie_when_the_interval_contains_zero():
    scratch = [0.6, 0.7, 0.5, 0.65, 0.55]
    noise = [0.04, -0.05, 0.03, -0.02, 0.01]
    records = [_rec("scratch", s, v) for s, v in enumerate(scratch)]
    records += [_rec("knn", s, v + d) for s, (v, d) in enumerate(zip(scratch, noise))]
    (row,) = paired_gains(records)
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "tie" and row["seeds_won"] == 3


def test_budget_kinds_and_custom_arm_names():
    assert budget_key({"fraction": 0.01, "count": None}) == ("fraction", 0.01)
    assert budget_key({"fraction": None, "count": None, "per_class": 5}) == ("per_class", 5.0)
    assert budget_key({"fraction": None, "count": 2}) == ("count", 2.0)
    records = [dict(_rec("scratch", s, 0.5, metric="auroc", per_class=1), arm="scratch") for s in range(3)]
    records += [dict(_rec("finetune", s, 0.6 + s / 100, metric="auroc", per_class=1), arm="simclr finetune")
                for s in range(3)]
    (row,) = paired_gains(records, arm=lambda r: r["arm"])
    assert row["arm"] == "simclr finetune" and row["per_class"] == 1 and row["count"] is None


def test_report_table_and_gain_panel(tmp_path):
    scratch = [0.60, 0.70, 0.50, 0.65, 0.55]
    records = [_rec("scratch", s, v, per_class=1, metric="auroc") for s, v in enumerate(scratch)]
    records += [_rec("finetune", s, v + 0.05 + s / 100, per_class=1, metric="auroc") for s, v in enumerate(scratch)]
    result = {"dataset": "toy", "split": "test", "records": records,
              "data": {"path": "x", "n_train": 100, "n_val": 10, "n_test": 20}}
    md = markdown_table(result, ("auroc",), ("finetune", "scratch"))
    assert "| finetune | 1/class | 2 | 5 |" in md
    assert "## Paired gain over scratch" in md
    line = next(x for x in md.splitlines() if x.startswith("| finetune | 1/class | AUROC"))
    assert "| 5 | " in line and "+0.070 [" in line and "| 5/5 | better |" in line
    png = label_efficiency_plot(result, tmp_path / "le.png", "auroc", ("finetune", "scratch"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no scratch arm: no paired section, single panel
    alone = {**result, "records": [r for r in records if r["method"] != "scratch"]}
    assert "Paired gain" not in markdown_table(alone, ("auroc",))


def test_pretraining_runs_are_averaged_per_seed_before_pairing():
    records = [_rec("scratch", s, 0.5 + s / 10) for s in range(2)]
    for pseed in (0, 1):
        records += [dict(_rec("simclr finetune", s, 0.6 + s / 10 + pseed / 100), pretrain_seed=pseed)
                    for s in range(2)]
    (row,) = paired_gains(records)
    # one pair per label subset (seed): the scratch run of a seed is not counted twice
    assert row["n_pairs"] == 2 and row["seeds"] == [0, 1] and row["replicates"] == [2, 2]
    assert row["gains"] == pytest.approx([0.105, 0.105])


def test_json_ready_replaces_non_finite_floats_throughout():
    from medssl.eval.paired import json_ready

    row = {"mean_gain": 0.1, "ci_low": math.nan, "pair": (0.5, math.nan), "gains": [math.inf, 1.0], "arm": "x"}
    assert json_ready(row) == {"mean_gain": 0.1, "ci_low": None, "pair": [0.5, None], "gains": [None, 1.0],
                               "arm": "x"}
