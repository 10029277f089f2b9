"""The quick-start's figures and ``report.md``: what was run, how long each stage took, and fine-tune versus scratch.

Figures (PNG, under ``figures/``): the pretraining curves (:func:`medssl.eval.plots.training_curves` on the run's
``metrics.csv``), the pretraining reconstruction grid when the method draws one (MAE / SimMIM; linked from the run
folder), and segmentation overlays of held-out test cases (:func:`medssl.eval.figures.segmentation_overlays`: one row
per case and arm). Everything in the report comes from the metrics record; nothing from the DICOM headers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl.storage.atomic import atomic_write_text

__all__ = ["write_figures", "write_report"]


def write_figures(out_dir: Path, overlays: Sequence[dict[str, Any]], label_names: Sequence[str],
                  arms: Sequence[str]) -> dict[str, str]:
    """Curves, reconstruction grid (if any) and overlays; returns ``{name: path relative to out_dir}``.

    ``overlays``: cases ``{"case_id", "image", "reference", <arm>: label map}``; each case gets one row per arm
    (image | reference | that arm's prediction, :func:`medssl.eval.figures.segmentation_overlays`).
    """
    from medssl.eval.figures import segmentation_overlays
    from medssl.eval.plots import training_curves

    figures: dict[str, str] = {}
    run = out_dir / "pretrain"
    curves = training_curves(run / "metrics.csv", out_dir / "figures" / "pretraining_curves.png",
                             title="pretraining losses")
    figures["pretraining_curves"] = curves.relative_to(out_dir).as_posix()
    grid = run / "reconstructions" / "final.png"
    if grid.is_file():
        figures["reconstructions"] = grid.relative_to(out_dir).as_posix()
    if overlays:
        rows = [{"image": case["image"], "truth": case["reference"], "pred": case[arm],
                 "name": f"{case['case_id']}\n{arm}"} for case in overlays for arm in arms]
        path = segmentation_overlays(rows, out_dir / "figures" / "segmentation_overlays.png", label_names=label_names,
                                     title="held-out test cases: fine-tuned from the pretrained network vs scratch")
        figures["segmentation_overlays"] = path.relative_to(out_dir).as_posix()
    return figures


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(stats: dict[str, Any], digits: int = 3) -> str:
    """``mean ± std`` (just the mean for one value; n/a when undefined)."""
    if stats["mean"] is None:
        return "n/a"
    if len(stats["values"]) < 2 or stats["std"] is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def ft_labelled(ft: dict[str, Any]) -> int:
    """The number of labelled cases per seed."""
    return len(next(iter(ft["labelled_cases"].values())))


def write_report(out_dir: Path, metrics: dict[str, Any]) -> Path:
    """``report.md`` from the metrics record (see module docstring)."""
    idx, pre, ft, data = metrics["index"], metrics["pretraining"], metrics["finetune"], metrics["data"]
    arms, names, split = ft["arms"], ft["label_names"][1:], ft["split"]
    first = arms["pretrained"]["summary"]
    archive, reasons = data["archive"], ", ".join(f"{k}: {v}" for k, v in idx["skipped_by_reason"].items())
    trained = pre.get("training_data") or {}
    mode = "quick (test) settings" if metrics["quick"] else "full settings"
    lines = [
        "# medssl quick start", "",
        f"Synthetic CT phantoms only (no download, no patient data); {mode}; total {metrics['wall_s']['total']:.0f} s.",
        "", "## Data and index", "",
        (f"- pretraining archive: {archive['cases']} phantom CT series as DICOM ({archive['dicom_files']} files, "
         f"{archive['oblique']} oblique, {archive['flipped_slices']} with reversed slice order) plus NIfTI copies;"),
        (f"- labelled study: {data['study']['cases']} other phantoms (NIfTI + label maps: "
         f"{', '.join(names)}), split by case: {len(split['train'])} train ({ft_labelled(ft)} labelled), "
         f"{len(split['val'])} validation, {len(split['test'])} test; none of them is in the pretraining archive;"),
        (f"- crawler: {idx['seen']} files seen = {idx['indexed']} indexed + {idx['skipped']} skipped "
         f"({reasons or 'none'}); {idx['series']} usable series, {idx['rejected_series']} rejected "
         "(`index/files.csv`, `index/series.csv`)."),
        "", "## Pretraining", "",
        (f"{pre['method']} on a `{pre['architecture']['name']}` encoder (`{pre['config']}`): {pre['global_step']} "
         f"steps on {trained.get('train_scans', '?')} scans; last-epoch training loss "
         f"{_num(pre['train_loss_last_epoch'], 4)}; validation loss on {trained.get('val_scans', '?')} held-out "
         f"scan(s) {_num(pre['val_loss_before'], 4)} -> {_num(pre['val_loss_after'], 4)}; encoder card "
         f"`{pre['encoder_card']}`."),
        "", "## Few-label segmentation: pretrained versus scratch", "",
        (f"The same MONAI network ({first['network']}; pretrained arm: "
         f"{'encoder and decoder' if ft['methods']['pretrained'] == 'whole' else 'encoder'} from pretraining, protocol "
         f"method `{ft['methods']['pretrained']}`), {ft_labelled(ft)} labelled case(s), the same crops, "
         f"{first['max_epochs']} epochs ({first['steps_per_epoch']} step(s) each) and learning rate; "
         f"{len(ft['seeds'])} seed(s) ({', '.join(map(str, ft['seeds']))}: labelled subset, initialisation and "
         f"crops); best epoch chosen on the validation cases; numbers on the {first['n_test']} held-out test cases "
         "(Dice; HD95 in mm), mean ± std over seeds."), "",
        "| init | mean Dice | " + " | ".join(f"Dice {n}" for n in names) + " | mean HD95 (mm) | "
        + " | ".join(f"HD95 {n}" for n in names) + " | wall s |",
        "|---|---:|" + "---:|" * len(names) + "---:|" + "---:|" * len(names) + "---:|",
    ]
    for arm in ("pretrained", "scratch"):
        m = arms[arm]["summary"]
        lines.append(f"| {arm} | {_pm(m['mean_dice'])} | " + " | ".join(_pm(m["dice"][n]) for n in names)
                     + f" | {_pm(m['mean_hd95'], 1)} | " + " | ".join(_pm(m["hd95"][n], 1) for n in names)
                     + f" | {m['wall_s']:.0f} |")
    lines += ["", "Paired gain of the pretrained arm over scratch (same labelled cases and seed; mean over seeds, 95% "
              "bootstrap CI; **better**: the CI lies above zero, **tie**: it contains zero):", "",
              "| metric | mean gain [95% CI] | per seed | seeds won | verdict |", "|---|---|---|---:|---|"]
    for row in ft["paired"]:
        per_seed = ", ".join(f"{g:+.3f}" for g in row["gains"])
        ci = (f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" if row["ci_low"] is not None
              and math.isfinite(row["ci_low"]) else "[n/a: one seed]")
        title = "mean Dice" if row["metric"] == "dice" else row["metric"].replace("dice_", "Dice ")
        lines.append(f"| {title} | {row['mean_gain']:+.3f} {ci} | {per_seed} | {row['seeds_won']}/{row['n_pairs']} | "
                     f"{row['verdict']} |")
    lines += ["", f"The protocol's own report: `{ft['protocol_report']}`."]
    lines += ["", "## Wall time per stage (s)", "", "| stage | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in metrics["wall_s"].items()]
    titles = {"pretraining_curves": "Pretraining curves",
              "reconstructions": "Reconstructions (input / masked / output)",
              "segmentation_overlays": "Held-out test cases: reference and predictions of both arms"}
    lines += ["", "## Figures", ""]
    for key, rel in metrics["figures"].items():
        lines += [f"### {titles.get(key, key)}", "", f"![{key}]({rel})", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
