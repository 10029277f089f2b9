"""Label-efficiency reports shared by every few-label protocol (classification and segmentation).

A protocol result is a dict with ``dataset``, ``data`` (``path``, ``n_train`` …), optional ``encoder`` and
``records``: one record per method x budget x seed x metric with the keys ``method``, ``fraction`` (or None),
``count`` (or None), ``n_labelled``, ``seed``, ``metric`` and ``value`` (None where undefined). From it:

* :func:`summarise`: mean ± sample std over seeds per method x budget x metric;
* :func:`markdown_table`: the ``.md`` table (one row per method x budget, one column per metric);
* :func:`label_efficiency_plot`: a metric versus the number (or fraction) of labelled items, one line per method,
  error bars = std over seeds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


__all__ = ["budget_label", "label_efficiency_plot", "markdown_table", "summarise"]

METRIC_TITLES = {"auroc": "AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "dice": "mean Dice", "hd95": "mean HD95 (mm)"}


def budget_label(fraction: float | None, count: int | None, unit: str = "items") -> str:
    """``"1%"`` for a fraction, ``"5 items"`` (or ``"5 cases"``) for a count."""
    return f"{100 * fraction:g}%" if fraction is not None else f"{count} {unit}"


def summarise(records: list[dict[str, Any]], method_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Mean, sample std (NaN for one seed) and seed count per method x budget x metric.

    Undefined values (None/NaN) are left out of the mean and std and counted in ``n_undefined``; rows are sorted
    by ``method_order`` (unknown methods last, by name) and then by budget.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], r["fraction"], r["count"], r["metric"]), []).append(r)
    rows = []
    for (method, fraction, count, metric), rs in groups.items():
        values = np.array([np.nan if r["value"] is None else r["value"] for r in rs], dtype=float)
        finite = np.isfinite(values)
        rows.append({"method": method, "fraction": fraction, "count": count, "metric": metric,
                     "mean": float(np.mean(values[finite])) if finite.any() else math.nan,
                     "std": float(np.std(values[finite], ddof=1)) if finite.sum() > 1 else math.nan,
                     "n_seeds": len(rs), "n_undefined": int((~finite).sum()),
                     "n_labelled": float(np.mean([r["n_labelled"] for r in rs]))})
    order = {m: i for i, m in enumerate(method_order)}
    rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["method"], r["fraction"] is None,
                             r["fraction"] or 0, r["count"] or 0))
    return rows


def _mean_std(row: dict[str, Any] | None) -> str:
    if row is None or not math.isfinite(row["mean"]):
        return "n/a"
    text = f"{row['mean']:.3f} ± {row['std']:.3f}" if math.isfinite(row["std"]) else f"{row['mean']:.3f} ± –"
    return text + (f" ({row['n_undefined']} undefined)" if row.get("n_undefined") else "")


def markdown_table(result: dict[str, Any], metrics: Sequence[str], method_order: Sequence[str] = (),
                   unit: str = "items") -> str:
    """The ``.md`` report: one row per method x budget, mean ± std over seeds of each metric."""
    rows = summarise(result["records"], method_order)
    table: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        table.setdefault((r["method"], r["fraction"], r["count"]), {})[r["metric"]] = r
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
    for (method, fraction, count), by_metric in table.items():
        any_row = next(iter(by_metric.values()))
        lines.append(f"| {method} | {budget_label(fraction, count, unit)} | {any_row['n_labelled']:g} | "
                     f"{any_row['n_seeds']} | " + " | ".join(_mean_std(by_metric.get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def label_efficiency_plot(result: dict[str, Any], path: str | Path, metric: str,
                          method_order: Sequence[str] = (), x: str = "fraction") -> Path:
    """``metric`` (mean ± std over seeds) versus the labelled ``fraction`` of the train split or labelled
    ``count``, one line per method, log x axis (methods slightly dodged around each budget). Written atomically as PNG; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medssl.eval.plots import save_png

    if x not in ("fraction", "count"):
        raise ValueError(f"x must be 'fraction' or 'count', got {x!r}")
    rows = [r for r in summarise(result["records"], method_order) if r["metric"] == metric]
    if not rows:
        raise ValueError(f"no records of metric {metric!r} to plot")
    scale = result["data"]["n_train"] if x == "fraction" else 1
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    # methods side by side around each budget (a small multiplicative dodge on the log axis), so error bars of
    # methods at the same budget do not hide each other
    dodge = {m: 1.06 ** (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        xs = np.array([r["n_labelled"] / scale * dodge[method] for r in mine])
        order = np.argsort(xs)
        ys = np.array([r["mean"] for r in mine])[order]
        err = np.nan_to_num(np.array([r["std"] for r in mine]))[order]
        ax.errorbar(xs[order], ys, yerr=err, marker="o", capsize=3, label=method)
    ticks = sorted({r["n_labelled"] / scale for r in rows})
    # a fraction's tick reads as requested (1%), not as the realised share of the split (47 / 4708 = 0.998%)
    nominal = {r["n_labelled"] / scale: r["fraction"] for r in rows if r.get("fraction") is not None}
    ax.set_xscale("log")
    if len(ticks) == 1:  # one budget: give the dodged points room
        ax.set_xlim(ticks[0] / 1.4, ticks[0] * 1.4)
    ax.set_xticks(ticks, [f"{100 * nominal.get(t, t):.3g}%" if x == "fraction" else f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labelled fraction of the train split" if x == "fraction" else "labelled training cases")
    ax.set_ylabel(f"{result.get('split', 'test')} {METRIC_TITLES.get(metric, metric)}")
    ax.grid(True, alpha=0.3)
    if len(methods) > 4:  # many methods: the legend beside the axes, where it hides no point
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
        fig.set_size_inches(8.5, 4.0)
    else:
        ax.legend()
    ax.set_title(f"label efficiency: {result['dataset']}")
    return save_png(fig, path)
