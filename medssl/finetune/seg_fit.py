"""Training, evaluating and the one-call fit of a :class:`~medssl.finetune.segmentation.SegmentationFinetuner`.

* :func:`train_segmenter`: the shared Lightning loop (:func:`medssl.finetune.trainer.fit_best`) with the best
  checkpoint by ``val/dice`` and ``EarlyStopping(patience)``; the best checkpoint is restored with
  ``torch.load(weights_only=True)``.
* :func:`evaluate_segmenter`: per-label (or per-region) Dice and HD95 (mm) of whole volumes, by sliding-window
  inference; one volume in memory at a time, so memory is bounded by one case.
* :func:`fit_segmenter`: cases in, test metrics out (checks, cache, datasets, training, evaluation), the
  segmentation counterpart of :func:`medssl.finetune.classification.fit_classifier`, used by the protocols.

Runs are deterministic given ``seed`` (network init and training inside a forked torch random state, crops seeded
per (seed, epoch, item), the data order from the loader's own generator); the caller's random state is untouched.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medssl.data.cache import PreprocessCache
from medssl.eval.metrics import summarize_cases
from medssl.finetune.postprocess import (POSTPROCESS_CHOICES, check_postprocess, choose_postprocess,
                                         record_in_checkpoint)
from medssl.finetune.seg_cases import SegmentationCase, num_channels
from medssl.finetune.seg_data import (SegmentationPatches, SegmentationVolumes, check_cases, class_ratios_error,
                                      resolve_plan)
from medssl.finetune.segmentation import MONITOR, SegmentationFinetuner
from medssl.finetune.trainer import check_budget, fit_best
from medssl.models.dense_transfer import card_decoder
from medssl.models.hub import card_channels, check_channels, read_card
from medssl.training.optim import OptimConfig

__all__ = ["choose_postprocess_on", "evaluate_segmenter", "fit_segmenter", "train_segmenter"]


def train_segmenter(module: SegmentationFinetuner, train_ds: Dataset, val_ds: Dataset, *, epochs: int,
                    batch_size: int, seed: int = 0, patience: int | None = None, val_every_n_epochs: int = 1,
                    run_dir: str | Path | None = None, accelerator: str = "cpu",
                    progress: bool = False) -> dict[str, Any]:
    """Train ``module`` and leave it holding its best checkpoint by ``val/dice``; return what happened.

    As :func:`medssl.finetune.classification.train_classifier` (both are :func:`medssl.finetune.trainer.fit_best`):
    ``run_dir`` keeps ``checkpoints/best.ckpt`` and ``metrics.csv`` (else a temporary folder is used and removed),
    validation every ``val_every_n_epochs`` epochs (one whole volume per batch), ``patience`` validations without
    improvement stop early, the model and data order are seeded inside a forked random state, and the best
    checkpoint is restored with ``weights_only=True``.
    """
    check_budget(epochs, batch_size, val_every_n_epochs, patience)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0,
                       generator=torch.Generator().manual_seed(int(seed)))
    return fit_best(module, train, DataLoader(val_ds, batch_size=1, shuffle=False, num_workers=0), monitor=MONITOR,
                    mode="max", epochs=epochs, patience=patience, val_every_n_epochs=val_every_n_epochs,
                    run_dir=run_dir, seed=seed, accelerator=accelerator, progress=progress,
                    scratch_prefix="medssl-segment-")


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_segmenter(module: SegmentationFinetuner, dataset: SegmentationVolumes) -> dict[str, Any]:
    """Per-label (or, with regions, per-region) mean Dice and HD95 (mm, from each volume's spacing) over
    ``dataset``'s whole volumes, one volume in memory at a time.

    Labels: HD95 is undefined (NaN) for a case where the label is missing in the prediction or the reference; such
    cases are left out of its mean and counted in ``hd95_undefined``; a label undefined everywhere gets None.
    Regions: :func:`medssl.eval.metrics.summarize_cases` (a region absent from both prediction and reference of a
    case is left out of its means and counted in ``absent``); ``per_case`` keeps each case's values.
    """
    cases, ids = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        spacing = item["spacing"].tolist()[: item["label"].ndim - 1]
        cases.append(module.case_metrics(module.predict_volume(item["image"]), item["label"][0], spacing=spacing))
        ids.append(item["case_id"])
        del item
    if module.regions is not None:
        summary = summarize_cases(cases, module.regions.names)
        per_case = [{"case_id": i, "dice": {n: None if math.isnan(v) else v for n, v in m["dice"].items()},
                     "hd95": {n: None if math.isnan(v) else v for n, v in m["hd95"].items()}, "absent": m["absent"]}
                    for i, m in zip(ids, cases)]
        return {**summary, "regions": module.regions.to_config(), "per_case": per_case}
    labels = cases[0]["labels"]
    names = [module.label_names[c] for c in labels]
    dice = {n: float(np.mean([m["dice"][c] for m in cases])) for n, c in zip(names, labels)}
    hd95 = {n: _nanmean([m["hd95"][c] for m in cases]) for n, c in zip(names, labels)}
    return {"dice": dice, "hd95": hd95, "mean_dice": float(np.mean(list(dice.values()))),
            "mean_hd95": _nanmean([v for v in hd95.values() if v is not None] or [math.nan]), "hd95_unit": "mm",
            "hd95_undefined": sum(math.isnan(m["hd95"][c]) for m in cases for c in labels), "n_cases": len(cases)}


def choose_postprocess_on(module: SegmentationFinetuner, dataset: SegmentationVolumes) -> dict[str, Any]:
    """:func:`~medssl.finetune.postprocess.choose_postprocess` on ``dataset``'s volumes (the validation cases),
    scored per case by the mean Dice over its labels (or over the regions present in prediction or reference; a case
    with none scores 1), by the module's own metrics without HD95 (a distance transform per method and region for
    nothing)."""

    def predictions():
        for i in range(len(dataset)):
            item = dataset[i]
            yield module.logits_to_labels(module.predict_logits(item["image"])), item["label"][0].cpu()

    def score(pred: torch.Tensor, ref: torch.Tensor) -> float:
        dice = module.case_metrics(pred, ref, hd95=False)["dice"]
        if module.regions is not None:
            values = [v for v in dice.values() if not math.isnan(v)]
            return float(np.mean(values)) if values else 1.0
        return float(np.mean(list(dice.values())))

    return choose_postprocess(predictions(), score)


def fit_segmenter(card: str | Path | None, architecture: dict[str, Any] | None,
                  train_cases: Sequence[SegmentationCase], val_cases: Sequence[SegmentationCase],
                  test_cases: Sequence[SegmentationCase], *, num_classes: int | None = None,
                  label_names: Sequence[str] | None = None, spatial_dims: int = 3, roi_size: Sequence[int],
                  plan: dict[str, Any] | None = None, override_plan: bool = False, hu_check: bool = True,
                  cache_dir: str | Path | None = None, decoder: dict[str, Any] | None = None, epochs: int = 50,
                  batch_size: int = 2, lr: float = 1e-3, seed: int = 0, patience: int | None = 5, min_steps: int = 0,
                  freeze_encoder_epochs: int = 0, layer_decay: float = 1.0, weight_decay: float = 0.05,
                  warmup: float = 0.1, pos: float = 1.0, neg: float = 1.0, sw_overlap: float = 0.25,
                  sw_batch_size: int = 4, run_dir: str | Path | None = None, accelerator: str = "cpu",
                  progress: bool = False, regions: dict[str, list[int]] | None = None,
                  region_labels: dict[str, int] | None = None, region_training: str = "sigmoid",
                  channel_names: Sequence[str] | None = None, adapt_channels: str | None = None,
                  use_masks: bool = True, flip_axes: Sequence[int] | None = None,
                  transfer: str = "encoder", class_ratios: Sequence[float] | None = None,
                  postprocess: str = "none") -> dict[str, Any]:
    """Fine-tune (``card`` given) or train from scratch (``architecture``), return test metrics (one JSON dict).

    Checks every case against the card and plan first (:func:`medssl.finetune.seg_data.check_cases`), prepares
    the data through the cache at ``cache_dir`` (default ``run_dir/cache``, else a temporary folder), trains with
    :func:`train_segmenter` and evaluates the best checkpoint on ``test_cases`` (:func:`evaluate_segmenter`).
    ``plan``/``override_plan``/``hu_check`` are those of :mod:`medssl.finetune.seg_data`; ``pos``/``neg`` weight
    foreground / background crop centres (background centres inside the cases' masks when ``use_masks`` and every
    case has one), or ``class_ratios`` weight the crop centres per label value, background first (class-balanced
    crops, :class:`~medssl.finetune.seg_data.SegmentationPatches`); ``flip_axes``: the axes training crops may be flipped along (None = all); ``decoder`` holds
    decoder-only network options. ``regions`` / ``region_labels`` / ``region_training``: region targets and
    metrics (:mod:`medssl.finetune.regions`). ``channel_names``: the cases' channels, checked against the card's (:func:`medssl.models.hub.check_channels`) before anything is
    read; ``adapt_channels`` allows a different channel count by adapting the encoder's first layer.
    ``transfer``: ``"encoder"`` loads the card's encoder alone, ``"whole"`` also its pretrained decoder (BasicUNet;
    only the head starts random; :func:`medssl.models.dense_transfer.load_whole_network`); recorded as
    ``transfer`` (None from scratch) with the load report's key counts by source (``load_report["keys"]``).

    ``postprocess``: connected-component post-processing of every predicted map (test metrics, the checkpoint
    ``medssl predict`` reads): a method of :data:`~medssl.finetune.postprocess.POSTPROCESS`, or ``"auto"``: after
    training, each method is scored on the validation cases' predictions and the best kept (``"none"`` unless
    another is strictly better; :func:`~medssl.finetune.postprocess.choose_postprocess`), recorded as
    ``postprocess`` with the validation Dice of each.

    ``min_steps``: 5 labelled volumes are 1-3 batches per epoch, too few steps to train in ``epochs`` epochs. As in
    :func:`~medssl.finetune.classification.fit_classifier`, every epoch count (``epochs``,
    ``freeze_encoder_epochs``) is then stretched by one whole factor ``k`` and validation runs every ``k`` epochs,
    so a run still validates ``epochs`` times and ``patience`` keeps its meaning.
    """
    t0 = time.perf_counter()
    if num_classes is None and label_names is None:
        raise ValueError("give num_classes or label_names")
    check_postprocess(postprocess, POSTPROCESS_CHOICES)
    problem = class_ratios_error(class_ratios, int(num_classes or len(label_names)))
    if problem is not None:
        raise ValueError(problem)
    card_json = read_card(card)[0] if card is not None else None
    if card_json is None and architecture is None:
        raise ValueError("give an encoder card or, from scratch, an architecture")
    if transfer == "whole":  # before any volume is read: the card must hold a decoder
        if card_json is None:
            raise ValueError("transfer='whole' loads a pretrained encoder and decoder: give an encoder card")
        card_decoder(card_json, card)
    resolved, _ = resolve_plan(card_json, card, plan, override_plan)  # the module resolves it again, identically
    in_channels = int((card_json or architecture["kwargs"])["in_channels"])
    if card_json is not None:  # the data's channels against the card's, before any volume is read
        data_channels = num_channels(train_cases[0])
        if data_channels == in_channels or adapt_channels is not None:  # else check_cases names the case's files
            check_channels(card_json, data_channels, channel_names, adapt_channels, card)
            in_channels = data_channels
    check_cases([*train_cases, *val_cases, *test_cases], plan=resolved, in_channels=in_channels, card_path=card,
                channel_names=channel_names, expected_names=card_channels(card_json) if card_json else None,
                hu_check=hu_check)
    scratch = tempfile.TemporaryDirectory(prefix="medssl-segcache-") if cache_dir is None and run_dir is None else None
    root = Path(scratch.name) if scratch else Path(cache_dir) if cache_dir else Path(run_dir) / "cache"
    try:
        cache = PreprocessCache(root, resolved)
        train_ds = SegmentationPatches(train_cases, cache, roi_size=roi_size, spatial_dims=spatial_dims, pos=pos,
                                       neg=neg, seed=seed, use_masks=use_masks, flip_axes=flip_axes,
                                       class_ratios=class_ratios)
        steps_per_epoch = math.ceil(len(train_ds) / batch_size)
        stretch = max(1, math.ceil(min_steps / (epochs * steps_per_epoch)))
        module = SegmentationFinetuner(
            num_classes=int(num_classes or len(label_names)), label_names=label_names,
            init="pretrained" if card is not None else "scratch", encoder=None if card is None else str(card),
            architecture=architecture if card is None else None, spatial_dims=spatial_dims, roi_size=roi_size,
            plan=plan, override_plan=override_plan, decoder=decoder,
            freeze_encoder_epochs=freeze_encoder_epochs * stretch, layer_decay=layer_decay, seed=seed,
            sw_overlap=sw_overlap, sw_batch_size=sw_batch_size, regions=regions, region_labels=region_labels,
            region_training=region_training, in_channels=in_channels,
            channels=list(channel_names) if channel_names is not None else None, adapt_channels=adapt_channels,
            transfer=transfer, optim=OptimConfig(lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), warmup=warmup))
        info = train_segmenter(module, train_ds, SegmentationVolumes(val_cases, cache), epochs=epochs * stretch,
                               batch_size=batch_size, seed=seed, patience=patience, val_every_n_epochs=stretch,
                               run_dir=run_dir, accelerator=accelerator, progress=progress)
        post = {"chosen": postprocess, "val_dice": None, "n_cases": None}
        if postprocess == "auto":
            post = choose_postprocess_on(module, SegmentationVolumes(val_cases, cache))
        module.set_postprocess(post["chosen"])
        if info.get("checkpoint") and post["chosen"] != "none":
            record_in_checkpoint(info["checkpoint"], post["chosen"])
        metrics = evaluate_segmenter(module, SegmentationVolumes(test_cases, cache))
    finally:
        if scratch is not None:
            scratch.cleanup()
    report = module.load_report
    return {
        "init": module.init, "transfer": None if card is None else module.transfer, "split": "test",
        "metrics": metrics, **info,
        "max_epochs": epochs * stretch, "val_every_n_epochs": stretch, "steps_per_epoch": steps_per_epoch,
        "freeze_encoder_epochs": module.freeze_encoder_epochs if report is not None else 0,
        "n_train": len(train_cases), "n_val": len(val_cases), "n_test": len(test_cases),
        "masked_crops": train_ds.masked, "class_ratios": train_ds.class_ratios, "postprocess": post,
        "network": module.hparams["network"], "plan": module.plan_record, "encoder_sha256": module.encoder_sha256,
        "load_report": None if report is None else {"summary": report.summary(), "matched": len(report.matched),
                                                    "expected_missing": len(report.expected_missing),
                                                    "keys": report.key_sources(), "notes": report.notes,
                                                    "reinitialised": getattr(report, "reinitialised", None)},
        "wall_s": round(time.perf_counter() - t0, 2),
    }
