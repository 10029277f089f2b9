"""Paired comparisons: does an arm beat a baseline on the *same* label subsets and seeds, beyond seed noise?

Few-label results vary more between label subsets than between methods: two arms compared by their means over
seeds can differ by less than the spread of either. Each arm here is compared with the baseline (``scratch``)
run by run: the gain of one seed is ``arm - baseline`` on the same budget, subset and seed (for metrics where lower
is better, such as HD95, ``baseline - arm``, so a positive gain is always an improvement). Over the seeds:

* the mean paired gain and its 95% bootstrap confidence interval (``scipy.stats.bootstrap``, BCa where the gains
  allow it, else the percentile interval; seeded, so a report is reproducible);
* the seeds won (gain > 0) out of the pairs;
* the verdict: ``"better"`` when the whole interval lies above zero, ``"worse"`` when below, ``"tie"`` otherwise
  (also with fewer than :data:`MIN_PAIRS` pairs, where no interval is defined).

With few seeds (5) a bootstrap interval is somewhat narrower than the true one; a verdict of "better" over 5 seeds
should come with all or nearly all seeds won, which the tables show beside it.

:func:`paired_gains` reads the records of the label-efficiency protocols (one per method x budget x seed x
metric, see :mod:`medssl.eval.label_efficiency`); :func:`bootstrap_mean_ci` is the interval alone.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["MIN_PAIRS", "bootstrap_mean_ci", "budget_key", "higher_is_better", "json_ready", "paired_gains", "verdict"]

#: fewer pairs than this give no interval (and the verdict "tie"): a bootstrap of two values only spans them
MIN_PAIRS = 3
#: metrics where a smaller value is better (a gain is then baseline - arm)
LOWER_IS_BETTER_PREFIXES = ("hd95", "loss", "error")


def higher_is_better(metric: str) -> bool:
    """False for distances and losses (``hd95``, ``hd95_<label>``, ``loss`` ...), True otherwise."""
    return not metric.startswith(LOWER_IS_BETTER_PREFIXES)


def budget_key(record: dict[str, Any]) -> tuple[str, float]:
    """How a record's label budget was asked for: ``("fraction", f)``, ``("per_class", k)`` or ``("count", n)``."""
    if record.get("fraction") is not None:
        return "fraction", float(record["fraction"])
    if record.get("per_class") is not None:
        return "per_class", float(record["per_class"])
    return "count", float(record.get("count") or 0)


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float]:
    """The ``confidence`` bootstrap interval of the mean of ``values`` (NaN, NaN for fewer than MIN_PAIRS).

    BCa (bias-corrected and accelerated) interval; where BCa is undefined (e.g. values that are nearly all equal,
    whose jackknife has no spread) the percentile interval. All-equal values give the degenerate interval
    ``(v, v)``.
    """
    from scipy.stats import bootstrap

    x = np.asarray([float(v) for v in values], dtype=float)
    if x.size < MIN_PAIRS or not np.isfinite(x).all():
        return math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns (DegenerateDataWarning) where BCa is undefined
            res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method=method,
                            rng=np.random.default_rng(seed), vectorized=True)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


def json_ready(value: Any) -> Any:
    """``value`` (a row, or anything in it) with non-finite floats (no interval, no mean) as None, which JSON can
    hold; dicts, lists and tuples are converted throughout."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def verdict(low: float, high: float) -> str:
    """``"better"`` (interval above zero), ``"worse"`` (below zero) or ``"tie"`` (contains zero or undefined)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "tie"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "tie"


def paired_gains(records: Sequence[dict[str, Any]], *, baseline: str = "scratch",
                 metrics: Sequence[str] | None = None, arm: Callable[[dict[str, Any]], str] | None = None,
                 confidence: float = 0.95, n_resamples: int = 10_000) -> list[dict[str, Any]]:
    """One row per arm x budget x metric: the paired gain of the arm over ``baseline`` (see module docstring).

    Args:
        records: protocol records (``method``, ``fraction`` / ``count`` / ``per_class``, ``n_labelled``, ``seed``,
            ``metric``, ``value``). Runs pair on (budget, seed): the protocols draw one label subset per budget and
            seed and give it to every method. Records with a ``pretrain_seed`` (several pretraining runs of one
            arm) are averaged per seed first: the pair is (mean of the arm's runs on that subset, the baseline's
            run), one per seed, so the baseline's single run is not counted as several independent pairs.
        baseline: the arm every other arm is compared with.
        metrics: the metrics to compare (default: all).
        arm: the arm name of a record (default ``record["method"]``; the benchmark harness names arms by pretraining
            method and evaluation).
        confidence, n_resamples: of the bootstrap interval.

    Rows: ``arm``, ``baseline``, ``budget`` (``(kind, value)``), ``fraction`` / ``count`` / ``per_class``,
    ``n_labelled`` (mean), ``metric``, ``n_pairs``, ``seeds`` (paired), ``replicates`` (the arm's runs averaged per
    seed), ``gains`` (per seed), ``mean_gain``,
    ``ci_low``, ``ci_high``, ``confidence``, ``seeds_won``, ``verdict``, ``arm_mean``, ``baseline_mean``.
    Pairs where either value is undefined (None/NaN) are left out and counted in ``n_undefined``. Rows keep the order
    in which arms first appear, then budget order.
    """
    name = arm or (lambda r: r["method"])
    # one value per replicate: (pretraining seed, seed); the baseline (no pretraining) pairs on the seed alone
    table: dict[tuple, dict[tuple, float | None]] = {}
    n_labelled: dict[tuple, list[float]] = {}
    for r in records:
        if metrics is not None and r["metric"] not in metrics:
            continue
        key = (name(r), budget_key(r), r["metric"])
        table.setdefault(key, {})[(r.get("pretrain_seed"), int(r["seed"]))] = r["value"]
        n_labelled.setdefault((key[1], key[2]), []).append(float(r.get("n_labelled") or 0))
    arms = list(dict.fromkeys(k[0] for k in table))
    rows = []
    for (a, budget, metric), values in table.items():
        base_runs = table.get((baseline, budget, metric))
        if a == baseline or base_runs is None:
            continue
        base = {seed: v for (_, seed), v in base_runs.items()}
        sign = 1.0 if higher_is_better(metric) else -1.0
        seeds, gains, mine, theirs, undefined, replicates = [], [], [], [], 0, []
        for seed in sorted({k[1] for k in values} & set(base)):
            # the arm's runs on this seed's label subset (one per pretraining run), averaged: the pairing unit is the
            # subset, so the interval does not count one scratch run several times as independent evidence
            runs = [values[k] for k in values if k[1] == seed]
            b = base[seed]
            if b is None or not math.isfinite(b) or any(v is None or not math.isfinite(v) for v in runs):
                undefined += 1
                continue
            v = float(np.mean(runs))
            seeds.append(seed)
            replicates.append(len(runs))
            gains.append(sign * (v - float(b)))
            mine.append(v)
            theirs.append(float(b))
        low, high = bootstrap_mean_ci(gains, confidence, n_resamples)
        kind, size = budget
        rows.append({
            "arm": a, "baseline": baseline, "budget": [kind, size],
            "fraction": size if kind == "fraction" else None, "count": int(size) if kind == "count" else None,
            "per_class": int(size) if kind == "per_class" else None,
            "n_labelled": float(np.mean(n_labelled[(budget, metric)])), "metric": metric,
            "n_pairs": len(gains), "n_undefined": undefined, "seeds": seeds, "replicates": replicates, "gains": gains,
            "mean_gain": float(np.mean(gains)) if gains else math.nan, "ci_low": low, "ci_high": high,
            "confidence": confidence, "seeds_won": int(sum(g > 0 for g in gains)), "verdict": verdict(low, high),
            "arm_mean": float(np.mean(mine)) if mine else math.nan,
            "baseline_mean": float(np.mean(theirs)) if theirs else math.nan})
    order = {a: i for i, a in enumerate(arms)}
    rows.sort(key=lambda r: (order[r["arm"]], r["budget"][0] != "per_class", r["budget"][0] != "count",
                             r["budget"][1], r["metric"]))
    return rows
