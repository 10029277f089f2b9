"""Label-efficiency reports shared by every few-label protocol (classification and segmentation).

A protocol result is a dict with ``dataset``, ``data`` (``path``, ``n_train`` …), optional ``encoder`` and
``records``: one record per method x budget x seed x metric with the keys ``method``, ``fraction`` (or None),
``count`` (or None), ``per_class`` (or None / absent), ``n_labelled``, ``seed``, ``metric`` and ``value`` (None
where undefined). A budget is one of the three (:func:`medssl.eval.paired.budget_key`). From it:

* :func:`summarise`: mean ± sample std over seeds per method x budget x metric;
* :func:`markdown_table`: the ``.md`` table (one row per method x budget, one column per metric), followed by the
  paired gain of every method over ``scratch`` (mean gain, 95% bootstrap CI, seeds won, better / tie / worse;
  :func:`medssl.eval.paired.paired_gains`) where the result has a scratch arm;
* :func:`label_efficiency_plot`: a metric versus the number (or fraction) of labelled items, one line per method,
  error bars = std over seeds; beside it, with a scratch arm, the paired gain over scratch with its 95% CI.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


from medssl.eval.paired import budget_key, paired_gains

__all__ = ["budget_label", "label_efficiency_plot", "markdown_table", "paired_table", "summarise"]

BASELINE = "scratch"

METRIC_TITLES = {"auroc": "AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "dice": "mean Dice", "hd95": "mean HD95 (mm)"}


def budget_label(fraction: float | None, count: int | None, unit: str = "items", per_class: int | None = None) -> str:
    """``"1%"`` for a fraction, ``"5/class"`` for labelled items per class, ``"5 items"`` (or ``"5 cases"``) for a
    count."""
    if fraction is not None:
        return f"{100 * fraction:g}%"
    if per_class is not None:
        return f"{per_class}/class"
    return f"{count} {unit[:-1] if count == 1 and unit.endswith('s') else unit}"


def _label(row: dict[str, Any], unit: str) -> str:
    return budget_label(row.get("fraction"), row.get("count"), unit, row.get("per_class"))


def summarise(records: list[dict[str, Any]], method_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Mean, sample std (NaN for one seed) and seed count per method x budget x metric.

    Undefined values (None/NaN) are left out of the mean and std and counted in ``n_undefined``; rows are sorted
    by ``method_order`` (unknown methods last, by name) and then by budget.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], budget_key(r), r["metric"]), []).append(r)
    rows = []
    for (method, (kind, size), metric), rs in groups.items():
        fraction = size if kind == "fraction" else None
        count = int(size) if kind == "count" else None
        per_class = int(size) if kind == "per_class" else None
        values = np.array([np.nan if r["value"] is None else r["value"] for r in rs], dtype=float)
        finite = np.isfinite(values)
        rows.append({"method": method, "fraction": fraction, "count": count, "per_class": per_class, "metric": metric,
                     "mean": float(np.mean(values[finite])) if finite.any() else math.nan,
                     "std": float(np.std(values[finite], ddof=1)) if finite.sum() > 1 else math.nan,
                     "n_seeds": len(rs), "n_undefined": int((~finite).sum()),
                     "n_labelled": float(np.mean([r["n_labelled"] for r in rs]))})
    order = {m: i for i, m in enumerate(method_order)}
    rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["method"], r["fraction"] is None,
                             r["fraction"] or 0, r["per_class"] is None, r["per_class"] or 0, r["count"] or 0))
    return rows


def _mean_std(row: dict[str, Any] | None) -> str:
    if row is None or not math.isfinite(row["mean"]):
        return "n/a"
    text = f"{row['mean']:.3f} ± {row['std']:.3f}" if math.isfinite(row["std"]) else f"{row['mean']:.3f} ± –"
    return text + (f" ({row['n_undefined']} undefined)" if row.get("n_undefined") else "")


def markdown_table(result: dict[str, Any], metrics: Sequence[str], method_order: Sequence[str] = (),
                   unit: str = "items", paired_metrics: Sequence[str] | None = None) -> str:
    """The ``.md`` report: one row per method x budget, mean ± std over seeds of each metric; then, where the result
    has a ``scratch`` arm, :func:`paired_table` for ``paired_metrics`` (default: the first metric)."""
    rows = summarise(result["records"], method_order)
    table: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        table.setdefault((r["method"], r["fraction"], r["count"], r["per_class"]), {})[r["metric"]] = r
    enc = result.get("encoder")
    data = result["data"]
    seeds = sorted({r["seed"] for r in result["records"]})
    split = result.get("split", "test")
    sizes = " / ".join(f"{data[k]} {k[2:]}" for k in ("n_train", "n_val", "n_test") if data.get(k) is not None)
    lines = [f"# Label efficiency: {result['dataset']}", "",
             f"Data: `{data['path']}` ({sizes} {unit}"
             + (f", {data['num_classes']} classes" if data.get("num_classes") else "") + "). "
             + (f"Encoder: `{enc['path']}` (method {enc.get('method')}, {enc['architecture']['name']}, weights "
                f"sha256 {enc['sha256'][:12]}…). " if enc else "")
             + f"Metrics on the **{split}** split; mean ± sample std over seeds {seeds}.", "",
             "| method | labels | n labelled | seeds | " + " | ".join(METRIC_TITLES.get(m, m) for m in metrics) + " |",
             "|---|---|---:|---:|" + "---|" * len(metrics)]
    for (method, fraction, count, per_class), by_metric in table.items():
        any_row = next(iter(by_metric.values()))
        lines.append(f"| {method} | {budget_label(fraction, count, unit, per_class)} | {any_row['n_labelled']:g} | "
                     f"{any_row['n_seeds']} | " + " | ".join(_mean_std(by_metric.get(m)) for m in metrics) + " |")
    paired = paired_table(result["records"], list(paired_metrics or metrics[:1]), unit=unit)
    if paired:
        lines += ["", paired]
    return "\n".join(lines) + "\n"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def paired_table(records: Sequence[dict[str, Any]], metrics: Sequence[str], *, baseline: str = BASELINE,
                 unit: str = "items", arm: Any = None, title: str | None = None) -> str:
    """Markdown: the paired gain of every arm over ``baseline`` (same subsets and seeds), mean [95% bootstrap CI],
    seeds won and the verdict (:func:`medssl.eval.paired.paired_gains`); empty when there is no baseline arm."""
    rows = paired_gains(records, baseline=baseline, metrics=metrics, arm=arm)
    if not rows:
        return ""
    lines = [f"## {title or f'Paired gain over {baseline}'}", "",
             f"Gain = arm − {baseline} on the same label subset and seed (for HD95, {baseline} − arm: positive is "
             "better); mean over the paired seeds with its 95% bootstrap CI. **better** / **worse**: the CI lies above"
             " / below zero; **tie**: it contains zero."
             + (" Arms pretrained several times: each seed's value is the mean over its pretraining runs, so a pair"
                " is one label subset." if any(max(r["replicates"], default=1) > 1 for r in rows) else ""), "",
             "| arm | labels | metric | pairs | arm mean | " + baseline + " mean | mean gain [95% CI] | seeds won | verdict |",
             "|---|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        ci = (f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]" if math.isfinite(r["ci_low"]) else "[n/a]")
        lines.append(f"| {r['arm']} | {_label(r, unit)} | {METRIC_TITLES.get(r['metric'], r['metric'])} | "
                     f"{r['n_pairs']} | {r['arm_mean']:.3f} | {r['baseline_mean']:.3f} | {_signed(r['mean_gain'])} "
                     f"{ci} | {r['seeds_won']}/{r['n_pairs']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def label_efficiency_plot(result: dict[str, Any], path: str | Path, metric: str,
                          method_order: Sequence[str] = (), x: str = "fraction", baseline: str = BASELINE) -> Path:
    """``metric`` (mean ± std over seeds) versus the labelled ``fraction`` of the train split or labelled
    ``count``, one line per method, log x axis (methods slightly dodged around each budget). Where the result has a
    ``baseline`` arm, a second panel shows each other method's paired gain over it with its 95% bootstrap CI (a
    dashed line at zero: a bar crossing it is a tie). Written atomically as PNG; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medssl.eval.plots import save_png

    if x not in ("fraction", "count"):
        raise ValueError(f"x must be 'fraction' or 'count', got {x!r}")
    rows = [r for r in summarise(result["records"], method_order) if r["metric"] == metric]
    if not rows:
        raise ValueError(f"no records of metric {metric!r} to plot")
    gains = paired_gains(result["records"], baseline=baseline, metrics=[metric])
    scale = result["data"]["n_train"] if x == "fraction" else 1
    fig = Figure(figsize=(11.0 if gains else 6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if gains else 1)
    ax, gain_ax = (axes[0], axes[1]) if gains else (axes, None)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    # methods side by side around each budget (a small multiplicative dodge on the log axis), so error bars of
    # methods at the same budget do not hide each other
    dodge = {m: 1.06 ** (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        xs = np.array([r["n_labelled"] / scale * dodge[method] for r in mine])
        order = np.argsort(xs)
        ys = np.array([r["mean"] for r in mine])[order]
        err = np.nan_to_num(np.array([r["std"] for r in mine]))[order]
        ax.errorbar(xs[order], ys, yerr=err, marker="o", capsize=3, label=method, color=colours[method])
    ticks = sorted({r["n_labelled"] / scale for r in rows})
    # a tick reads as the budget was requested (1%, 5/class), not as the realised share (47 / 4708 = 0.998%)
    nominal = {r["n_labelled"] / scale: _label(r, "") for r in rows
               if r.get("fraction") is not None or r.get("per_class") is not None}
    labels = [nominal.get(t, f"{100 * t:.3g}%" if x == "fraction" else f"{t:g}") for t in ticks]
    xlabel = "labelled fraction of the train split" if x == "fraction" else "labelled training cases"
    if all(r.get("per_class") is not None for r in rows):
        xlabel = "labelled items per class"
    for a in (ax, gain_ax):
        if a is None:
            continue
        a.set_xscale("log")
        if len(ticks) == 1:  # one budget: give the dodged points room
            a.set_xlim(ticks[0] / 1.4, ticks[0] * 1.4)
        a.set_xticks(ticks, labels)
        a.minorticks_off()
        a.set_xlabel(xlabel)
        a.grid(True, alpha=0.3)
    ax.set_ylabel(f"{result.get('split', 'test')} {METRIC_TITLES.get(metric, metric)}")
    many = len(methods) > 4  # many methods: one legend beside the axes, where it hides no point
    if many and gain_ax is None:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
        fig.set_size_inches(8.5, 4.0)
    elif many:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize="small")
        fig.set_size_inches(13.0, 4.0)
    else:
        ax.legend(fontsize="small")
    ax.set_title(f"label efficiency: {result['dataset']}")
    if gain_ax is not None:
        for method in dict.fromkeys(g["arm"] for g in gains):
            mine = sorted((g for g in gains if g["arm"] == method), key=lambda g: g["n_labelled"])
            xs = np.array([g["n_labelled"] / scale * dodge.get(method, 1.0) for g in mine])
            ys = np.array([g["mean_gain"] for g in mine])
            low = np.array([g["ci_low"] for g in mine])
            high = np.array([g["ci_high"] for g in mine])
            err = np.nan_to_num(np.vstack([ys - low, high - ys]))
            gain_ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method,
                             color=colours.get(method))
        gain_ax.axhline(0.0, color="k", linestyle="--", linewidth=1)
        gain_ax.set_ylabel(f"paired gain over {baseline} (95% CI)")
        gain_ax.set_title(f"gain over {baseline}, same subsets and seeds")
        if not many:
            gain_ax.legend(fontsize="small")
    return save_png(fig, path)
