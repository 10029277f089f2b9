"""Few-label fine-tuning from the pretrained network versus the same network from scratch, through the segmentation
protocol and its paired statistics.

:func:`finetune_vs_scratch` runs :func:`medssl.finetune.seg_protocol.run_seg_protocol` on the labelled study: one
recorded split by case (``finetune/split.json``), ``n_labelled`` labelled training cases drawn per seed, and two
methods trained with the same cases, crops, steps and learning rate on every seed:

* ``pretrained``: the protocol method ``s.transfer`` (``whole``: the pretrained encoder *and* decoder in the MONAI
  segmenter, only the output layer new, the Models Genesis recipe; ``finetune``: the encoder only);
* ``scratch``: the same network from random weights, the data prepared with the card's plan.

The best epoch is chosen on the validation cases; every number is on the held-out test cases. A seed changes the
labelled subset (when there are more training cases than labels), the initialisation of the new layers and the
crops, so the spread over seeds shows how much of a difference is luck; the comparison is paired
(:func:`medssl.eval.paired.paired_gains`: mean gain, 95% bootstrap CI, seeds won). The protocol's own report
(``finetune/label_efficiency_phantoms.{json,md,png}``) lies beside the runs. The first seed's models segment the
overlay cases.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.finetune.trainer import quiet_lightning
from medssl.quickstart.settings import QuickstartSettings

__all__ = ["ARMS", "DATASET", "finetune_vs_scratch", "summarise_runs"]

ARMS = ("pretrained", "scratch")
#: the protocol's dataset name: its outputs are ``finetune/label_efficiency_phantoms.*``
DATASET = "phantoms"


def finetune_vs_scratch(card: Path, study: Path, out_dir: Path, cache_dir: Path, s: QuickstartSettings, *,
                        progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both arms for every seed of ``s.seeds`` through the segmentation protocol; return (record, overlay cases).

    The record: label names, the split, the labelled case ids per seed, the protocol methods, per arm the runs
    (``fit_segmenter`` results, one per seed) and their summary (:func:`summarise_runs`), the paired gains of
    ``pretrained`` over ``scratch`` (``paired``: mean Dice, then Dice of each label) and ``dice_gain``
    (the mean-Dice row in short). Overlay cases: the first ``s.overlay_cases`` test volumes (plan grid) with the
    reference and each arm's prediction, as numpy arrays.
    """
    from medssl.data.cache import PreprocessCache
    from medssl.data.plan import PreprocessPlan
    from medssl.eval.paired import json_ready, paired_gains
    from medssl.finetune.seg_cases import cases_from_msd, select_cases
    from medssl.finetune.seg_data import SegmentationVolumes
    from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol
    from medssl.finetune.segmentation import SegmentationFinetuner
    from medssl.models.hub import read_card

    methods = {"pretrained": s.transfer, "scratch": "scratch"}
    cfg = SegProtocolConfig(
        root=str(study / "nifti"), dataset=DATASET, split_file=str(out_dir / "split.json"), n_val=s.n_val,
        n_test=s.n_test, split_seed=s.seed, encoder=str(card), counts=[s.n_labelled], seeds=list(s.seeds),
        methods=[methods[a] for a in ARMS], spatial_dims=3, roi_size=list(s.roi_size), epochs=s.finetune_epochs,
        min_steps=s.min_steps, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay, warmup=s.warmup,
        patience=s.patience, cache_dir=str(cache_dir), keep_checkpoints=True, plot=True,
        class_ratios=None if s.class_ratios is None else list(s.class_ratios),
        workers=s.workers or min(2, os.cpu_count() or 1)).validate("quickstart")
    with quiet_lightning():
        run_seg_protocol(cfg, out_dir, progress=progress)
    result = json.loads((out_dir / f"label_efficiency_{DATASET}.json").read_text())
    root = out_dir.parent.resolve()
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for run in result["runs"]:
        arm = next(a for a in ARMS if methods[a] == run["method"])
        run["checkpoint"] = Path(run["checkpoint"]).resolve().relative_to(root).as_posix()
        runs[arm].append(run)
    metrics = ["dice", *(f"dice_{name}" for name in result["label_names"][1:])]  # mean Dice, then each label
    paired = [{**json_ready(row), "arm": "pretrained", "method": row["arm"]}  # NaN (no interval) is null in JSON
              for row in paired_gains(result["records"], metrics=metrics) if row["arm"] == methods["pretrained"]]
    dice = next(row for row in paired if row["metric"] == "dice")
    split = result["case_split"]
    record = {
        "label_names": result["label_names"], "split": split, "seeds": list(s.seeds), "methods": methods,
        "labelled_cases": {str(r["seed"]): r["labelled_cases"] for r in runs["scratch"]},
        "arms": {arm: {"summary": summarise_runs(runs[arm]), "runs": runs[arm]} for arm in ARMS},
        "paired": paired,
        "dice_gain": {"mean": dice["mean_gain"], "ci_low": dice["ci_low"], "ci_high": dice["ci_high"],
                      "per_seed": dice["gains"], "seeds_better": dice["seeds_won"], "verdict": dice["verdict"]},
        "protocol_report": (out_dir / f"label_efficiency_{DATASET}.md").resolve().relative_to(root).as_posix(),
        "wall_s": result.get("wall_s"),
    }
    plan = read_card(card)[0]["preprocessing"]["plan"]
    cases = cases_from_msd(study / "nifti")
    test = select_cases(cases, split["test"])
    volumes = SegmentationVolumes(test[: s.overlay_cases], PreprocessCache(cache_dir, PreprocessPlan.from_dict(plan)))
    first = {arm: SegmentationFinetuner.load_from_checkpoint(root / runs[arm][0]["checkpoint"], map_location="cpu")
             for arm in ARMS}
    overlays = []
    for i in range(len(volumes)):
        item = volumes[i]
        overlays.append({"case_id": item["case_id"], "image": item["image"][0].numpy(),
                         "reference": item["label"][0].numpy().astype(np.uint8),
                         **{arm: m.predict_volume(item["image"]).numpy().astype(np.uint8)
                            for arm, m in first.items()}})
    return record, overlays


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {"mean": float(np.mean(finite)) if finite else None,  # sample std, as the protocol's tables
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "values": [None if v is None else float(v) for v in values]}


def summarise_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and per-seed values of the test metrics of one arm's runs (HD95: undefined runs left out)."""
    metrics = [r["metrics"] for r in runs]
    labels = list(metrics[0]["dice"])
    return {"mean_dice": _stats([m["mean_dice"] for m in metrics]),
            "dice": {n: _stats([m["dice"][n] for m in metrics]) for n in labels},
            "mean_hd95": _stats([m["mean_hd95"] for m in metrics]),
            "hd95": {n: _stats([m["hd95"][n] for m in metrics]) for n in labels},
            "best_epoch": [r["best_epoch"] for r in runs], "max_epochs": runs[0]["max_epochs"],
            "steps_per_epoch": runs[0]["steps_per_epoch"], "n_test": runs[0]["n_test"],
            "network": runs[0]["network"]["architecture"]["name"], "transfer": runs[0].get("transfer"),
            "wall_s": round(sum(r["wall_s"] for r in runs), 2)}
