"""Few-label fine-tuning from the pretrained encoder versus the same network from scratch, over several seeds.

:func:`finetune_vs_scratch` draws one recorded split of the labelled study by case
(:func:`~medssl.finetune.seg_cases.split_cases`) and its labelled training cases
(:func:`~medssl.finetune.seg_cases.labelled_subset`), then for every seed trains two arms with
:func:`~medssl.finetune.seg_fit.fit_segmenter`:

* ``pretrained``: the encoder card's MONAI segmenter, encoder weights loaded (decoder random);
* ``scratch``: the same network from random weights, the data prepared with the card's plan;

with the same labelled cases, crops, steps, learning rate and seed. The best epoch is chosen on the validation cases;
every number is on the held-out test cases. A seed changes the network initialisation and the crops, so the spread
over seeds shows how much of a difference is luck. The first seed's models segment the overlay cases.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.finetune.trainer import quiet_lightning
from medssl.quickstart.settings import QuickstartSettings

__all__ = ["ARMS", "finetune_vs_scratch", "summarise_runs"]

ARMS = ("pretrained", "scratch")


def finetune_vs_scratch(card: Path, study: Path, out_dir: Path, cache_dir: Path, s: QuickstartSettings, *,
                        progress: bool, on_run: Callable[[str], None] | None = None,
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both arms for every seed of ``s.seeds``; return (record, overlay cases).

    The record: label names, the split, the labelled case ids, per arm the runs (``fit_segmenter`` results, one per
    seed) and their summary (:func:`summarise_runs`), and the per-seed and mean Dice gain of ``pretrained`` over
    ``scratch``. Overlay cases: the first ``s.overlay_cases`` test volumes (plan grid) with the reference and each
    arm's prediction, as numpy arrays.
    """
    from medssl.data.cache import PreprocessCache
    from medssl.data.plan import PreprocessPlan
    from medssl.finetune.seg_cases import (
        cases_from_msd,
        labelled_subset,
        msd_label_names,
        select_cases,
        split_cases,
    )
    from medssl.finetune.seg_data import SegmentationVolumes
    from medssl.finetune.seg_fit import fit_segmenter
    from medssl.finetune.segmentation import SegmentationFinetuner
    from medssl.models.hub import read_card

    cases, names = cases_from_msd(study / "nifti"), msd_label_names(study / "nifti")
    split = split_cases(cases, s.n_val, s.n_test, seed=s.seed)
    train, val, test = (select_cases(cases, split[p]) for p in ("train", "val", "test"))
    labelled = labelled_subset(train, s.n_labelled, seed=s.seed)
    card_json = read_card(card)[0]
    plan = card_json["preprocessing"]["plan"]
    common: dict[str, Any] = {
        "label_names": names, "spatial_dims": 3, "roi_size": list(s.roi_size), "cache_dir": cache_dir,
        "epochs": s.finetune_epochs, "min_steps": s.min_steps, "batch_size": s.batch_size, "lr": s.lr,
        "patience": s.patience, "progress": progress}
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    models: dict[str, SegmentationFinetuner] = {}
    for seed in s.seeds:
        for arm in ARMS:
            if on_run is not None:
                on_run(f"{arm}, seed {seed}")
            run_dir = out_dir / f"{arm}_seed{seed}"
            with quiet_lightning():
                if arm == "pretrained":
                    run = fit_segmenter(card, None, labelled, val, test, seed=seed, run_dir=run_dir, **common)
                else:
                    run = fit_segmenter(None, card_json["architecture"], labelled, val, test, plan=plan, seed=seed,
                                        run_dir=run_dir, **common)
            if seed == s.seeds[0]:
                models[arm] = SegmentationFinetuner.load_from_checkpoint(run["checkpoint"], map_location="cpu")
            run["checkpoint"] = Path(run["checkpoint"]).resolve().relative_to(out_dir.parent.resolve()).as_posix()
            runs[arm].append({"seed": seed, **run})
    volumes = SegmentationVolumes(test[: s.overlay_cases], PreprocessCache(cache_dir, PreprocessPlan.from_dict(plan)))
    overlays = []
    for i in range(len(volumes)):
        item = volumes[i]
        overlays.append({"case_id": item["case_id"], "image": item["image"][0].numpy(),
                         "reference": item["label"][0].numpy().astype(np.uint8),
                         **{arm: m.predict_volume(item["image"]).numpy().astype(np.uint8)
                            for arm, m in models.items()}})
    gains = [p["metrics"]["mean_dice"] - q["metrics"]["mean_dice"] for p, q in zip(runs["pretrained"], runs["scratch"])]
    record = {
        "label_names": names, "split": split, "labelled_cases": [c.case_id for c in labelled], "seeds": list(s.seeds),
        "arms": {arm: {"summary": summarise_runs(runs[arm]), "runs": runs[arm]} for arm in ARMS},
        "dice_gain": {"mean": float(np.mean(gains)), "per_seed": gains, "seeds_better": int(sum(g > 0 for g in gains))},
    }
    return record, overlays


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {"mean": float(np.mean(finite)) if finite else None, "std": float(np.std(finite)) if finite else None,
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
            "network": runs[0]["network"]["architecture"]["name"], "wall_s": round(sum(r["wall_s"] for r in runs), 2)}
