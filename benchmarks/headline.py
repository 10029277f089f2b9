#!/usr/bin/env python
"""The headline table and figure: for each dataset, the smallest label budget measured, pretrained versus scratch.

Reads the headline result sets at the top of ``benchmarks/results/`` (``label_efficiency_<dataset>.json``, written
by ``benchmarks/label_efficiency.py`` or by a protocol run: ``medssl evaluate``, the quick start's
``finetune/label_efficiency_phantoms.json``) and writes ``benchmarks/results/headline.{json,md,png}``: one row per
dataset at its smallest budget with scratch, the lightly peer (where it ran), the medssl arm named in
:data:`HEADLINE_ARM` (fixed in advance, never picked by its test score), the paired gain of that arm over scratch
with its 95% bootstrap CI, seeds won, the verdict, and the wall time of pretraining and of one fine-tuning run. The
figure is a forest plot of those gains. The README's Results section is this table.

Usage::

    python benchmarks/headline.py                     # reads and writes benchmarks/results/
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PEER = "lightly_simclr finetune"
#: the medssl arm each headline reports, chosen before the runs (the pretrained network fine-tuned; for the
#: phantoms and BraTS the whole Models Genesis network, encoder and decoder); other arms are in each dataset's own table
HEADLINE_ARM = {"pneumoniamnist": "simclr finetune", "adrenalmnist3d": "simclr finetune",
                "hippocampus": "simclr finetune", "phantoms": "whole", "brats": "whole"}
METRIC = {"auroc": "AUROC", "dice": "mean Dice"}


def _metric(result: dict[str, Any]) -> str:
    if result.get("metric"):
        return result["metric"]
    return "dice" if result.get("task") == "segmentation" else "auroc"


def _smallest(records: list[dict[str, Any]]) -> tuple[str, float]:
    from medssl.eval.paired import budget_key

    keys = {budget_key(r) for r in records if r["method"] == "scratch"}
    if not keys:
        raise ValueError("no scratch records")
    rank = {"per_class": 0, "count": 1, "fraction": 2}
    return min(keys, key=lambda k: (rank[k[0]], k[1]))


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return (float(x.mean()) if x.size else math.nan, float(x.std(ddof=1)) if x.size > 1 else math.nan)


def headline_row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The headline of one result set (see module docstring)."""
    from medssl.eval.label_efficiency import budget_label
    from medssl.eval.paired import budget_key, paired_gains

    metric = _metric(result)
    recs = [r for r in result["records"] if r["metric"] == metric]
    budget = _smallest(recs)
    at = [r for r in recs if budget_key(r) == budget]
    arm = HEADLINE_ARM.get(result["dataset"])
    methods = {r["method"] for r in at}
    if arm not in methods:
        arm = next((m for m in sorted(methods) if m not in ("scratch", PEER) and m.endswith(("finetune", "whole"))),
                   None)
    if arm is None:
        raise ValueError(f"{name}: no pretrained arm at the smallest budget")
    (gain,) = paired_gains([r for r in at if r["method"] in (arm, "scratch")], metrics=[metric])
    walls = [r.get("wall_s") for r in at if r["method"] == arm and r.get("wall_s") is not None]
    if not walls:  # protocol results keep wall seconds in their runs
        walls = [run["wall_s"] for run in result.get("runs", []) if run.get("method") == arm and "wall_s" in run]
    pre = {r.get("pretrain_seed"): r["pretrain_wall_s"] for r in at if r["method"] == arm
           and r.get("pretrain_wall_s") is not None}
    kind, size = budget
    row = {"file": name, "dataset": result["dataset"], "metric": metric,
           "budget": budget_label(size if kind == "fraction" else None, int(size) if kind == "count" else None,
                                  "cases" if metric == "dice" else "items", int(size) if kind == "per_class" else None),
           "n_labelled": gain["n_labelled"], "arm": arm,
           "scratch": _mean_std([r["value"] for r in at if r["method"] == "scratch"]),
           "peer": _mean_std([r["value"] for r in at if r["method"] == PEER]) if PEER in methods else None,
           "medssl": _mean_std([r["value"] for r in at if r["method"] == arm]),
           "gain": gain["mean_gain"], "ci": [gain["ci_low"], gain["ci_high"]], "seeds_won": gain["seeds_won"],
           "n_pairs": gain["n_pairs"], "verdict": gain["verdict"],
           "pretrain_wall_s": sum(pre.values()) / len(pre) if pre else None,
           "finetune_wall_s": sum(walls) / len(walls) if walls else None}
    return row


def _ms(pair: tuple[float, float] | list[float] | None) -> str:
    if pair is None or not math.isfinite(pair[0]):
        return "not run"
    return f"{pair[0]:.3f} ± {pair[1]:.3f}" if math.isfinite(pair[1]) else f"{pair[0]:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | labels | metric | scratch | lightly peer | medssl (arm) | paired gain [95% CI] | seeds won | "
             "verdict | wall s: pretrain / fine-tune run |", "|---|---|---|---|---|---|---|---:|---|---|"]
    for r in rows:
        ci = f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if math.isfinite(r["ci"][0]) else "[n/a]"
        wall = " / ".join("–" if v is None else f"{v:.0f}" for v in (r["pretrain_wall_s"], r["finetune_wall_s"]))
        lines.append(f"| {r['dataset']} | {r['budget']} | {METRIC.get(r['metric'], r['metric'])} | "
                     f"{_ms(r['scratch'])} | {_ms(r['peer'])} | {_ms(r['medssl'])} (`{r['arm']}`) | "
                     f"{r['gain']:+.3f} {ci} | {r['seeds_won']}/{r['n_pairs']} | {r['verdict']} | {wall} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medssl.eval.plots import save_png

    fig = Figure(figsize=(8.5, 0.6 * len(rows) + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        low, high = r["ci"]
        colour = {"better": "C2", "worse": "C3"}.get(r["verdict"], "C7")
        if math.isfinite(low):
            ax.plot([low, high], [y, y], color=colour, linewidth=2)
        ax.plot([r["gain"]], [y], "o", color=colour)
    ax.axvline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r['dataset']}, {r['budget']} ({METRIC.get(r['metric'], r['metric'])})"
                                     for r in reversed(rows)])
    ax.set_xlabel("paired gain over scratch, 95% bootstrap CI (green: CI above zero)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("pretrained vs scratch, smallest label budget")
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    from medssl.storage.atomic import atomic_write_json, atomic_write_text
    from medssl.eval.paired import json_ready

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    folder = Path(args.results)
    rows = []
    for path in sorted(folder.glob("label_efficiency_*.json")):
        result = json.loads(path.read_text())
        if result.get("settings", {}).get("quick"):
            continue
        rows.append(headline_row(path.name, result))
    if not rows:
        raise SystemExit(f"no label_efficiency_*.json in {folder}")
    text = markdown(rows)
    atomic_write_text(folder / "headline.md", "# Headline: pretraining versus scratch at the smallest budget\n\n"
                      + text + "\nMade by `python benchmarks/headline.py` from the `label_efficiency_*.json` files "
                      "beside it; each dataset's own `.md` has every arm and budget.\n")
    clean = [json_ready(r) for r in rows]
    atomic_write_json(folder / "headline.json", {"format": "medssl-headline", "rows": clean})
    plot(rows, folder / "headline.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
