"""Few-label classification protocol: how much does a pretrained encoder help when only a few items are labelled?

For every label budget (``fractions`` and/or ``counts`` of the train split, and/or ``per_class``: k labelled items
of every class) and every seed, :func:`run_protocol` draws a recorded, stratified subset
(:mod:`medssl.finetune.subsets`), then runs each method on it:

* ``linear_probe``: logistic regression on frozen features of the pretrained encoder;
* ``knn``: weighted cosine kNN on the same features (features of the whole train and test splits are extracted
  once; each budget only selects rows);
* ``finetune``: the pretrained encoder + a linear head, all trained, best epoch chosen on the validation split;
* ``scratch``: the same architecture from random initialisation with the same budget (epochs, LR, patience).

Every method is scored on the **test** split (records say so): one record per method x budget x seed x metric
(``auroc``, ``accuracy``, ``balanced_accuracy``; ``encoder_sha256`` is null for ``scratch``, which uses no
pretrained weights). The budget is in ``fraction``, ``count`` and ``per_class``, exactly one of them not null;
``n_labelled`` is the number of items actually labelled (below ``per_class`` x classes when a class is smaller).
The validation split is used only by ``finetune``/``scratch`` for checkpoint selection and early stopping, in
full (``max_eval`` caps it and the test split to a fixed stratified subset, also recorded): a fully labelled
validation split is optimistic in a few-label setting, which is the usual convention of these benchmarks and
applies to both trained methods alike.

Outputs in ``out_dir`` (written atomically; the JSON also after each budget x seed, marked ``"complete": false``
until the end, so an interrupted run keeps what it finished):

* ``label_efficiency_<stem>.json``: records, the config, every subset record (indices included), per-run details
  (best epoch, load report), data and encoder fingerprints;
* ``label_efficiency_<stem>.md``: mean ± sample std over seeds per method x budget for AUROC, accuracy and
  balanced accuracy;
* ``label_efficiency_<stem>.png`` (``plot: true``): test AUROC versus labelled fraction per method, std error bars.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Subset

from medssl.storage.atomic import atomic_write_json, atomic_write_text
from medssl.data.medmnist import MedMNISTDataset
from medssl.finetune.config_file import SELECTS, ProtocolConfigError, check_fields, read_yaml_config
from medssl.eval.label_efficiency import budget_label, label_efficiency_plot, markdown_table
from medssl.eval.metrics import classification_metrics
from medssl.eval.precise_bn import recalibrated_copy
from medssl.eval.probe import extract_features, knn_predict, linear_probe_predict
from medssl.finetune.classification import fit_classifier, labelled_set
from medssl.finetune.subsets import SubsetRecord

__all__ = ["METHODS", "METRICS", "ProtocolConfig", "ProtocolConfigError", "run_protocol"]

METHODS = ("linear_probe", "knn", "finetune", "scratch")
METRICS = ("auroc", "accuracy", "balanced_accuracy")
NEEDS_ENCODER = ("linear_probe", "knn", "finetune")
RESULT_FORMAT = "medssl-label-efficiency"
FLOAT_FIELDS = ("lr", "scratch_lr", "weight_decay", "warmup", "dropout", "layer_decay", "ema_decay", "encoder_lr_scale",
                "knn_temperature", "probe_C")


@dataclass
class ProtocolConfig:
    """One few-label protocol (see module docstring); loaded from YAML with :meth:`from_yaml`.

    ``path`` is any MedMNIST-format ``.npz``; ``encoder`` an exported encoder card (required by ``linear_probe``,
    ``knn`` and ``finetune``); ``architecture`` (``{"name", "kwargs"}``) is needed only for ``scratch`` without an
    encoder. Budgets: ``fractions`` and ``counts`` of the train split, ``per_class`` (k labelled items of every
    class, a smaller class whole; ``stratified`` and ``min_per_class`` apply to fractions and counts only); at least
    one budget of any kind. ``lr`` is the fine-tuning LR (``scratch_lr`` for scratch, default the same);
    ``patience`` counts validations without a better validation AUROC (null: no early stopping); ``min_steps``
    stretches the epochs of small subsets (:func:`~medssl.finetune.classification.fit_classifier`); ``max_eval``
    caps validation and test. ``augment``: ``finetune`` and ``scratch`` train on the labelled items perturbed anew
    every epoch by :func:`~medssl.transforms.finetune_augment.finetune_augment` (small affine + intensity; no flips).
    ``ema_decay`` > 0: ``finetune`` and ``scratch`` validate, select and test an exponential moving average of
    their weights (:func:`~medssl.finetune.trainer.fit_best`); 0 = off. ``select``: ``best`` (the checkpoint of
    the best validation AUROC) or ``last`` (the final weights; the validation split is not used to pick an epoch,
    which removes the selection noise of a small validation split; ``patience`` is not used: every run trains all
    its epochs). ``encoder_lr_scale``: ``finetune`` trains the pretrained encoder at this fraction of ``lr`` (the
    head at ``lr``); scratch has nothing pretrained to protect and keeps one LR. ``probe_precise_bn``:
    ``linear_probe`` and ``knn`` take their features from a copy of the encoder whose BatchNorm statistics are
    re-estimated on the (unaugmented, unlabelled use of the) train split images (:func:`~medssl.eval.precise_bn.
    recalibrated_copy`, ``feature_batch_size`` x 8 images), as the online probe does during pretraining; off, they
    use the running statistics the encoder was exported with, which pretraining accumulated on augmented views.
    """

    path: str
    encoder: str | None = None
    architecture: dict[str, Any] | None = None
    dataset: str | None = None  # name in the records; default: the file stem
    spatial_dims: int | None = None
    fractions: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    per_class: list[int] = field(default_factory=list)  # k labelled items of every class (stratified by nature)
    seeds: list[int] = field(default_factory=lambda: [0])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    stratified: bool = True
    min_per_class: int = 1
    epochs: int = 20
    min_steps: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    scratch_lr: float | None = None
    weight_decay: float = 0.05
    warmup: float = 0.1
    patience: int | None = 5
    freeze_encoder_epochs: int = 0
    layer_decay: float = 1.0
    dropout: float = 0.0
    augment: bool = False
    ema_decay: float = 0.0
    select: str = "best"
    encoder_lr_scale: float = 1.0
    knn_k: int = 20
    knn_temperature: float = 0.07
    probe_C: float = 1.0
    max_eval: int | None = None
    feature_batch_size: int = 256
    probe_precise_bn: bool = False
    plot: bool = True
    keep_checkpoints: bool = False

    @property
    def name(self) -> str:
        return self.dataset or Path(self.path).stem

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> ProtocolConfig:
        """Build and :meth:`validate`; unknown or mistyped fields raise :class:`ProtocolConfigError`."""
        check_fields(cls, data, source)
        if data.get("path") in (None, ""):
            raise ProtocolConfigError("path", "required: the MedMNIST .npz to evaluate on", source)
        cfg = cls(**data)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, file: str | Path, /, **overrides: Any) -> ProtocolConfig:
        """Read a YAML protocol; ``overrides`` (not None) replace its fields before validation."""
        data = read_yaml_config(file, overrides, "--protocol")
        return cls.from_dict(data, source=str(file))

    def validate(self, source: str = "") -> ProtocolConfig:
        """Check every field's type and range; raise :class:`ProtocolConfigError` naming the first bad one."""

        def bad(name: str, message: str) -> ProtocolConfigError:
            return ProtocolConfigError(name, f"{message}, got {getattr(self, name)!r}", source)

        def number_list(name: str, kind: type) -> None:
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not all(
                    isinstance(v, (int, float) if kind is float else int) and not isinstance(v, bool)
                    for v in values):
                raise bad(name, f"must be a list of {kind.__name__}s")
            setattr(self, name, [kind(v) for v in values])

        for name in FLOAT_FIELDS:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise bad(name, "must be a number") from None
        if isinstance(self.fractions, (list, tuple)):
            self.fractions = [float(v) if isinstance(v, str) and _is_float(v) else v for v in self.fractions]
        number_list("fractions", float)
        number_list("counts", int)
        number_list("per_class", int)
        number_list("seeds", int)
        if not self.fractions and not self.counts and not self.per_class:
            raise bad("fractions", "give at least one label budget: a fraction, or 'counts' or 'per_class'")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise bad("fractions", "every fraction must lie in (0, 1]")
        if any(c < 1 for c in self.counts):
            raise bad("counts", "every count must be >= 1")
        if any(k < 1 for k in self.per_class) or len(set(self.per_class)) != len(self.per_class):
            raise bad("per_class", "every per-class budget must be an integer >= 1, without repeats")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise bad("seeds", "need at least one seed >= 0, without repeats")
        if (not isinstance(self.methods, (list, tuple)) or not self.methods
                or any(m not in METHODS for m in self.methods) or len(set(self.methods)) != len(self.methods)):
            raise bad("methods", f"must be a non-empty list of distinct methods from {list(METHODS)}")
        self.methods = list(self.methods)
        if self.encoder is None and any(m in NEEDS_ENCODER for m in self.methods):
            raise ProtocolConfigError("encoder", f"an encoder card is required for "
                                      f"{[m for m in self.methods if m in NEEDS_ENCODER]} (pass --encoder PATH)",
                                      source)
        if self.encoder is None and self.architecture is None:
            raise ProtocolConfigError("architecture", "'scratch' without an encoder needs the architecture "
                                      "({name, kwargs}) to build", source)
        if self.architecture is not None and not (isinstance(self.architecture, dict)
                                                  and set(self.architecture) <= {"name", "kwargs"}
                                                  and "name" in self.architecture):
            raise bad("architecture", "must be a mapping {name, kwargs}")
        if self.spatial_dims not in (None, 2, 3):
            raise bad("spatial_dims", "must be 2, 3 or null (inferred)")
        for name in ("epochs", "batch_size", "knn_k", "feature_batch_size"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool) \
                    or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("min_per_class", "freeze_encoder_epochs", "min_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        for name in ("patience", "max_eval"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "must be null or an integer >= 1")
        for name in ("lr", "knn_temperature", "probe_C") + (("scratch_lr",) if self.scratch_lr is not None else ()):
            if not isinstance(getattr(self, name), (int, float)) or not getattr(self, name) > 0:
                raise bad(name, "must be a number > 0")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise bad("weight_decay", "must be a number >= 0")
        if not isinstance(self.warmup, (int, float)) or self.warmup < 0:
            raise bad("warmup", "must be >= 0 (fraction of steps if < 1, else steps)")
        for name in ("augment", "probe_precise_bn"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise bad("dropout", "must lie in [0, 1)")
        if not isinstance(self.layer_decay, (int, float)) or not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", "must lie in (0, 1]")
        if not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "must lie in [0, 1) (0 = off)")
        if not isinstance(self.encoder_lr_scale, (int, float)) or not 0 < self.encoder_lr_scale <= 1:
            raise bad("encoder_lr_scale", "must lie in (0, 1]")
        if self.select not in SELECTS:
            raise bad("select", f"must be one of {list(SELECTS)}")
        return self

    def budgets(self) -> list[tuple[float | None, int | None, int | None]]:
        """``(fraction, count, per_class)`` with one of them set: the fractions, then the counts, then the
        per-class budgets, each ascending."""
        return ([(f, None, None) for f in sorted(self.fractions)] + [(None, c, None) for c in sorted(self.counts)]
                + [(None, None, k) for k in sorted(self.per_class)])


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _capped(ds: MedMNISTDataset, cap: int | None) -> tuple[Any, SubsetRecord | None]:
    if cap is None or cap >= len(ds):
        return ds, None
    record = SubsetRecord.draw(ds.labels[:, 0], count=cap, seed=0, split=ds.split)
    return Subset(ds, record.indices), record


def run_protocol(cfg: ProtocolConfig, out_dir: str | Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run every budget x seed x method of ``cfg`` (see module docstring); returns the records."""
    from tqdm.auto import tqdm

    from medssl import __version__
    from medssl.storage.hashing import file_sha256
    from medssl.models.hub import load_encoder, read_card

    cfg.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data_path = Path(cfg.path)
    if not data_path.is_file():
        raise ProtocolConfigError("path", f"dataset file not found: {data_path}")
    train = MedMNISTDataset(data_path, "train", spatial_dims=cfg.spatial_dims)
    if train.multilabel:
        raise ProtocolConfigError("path", f"{data_path} is multi-label; the protocol is single-label only")
    val, val_record = _capped(MedMNISTDataset(data_path, "val", spatial_dims=cfg.spatial_dims), cfg.max_eval)
    test, test_record = _capped(MedMNISTDataset(data_path, "test", spatial_dims=cfg.spatial_dims), cfg.max_eval)
    train_y = train.labels[:, 0].astype(np.int64)
    if cfg.counts and max(cfg.counts) > len(train):
        raise ProtocolConfigError("counts", f"{max(cfg.counts)} labelled items requested, {data_path.name} has "
                                  f"{len(train)} train items")
    num_classes = train.num_classes

    card = sha = None
    architecture = cfg.architecture
    if cfg.encoder is not None:
        card, _ = read_card(cfg.encoder)
        sha, architecture = card["weights"]["sha256"], architecture or card["architecture"]
        dims, channels = train.spatial_dims, train.image_shape[0]
        if (card["spatial_dims"], card["in_channels"]) != (dims, channels):
            raise ProtocolConfigError("encoder", f"the encoder takes {card['in_channels']}-channel "
                                      f"{card['spatial_dims']}D images, {data_path.name} holds {channels}-channel "
                                      f"{dims}D images")
    features: dict[str, np.ndarray] = {}
    if any(m in ("linear_probe", "knn") for m in cfg.methods):
        encoder = load_encoder(cfg.encoder).module
        if cfg.probe_precise_bn:  # BatchNorm statistics of clean train images, not of pretraining's views
            encoder = recalibrated_copy(encoder, train, batch_size=cfg.feature_batch_size)
        features["train"], _ = extract_features(encoder, train, batch_size=cfg.feature_batch_size)
        features["test"], features["test_y"] = extract_features(encoder, test, batch_size=cfg.feature_batch_size)

    result: dict[str, Any] = {
        "format": RESULT_FORMAT, "format_version": 1, "dataset": cfg.name, "complete": False,
        "data": {"path": str(data_path), "sha256": file_sha256(data_path), "num_classes": num_classes,
                 "n_train": len(train), "n_val": len(val), "n_test": len(test),
                 "val_subset": val_record and val_record.to_dict(),
                 "test_subset": test_record and test_record.to_dict()},
        "encoder": None if card is None else {"path": str(cfg.encoder), "sha256": sha, "method": card.get("method"),
                                              "architecture": card["architecture"]},
        "config": asdict(cfg), "medssl_version": __version__,
        "subsets": [], "runs": [], "records": [],
    }
    stem = Path(cfg.path).stem
    json_path = out_dir / f"label_efficiency_{stem}.json"
    budgets = cfg.budgets()
    bar = tqdm(total=len(budgets) * len(cfg.seeds) * len(cfg.methods), desc=f"label efficiency {cfg.name}",
               unit="run", disable=not progress)
    for fraction, count, per_class in budgets:
        label = budget_label(fraction, count, per_class=per_class)
        for seed in cfg.seeds:
            # stratified / min_per_class are the policy of fraction and count budgets; per_class is its own
            policy = {"stratified": cfg.stratified, "min_per_class": cfg.min_per_class} if per_class is None else {}
            subset = SubsetRecord.draw(train_y, fraction=fraction, count=count, per_class=per_class, seed=seed,
                                       **policy)
            result["subsets"].append(subset.to_dict())
            idx = np.asarray(subset.indices)
            for method in cfg.methods:
                bar.set_postfix_str(f"{label} seed {seed} {method}")
                run = _run_method(method, cfg, subset, idx, train, val, test, train_y, features, num_classes,
                                  architecture, out_dir)
                run.update(method=method, fraction=fraction, count=count, per_class=per_class, seed=seed,
                           n_labelled=subset.n_labelled)
                result["runs"].append(run)
                for metric in METRICS:
                    result["records"].append({
                        "dataset": cfg.name, "method": method, "fraction": fraction, "count": count,
                        "per_class": per_class, "n_labelled": subset.n_labelled, "seed": seed, "metric": metric,
                        "value": run["metrics"][metric], "split": "test",
                        "encoder_sha256": sha if method != "scratch" else None,
                    })
                bar.update()
            atomic_write_json(json_path, result)
    bar.close()
    result.update(complete=True, wall_s=round(time.perf_counter() - t0, 2))
    atomic_write_json(json_path, result)
    atomic_write_text(out_dir / f"label_efficiency_{stem}.md", markdown_table(result, METRICS, METHODS))
    if cfg.plot:
        label_efficiency_plot(result, out_dir / f"label_efficiency_{stem}.png", "auroc", METHODS)
    return result["records"]


def _run_method(method: str, cfg: ProtocolConfig, subset: SubsetRecord, idx: np.ndarray, train: MedMNISTDataset,
                val: Any, test: Any, train_y: np.ndarray, features: dict[str, np.ndarray], num_classes: int,
                architecture: dict[str, Any] | None, out_dir: Path) -> dict[str, Any]:
    """Test metrics (and details) of one method on one labelled subset."""
    t0 = time.perf_counter()
    if method in ("linear_probe", "knn"):
        x, y = features["train"][idx], train_y[idx]
        if method == "knn":
            probs = knn_predict(x, y, features["test"], k=cfg.knn_k, temperature=cfg.knn_temperature,
                                num_classes=num_classes)
        else:
            probs = linear_probe_predict(x, y, features["test"], C=cfg.probe_C, seed=subset.seed,
                                         num_classes=num_classes)
        return {"metrics": classification_metrics(features["test_y"], probs), "split": "test",
                "wall_s": round(time.perf_counter() - t0, 2)}
    size = (f"f{subset.fraction:g}" if subset.fraction is not None else f"n{subset.count}" if subset.per_class is None
            else f"k{subset.per_class}")
    run_dir = out_dir / "runs" / f"{method}_{size}_seed{subset.seed}" if cfg.keep_checkpoints else None
    labelled = labelled_set(train, idx, augment=cfg.augment, seed=subset.seed)
    out = fit_classifier(cfg.encoder if method == "finetune" else None, architecture, labelled, val, test,
                         mode="finetune", epochs=cfg.epochs, batch_size=cfg.batch_size,
                         lr=cfg.lr if method == "finetune" else (cfg.scratch_lr or cfg.lr), seed=subset.seed,
                         patience=cfg.patience, min_steps=cfg.min_steps, num_classes=num_classes,
                         freeze_encoder_epochs=cfg.freeze_encoder_epochs if method == "finetune" else 0,
                         layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                         dropout=cfg.dropout, ema_decay=cfg.ema_decay, select=cfg.select,
                         encoder_lr_scale=cfg.encoder_lr_scale if method == "finetune" else 1.0,
                         run_dir=run_dir)
    return out
