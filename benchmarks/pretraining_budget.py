#!/usr/bin/env python
"""How much pretraining pays: the paired gain over scratch against the number of pretraining steps.

Reads result files of ``benchmarks/label_efficiency.py`` made with the same dataset, protocol settings, label budget
and fine-tuning seeds but different pretraining budgets (``--epochs``), takes the scratch arm from whichever file has
it (scratch does not depend on pretraining: it is run once), and for every pretrained arm x evaluation x pretraining
budget computes the paired gain over scratch on the same label subsets and seeds
(:func:`medssl.eval.paired.paired_gains`: mean, 95% bootstrap CI, seeds won). Writes
``pretraining_budget_<dataset>.{json,md,png}`` (the figure: gain with its CI against pretraining steps, one line per
arm x evaluation, a dashed line at zero).

Usage (PneumoniaMNIST, 1 labelled image per class, 5 seeds; each pretraining budget in its own work folder, because
the harness names pretraining runs by arm, not by epochs)::

    for e in 1 2; do python benchmarks/label_efficiency.py --datasets pneumoniamnist --arms simclr --epochs $e \\
        --per-class 1 --seeds 0 1 2 3 4 --tag e$e --workdir runs/budget_e$e --out runs/budget; done
    python benchmarks/pretraining_budget.py runs/budget/label_efficiency_pneumoniamnist_e1.json \\
        runs/budget/label_efficiency_pneumoniamnist_e2.json benchmarks/results/label_efficiency_pneumoniamnist.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def budget_points(reports: list[dict[str, Any]], *, baseline: str = "scratch", budget: tuple[str, float] | None = None,
                  ) -> list[dict[str, Any]]:
    """One row per (arm x evaluation, pretraining steps): the paired gain over ``baseline`` at the label ``budget``
    (``("per_class", 1)``; default: the smallest budget of the first report), with the pretraining epochs, steps and
    wall seconds of that arm's run."""
    from medssl.eval.paired import budget_key, paired_gains

    datasets = {r["dataset"] for r in reports}
    if len(datasets) != 1:
        raise SystemExit(f"the result files are of several datasets: {sorted(datasets)}")
    metric = reports[0]["metric"]
    base = [r for rep in reports for r in rep["records"] if r["method"] == baseline and r["metric"] == metric]
    if not base:
        raise SystemExit(f"no {baseline} records in any result file")
    if budget is None:
        budget = min({budget_key(r) for r in base}, key=lambda b: (b[0] != "per_class", b[1]))
    base = [r for r in base if budget_key(r) == budget]
    seen_seeds = {int(r["seed"]) for r in base}
    if len(seen_seeds) != len(base):
        raise SystemExit(f"several {baseline} runs per seed at {budget}: give one file with the {baseline} arm")
    rows = []
    for rep in reports:
        pretraining = rep.get("pretraining", {})
        mine = [r for r in rep["records"] if r["method"] != baseline and r["metric"] == metric
                and budget_key(r) == budget]
        for row in paired_gains(base + mine, baseline=baseline, metrics=[metric]):
            arm = next(r["arm"] for r in mine if r["method"] == row["arm"])
            p = pretraining.get(arm, {})
            rows.append({**row, "pretrain_arm": arm, "pretrain_epochs": p.get("epochs"),
                         "pretrain_steps": p.get("steps"), "pretrain_wall_s": p.get("wall_s"),
                         "source": rep.get("settings", {}).get("tag") or rep.get("command")})
    rows.sort(key=lambda r: (r["arm"], r["pretrain_steps"] or 0))
    return rows


def markdown(rows: list[dict[str, Any]], dataset: str, metric: str, files: list[str]) -> str:
    from medssl.eval.label_efficiency import budget_label

    r0 = rows[0]
    lines = [f"# Gain against pretraining budget: {dataset}", "",
             f"Test {metric} at {budget_label(r0['fraction'], r0['count'], 'items', r0['per_class'])} labels; gain = "
             "arm − scratch on the same label subset and seed, mean with its 95% bootstrap CI. Sources: "
             + ", ".join(f"`{f}`" for f in files) + ".", "",
             "| arm / evaluation | pretraining epochs | steps | pretraining wall s | arm mean | scratch mean | "
             "gain [95% CI] | seeds won | verdict |", "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if math.isfinite(r["ci_low"]) else "[n/a]"
        wall = "–" if r["pretrain_wall_s"] is None else f"{r['pretrain_wall_s']:.0f}"
        lines.append(f"| {r['arm']} | {r['pretrain_epochs']} | {r['pretrain_steps']} | {wall} | {r['arm_mean']:.3f} | "
                     f"{r['baseline_mean']:.3f} | {r['mean_gain']:+.3f} {ci} | {r['seeds_won']}/{r['n_pairs']} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, dataset: str, metric: str) -> Path:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medssl.eval.plots import save_png

    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
        mine = [r for r in rows if r["arm"] == arm and r["pretrain_steps"]]
        xs = np.array([r["pretrain_steps"] for r in mine], dtype=float) * 1.03 ** i
        ys = np.array([r["mean_gain"] for r in mine])
        err = np.nan_to_num(np.vstack([ys - np.array([r["ci_low"] for r in mine]),
                                       np.array([r["ci_high"] for r in mine]) - ys]))
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=arm)
    ax.axhline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining steps")
    ax.set_ylabel(f"paired gain in test {metric} over scratch (95% CI)")
    ax.set_title(f"what pretraining buys: {dataset}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    from medssl.storage.atomic import atomic_write_json, atomic_write_text
    from medssl.eval.paired import json_ready

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="label_efficiency.py result JSON files (one has the scratch arm)")
    parser.add_argument("--per-class", type=int, default=None, help="label budget (default: the smallest)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    reports = [json.loads(Path(f).read_text()) for f in args.results]
    rows = budget_points(reports, budget=None if args.per_class is None else ("per_class", float(args.per_class)))
    dataset, metric = reports[0]["dataset"], reports[0]["metric"]
    out = Path(args.out)
    name = f"pretraining_budget_{dataset}"
    clean = [json_ready(r) for r in rows]
    atomic_write_json(out / f"{name}.json", {"format": "medssl-pretraining-budget", "dataset": dataset,
                                             "metric": metric, "sources": args.results, "rows": clean})
    atomic_write_text(out / f"{name}.md", markdown(rows, dataset, metric, [Path(f).name for f in args.results]))
    plot(rows, out / f"{name}.png", dataset, metric)
    print(markdown(rows, dataset, metric, [Path(f).name for f in args.results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
