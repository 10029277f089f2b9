"""One fine-tuning run from a :class:`~medssl.finetune.run_config.FinetuneConfig`: a model for ``medssl predict``.

``medssl finetune --config configs/finetune/<file>.yaml`` (or :func:`run_finetune`) prepares the data the config
names, trains with :func:`~medssl.finetune.classification.fit_classifier` or
:func:`~medssl.finetune.seg_fit.fit_segmenter` (best epoch on the validation split / cases only), scores the best
checkpoint on the test split / cases, and writes into ``run_dir``:

* ``checkpoints/best.ckpt``: the best-by-validation weights and hyper-parameters (``medssl predict --checkpoint``);
* ``config.yaml`` (and a copy in ``checkpoints/``): the resolved config; it reads back to the same config;
* ``metrics.json``: test metrics, best epoch, the encoder load report and SHA-256, the split by case or the
  recorded label subset, data fingerprints, wall seconds;
* ``metrics.csv`` (Lightning's CSV log) and ``training_curves.png`` (train / validation loss per step);
* segmentation only: ``cache/``, the prepared volumes (unless ``cache_dir`` puts them elsewhere).

A ``run_dir`` that already holds a run is refused rather than mixed with a new one. Outputs hold case ids
(file-name stems) and item indices, no image data and no DICOM header values.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from medssl.storage.atomic import atomic_write_json, atomic_write_text
from medssl.errors import MedsslError, Reason
from medssl.finetune.config_file import ProtocolConfigError
from medssl.finetune.run_config import FinetuneConfig

__all__ = ["RESULT_FORMAT", "run_finetune"]

RESULT_FORMAT = "medssl-finetune-run"
CHECKPOINT = Path("checkpoints") / "best.ckpt"
log = logging.getLogger(__name__)


def run_finetune(cfg: FinetuneConfig, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train the model of ``cfg`` into ``run_dir`` (see module docstring); returns what ``metrics.json`` holds."""
    from medssl import __version__

    cfg.validate()
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    taken = [p for p in (CHECKPOINT, Path("metrics.json"), Path("metrics.csv")) if (run_dir / p).exists()]
    if taken:
        raise ProtocolConfigError("--run_dir", f"{run_dir} already holds a run ({', '.join(map(str, taken))}); "
                                  "choose a new folder")
    card = _card(cfg)
    fit = _classification if cfg.task == "classification" else _segmentation
    with warnings.catch_warnings():  # run_dir holds no earlier log (checked above): its config.yaml and cache/
        warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
        result = fit(cfg, card, run_dir, progress)  # are this run's, which Lightning's CSV logger would warn about
    if not (run_dir / CHECKPOINT).is_file():
        raise RuntimeError(f"training finished without {run_dir / CHECKPOINT}")
    atomic_write_text(run_dir / "checkpoints" / "config.yaml", _config_yaml(cfg))
    result.update(checkpoint=str(CHECKPOINT), training_curves=_curves(run_dir, cfg),
                  wall_s=round(time.perf_counter() - t0, 2))
    result = {"format": RESULT_FORMAT, "format_version": 1, "task": cfg.task, "name": _name(cfg),
              "medssl_version": __version__, "config": cfg.to_dict(), **result}
    atomic_write_json(run_dir / "metrics.json", result)
    return result


def _name(cfg: FinetuneConfig) -> str:
    if cfg.name:
        return cfg.name
    if cfg.task == "classification":
        return Path(cfg.path).stem
    return Path(cfg.root).name if cfg.root else "segmentation"


def _card(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The encoder card's JSON (None from scratch); an ``architecture`` that contradicts it is a config error."""
    from medssl.models.hub import read_card

    if cfg.encoder is None:
        return None
    card = read_card(cfg.encoder)[0]
    if cfg.architecture is not None and dict(cfg.architecture) != card["architecture"]:
        raise ProtocolConfigError("architecture", f"{cfg.architecture} differs from the encoder card's "
                                  f"{card['architecture']}; leave it out to use the card's")
    return card


def _config_yaml(cfg: FinetuneConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _classification(cfg: FinetuneConfig, card: dict[str, Any] | None, run_dir: Path,
                    progress: bool) -> dict[str, Any]:
    from medssl.storage.hashing import file_sha256
    from medssl.data.medmnist import MedMNISTDataset
    from medssl.finetune.classification import fit_classifier, labelled_set
    from medssl.finetune.subsets import SubsetRecord

    path = Path(cfg.path)
    if not path.is_file():
        raise ProtocolConfigError("path", f"dataset file not found: {path}")
    try:
        train, val, test = (MedMNISTDataset(path, s, spatial_dims=cfg.spatial_dims) for s in ("train", "val", "test"))
    except ValueError as exc:
        raise MedsslError(Reason.UNREADABLE, str(exc), [path]) from None
    if train.multilabel:
        raise ProtocolConfigError("path", f"{path} is multi-label; fine-tuning here is single-label only")
    cfg.spatial_dims = train.spatial_dims  # resolved: recorded in config.yaml
    if card is not None and (card["spatial_dims"], card["in_channels"]) != (train.spatial_dims,
                                                                          train.image_shape[0]):
        raise ProtocolConfigError("encoder", f"the encoder takes {card['in_channels']}-channel "
                                  f"{card['spatial_dims']}D images, {path.name} holds {train.image_shape[0]}-channel "
                                  f"{train.spatial_dims}D images")
    subset = None
    if cfg.label_fraction is not None or cfg.label_count is not None:
        if cfg.label_count is not None and cfg.label_count > len(train):
            raise ProtocolConfigError("label_count", f"{cfg.label_count} labelled items requested, {path.name} "
                                      f"has {len(train)} train items")
        subset = SubsetRecord.draw(train.labels[:, 0], seed=cfg.seed, fraction=cfg.label_fraction,
                                   count=cfg.label_count, stratified=cfg.stratified, min_per_class=cfg.min_per_class)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", _config_yaml(cfg))
    labelled = labelled_set(train, None if subset is None else subset.indices, augment=cfg.augment, seed=cfg.seed)
    out = fit_classifier(cfg.encoder, cfg.architecture, labelled, val, test, mode=cfg.mode, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                         patience=cfg.patience, min_steps=cfg.min_steps,
                         num_classes=train.num_classes, freeze_encoder_epochs=cfg.freeze_encoder_epochs,
                         layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                         dropout=cfg.dropout, encoder_lr_scale=cfg.encoder_lr_scale, ema_decay=cfg.ema_decay,
                         select=cfg.select, run_dir=run_dir, accelerator=cfg.accelerator, progress=progress)
    out["data"] = {"path": str(path), "sha256": file_sha256(path), "num_classes": train.num_classes,
                   "spatial_dims": train.spatial_dims, "n_train_split": len(train)}
    out["subset"] = None if subset is None else subset.to_dict()
    return out


def _segmentation(cfg: FinetuneConfig, card: dict[str, Any] | None, run_dir: Path, progress: bool) -> dict[str, Any]:
    from medssl.finetune.seg_cases import labelled_subset, select_cases
    from medssl.finetune.seg_fit import fit_segmenter
    from medssl.finetune.seg_protocol import recorded_split, seg_options, task_cases

    cases, label_names = task_cases(cfg)
    try:
        split = recorded_split(cfg, cases)
    except ValueError as exc:  # n_val + n_test leave no training case
        raise ProtocolConfigError("n_test", str(exc)) from None
    train, val, test = (select_cases(cases, split[p]) for p in ("train", "val", "test"))
    for part, cases_of, name in (("validation", val, "n_val"), ("test", test, "n_test")):
        if not cases_of:
            raise ProtocolConfigError(name, f"the split has no {part} cases (best-epoch selection and scoring "
                                      "need at least one each)")
    if cfg.labelled_count is not None and cfg.labelled_count > len(train):
        raise ProtocolConfigError("labelled_count", f"{cfg.labelled_count} labelled cases requested, the split has "
                                  f"{len(train)} training cases")
    labelled = train if cfg.labelled_count is None else labelled_subset(train, cfg.labelled_count, cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", _config_yaml(cfg))
    out = fit_segmenter(
        cfg.encoder, None if card is not None else cfg.architecture, labelled, val, test, label_names=label_names,
        spatial_dims=cfg.spatial_dims, roi_size=cfg.roi_size, plan=cfg.plan, override_plan=cfg.override_plan,
        hu_check=cfg.hu_check, cache_dir=cfg.cache_dir, decoder=cfg.decoder, epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, patience=cfg.patience, min_steps=cfg.min_steps,
        freeze_encoder_epochs=cfg.epochs if cfg.mode == "frozen" else cfg.freeze_encoder_epochs,
        layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, warmup=cfg.warmup, pos=cfg.pos, neg=cfg.neg,
        sw_overlap=cfg.sw_overlap, sw_batch_size=cfg.sw_batch_size, run_dir=run_dir, accelerator=cfg.accelerator,
        progress=progress, transfer=cfg.transfer, **seg_options(cfg))
    out.update(label_names=label_names, case_split=split, labelled_cases=[c.case_id for c in labelled])
    return out


def _curves(run_dir: Path, cfg: FinetuneConfig) -> str | None:
    """``training_curves.png`` from Lightning's ``metrics.csv``; None (logged) when there is nothing to plot."""
    from medssl.eval.plots import training_curves

    init = "from scratch" if cfg.encoder is None else "from an encoder card"
    try:
        training_curves(run_dir / "metrics.csv", run_dir / "training_curves.png",
                        title=f"{_name(cfg)}: {cfg.task} fine-tuning {init}")
    except (OSError, ValueError) as exc:
        log.warning("no training curves for %s: %s", run_dir, exc)
        return None
    return "training_curves.png"
