"""Few-label segmentation protocol: does a pretrained encoder beat the same network from scratch with N labelled cases?

For every labelled-case count and seed, :func:`run_seg_protocol` draws the labelled training cases from the recorded
split (:func:`medssl.finetune.seg_cases.labelled_subset`: nested, so 5 cases of seed s are among its 20) and trains:

* ``finetune``: the card's encoder in its MONAI segmentation network (decoder random), everything trained;
* ``whole``: whole-network transfer, the card's encoder and pretrained decoder (a restoration method pretrained with
  ``decoder: basicunet``; only the head starts random), everything trained: against ``finetune`` on the same
  subsets and seeds it measures what the pretrained decoder adds;
* ``frozen``: the same, encoder frozen throughout (only the decoder learns: the segmentation analogue of a linear
  probe);
* ``scratch``: the same network from random initialisation, same data preparation (the card's plan), same budget.

The split by case is fixed and recorded: ``split_file`` is read when it exists and otherwise drawn from
(``n_val``, ``n_test``, ``split_seed``) and written, so pretraining can leave the same validation and test cases out
(``NiftiFiles(exclude_split=...)``). Best epochs are chosen on the validation cases only; every number is on the
test cases. Outputs in ``out_dir``: ``label_efficiency_<dataset>.json`` (records: one per method x count x seed x
metric, metrics ``dice``, ``hd95`` (mm) and ``dice_<label>``, or ``dice_<region>`` / ``hd95_<region>`` with
``regions``; runs with details; the split), ``.md`` (mean ± std over seeds) and ``.png`` (mean Dice versus labelled
cases).

Tumour data (e.g. ``configs/finetune/brats_protocol.yaml``): ``regions`` (``{WT: [1, 2, 3, 4], TC: [1, 3, 4], ET:
[4]}``) trains overlapping sigmoid region channels (``region_training: classes`` keeps softmax classes) and
scores Dice / HD95 per region; ``channel_names`` (default: the MSD ``dataset.json``'s ``channel_names`` /
``modality``) are checked against the encoder card's, ``adapt_channels`` allows another channel count; cases with
masks (``brainmask`` in ``dataset.json``, or a ``masks`` glob) draw background crops inside them (``use_masks``).

``workers`` > 1 trains that many runs at once, each in its own process with one torch thread
(:func:`medssl.finetune.parallel_runs.run_parallel`): small 3-D networks on a CPU use a core far better as
separate runs than as threads of one run. Each run is seeded on its own, so the records are those of ``workers: 1``
run with one torch thread, in the same order.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medssl.storage.atomic import atomic_write_json, atomic_write_text
from medssl.eval.label_efficiency import budget_label, label_efficiency_plot, markdown_table
from medssl.finetune.config_file import ProtocolConfigError, check_fields, read_yaml_config
from medssl.finetune.seg_cases import (
    cases_from_glob,
    cases_from_msd,
    labelled_subset,
    msd_label_names,
    select_cases,
    split_cases,
)
from medssl.finetune.parallel_runs import run_parallel
from medssl.finetune.seg_options import SegOptions, seg_options, task_channels

__all__ = ["SEG_METHODS", "SegProtocolConfig", "recorded_split", "run_seg_protocol", "seg_options", "task_cases",
           "task_channels"]

SEG_METHODS = ("finetune", "whole", "frozen", "scratch")
RESULT_FORMAT = "medssl-label-efficiency"


@dataclass
class SegProtocolConfig(SegOptions):
    """One segmentation protocol (see module docstring). Data: an MSD folder ``root`` or ``images`` + ``labels``
    glob patterns (then ``label_names`` is required). The region / channel / mask / flip options are
    inherited from :class:`~medssl.finetune.seg_options.SegOptions`."""

    task: str = "segmentation"
    root: str | None = None
    images: str | list[str] | None = None
    labels: str | None = None
    label_names: list[str] | None = None
    dataset: str | None = None
    split_file: str | None = None
    n_val: int = 10
    n_test: int = 40
    split_seed: int = 0
    encoder: str | None = None
    architecture: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    override_plan: bool = False
    hu_check: bool = True
    counts: list[int] = field(default_factory=lambda: [5])
    seeds: list[int] = field(default_factory=lambda: [0])
    methods: list[str] = field(default_factory=lambda: ["finetune", "scratch"])
    spatial_dims: int = 3
    roi_size: list[int] = field(default_factory=lambda: [32, 48, 32])
    decoder: dict[str, Any] | None = None
    epochs: int = 20
    min_steps: int = 0
    batch_size: int = 2
    lr: float = 1e-3
    scratch_lr: float | None = None
    weight_decay: float = 0.05
    warmup: float = 0.1
    patience: int | None = 5
    freeze_encoder_epochs: int = 0
    layer_decay: float = 1.0
    pos: float = 1.0
    neg: float = 1.0
    sw_overlap: float = 0.25
    cache_dir: str | None = None
    plot: bool = True
    keep_checkpoints: bool = False
    workers: int = 1

    @property
    def name(self) -> str:
        return self.dataset or (Path(self.root).name if self.root else "segmentation")

    @classmethod
    def from_yaml(cls, file: str | Path, /, **overrides: Any) -> SegProtocolConfig:
        """Read a YAML protocol; ``overrides`` (not None) replace its fields; unknown fields raise."""
        data = read_yaml_config(file, overrides, "--protocol")
        check_fields(cls, data, str(file))
        return cls(**data).validate(str(file))

    def validate(self, source: str = "") -> SegProtocolConfig:
        def bad(name: str, message: str) -> ProtocolConfigError:
            return ProtocolConfigError(name, f"{message}, got {getattr(self, name)!r}", source)

        for name in ("lr", "weight_decay", "warmup", "layer_decay", "pos", "neg", "sw_overlap", "scratch_lr"):
            if isinstance(getattr(self, name), str):  # YAML 1.1 reads 1e-3 as a string
                setattr(self, name, float(getattr(self, name)))
        if self.task != "segmentation":
            raise bad("task", "must be 'segmentation'")
        if (self.root is None) == (self.images is None) or (self.images is not None and self.labels is None):
            raise bad("root", "give an MSD folder 'root', or 'images' and 'labels' patterns (not both)")
        if self.images is not None and not self.label_names:
            raise bad("label_names", "required with 'images'/'labels' (index = label value, 0 = background)")
        if not self.counts or any(not isinstance(c, int) or c < 1 for c in self.counts):
            raise bad("counts", "must be a non-empty list of integers >= 1 (labelled training cases)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise bad("seeds", "need at least one seed >= 0, without repeats")
        if not self.methods or any(m not in SEG_METHODS for m in self.methods) or len(set(self.methods)) != len(
                self.methods):
            raise bad("methods", f"must be distinct methods from {list(SEG_METHODS)}")
        if self.encoder is None and any(m != "scratch" for m in self.methods):
            raise bad("encoder", "an encoder card is required for 'finetune', 'whole' and 'frozen' (pass --encoder "
                      "PATH)")
        if self.encoder is None and (self.architecture is None or self.plan is None):
            raise bad("architecture", "'scratch' without an encoder card needs 'architecture' and 'plan'")
        if self.spatial_dims not in (2, 3) or len(self.roi_size) != self.spatial_dims:
            raise bad("roi_size", f"must have spatial_dims={self.spatial_dims} axes")
        for name in ("epochs", "batch_size", "n_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("n_val", "min_steps", "freeze_encoder_epochs", "split_seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad("patience", "must be null or an integer >= 1")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise bad("workers", "must be an integer >= 1 (runs trained at once, one process and one thread each)")
        if "frozen" in self.methods and self.n_val == 0:
            raise bad("n_val", "checkpoint selection needs validation cases")
        self.validate_seg_options(self.spatial_dims, source)
        return self


def task_cases(cfg: SegProtocolConfig) -> tuple[list[Any], list[str]]:
    """The cases of ``cfg`` (an MSD folder or image/label globs; also a FinetuneConfig) and the label names."""
    if cfg.root is not None:
        return cases_from_msd(cfg.root), list(cfg.label_names or msd_label_names(cfg.root))
    return cases_from_glob(cfg.images, cfg.labels, cfg.masks), list(cfg.label_names)


def recorded_split(cfg: SegProtocolConfig, cases: list[Any]) -> dict[str, Any]:
    """The recorded split: read from ``split_file`` when it exists (its ids must be cases), else drawn and written."""
    if cfg.split_file and Path(cfg.split_file).is_file():
        split = json.loads(Path(cfg.split_file).read_text())
        for part in ("train", "val", "test"):
            select_cases(cases, split[part])  # unknown ids raise, naming them
        return split
    split = split_cases(cases, cfg.n_val, cfg.n_test, cfg.split_seed)
    if cfg.split_file:
        atomic_write_text(Path(cfg.split_file), json.dumps(split, indent=1) + "\n")
    return split


def run_seg_protocol(cfg: SegProtocolConfig, out_dir: str | Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run every count x seed x method of ``cfg`` (see module docstring); returns the records."""
    from tqdm.auto import tqdm

    from medssl import __version__
    from medssl.finetune.seg_data import class_ratios_error
    from medssl.finetune.seg_fit import fit_segmenter
    from medssl.models.dense_transfer import card_decoder
    from medssl.models.hub import read_card

    cfg.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    cases, label_names = task_cases(cfg)
    problem = class_ratios_error(cfg.class_ratios, len(label_names))  # against the labels before any run, not in one
    if problem is not None:
        raise ProtocolConfigError("class_ratios", f"{problem}; labels {label_names}")
    split = recorded_split(cfg, cases)
    train, val, test = (select_cases(cases, split[p]) for p in ("train", "val", "test"))
    if max(cfg.counts) > len(train):
        raise ProtocolConfigError("counts", f"{max(cfg.counts)} labelled cases requested, the split has {len(train)} "
                                  "training cases")
    card = read_card(cfg.encoder)[0] if cfg.encoder else None
    if "whole" in cfg.methods:  # refuse a card without a decoder before any run, not after the other methods
        card_decoder(card, cfg.encoder)
    architecture = cfg.architecture or card["architecture"]
    scratch_plan = cfg.plan or (card["preprocessing"]["plan"] if card else None)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "cache"
    options = seg_options(cfg)
    result: dict[str, Any] = {
        "format": RESULT_FORMAT, "format_version": 1, "task": "segmentation", "dataset": cfg.name, "split": "test",
        "complete": False, "label_names": label_names, "regions": cfg.regions,
        "channels": options["channel_names"],
        "data": {"path": cfg.root or cfg.images, "n_train": len(train), "n_val": len(val), "n_test": len(test)},
        "case_split": split,
        "encoder": None if card is None else {"path": str(cfg.encoder), "sha256": card["weights"]["sha256"],
                                              "method": card.get("method"), "architecture": card["architecture"]},
        "config": asdict(cfg), "medssl_version": __version__, "runs": [], "records": [],
    }
    json_path = out_dir / f"label_efficiency_{cfg.name}.json"
    bar = tqdm(total=len(cfg.counts) * len(cfg.seeds) * len(cfg.methods), desc=f"label efficiency {cfg.name}",
               unit="run", disable=not progress)
    jobs = []  # (count, seed, method, fit_segmenter keyword arguments), in report order
    for count in sorted(cfg.counts):
        for seed in cfg.seeds:
            labelled = labelled_subset(train, count, seed)
            for method in cfg.methods:
                pretrained = method != "scratch"
                kwargs = dict(
                    card=cfg.encoder if pretrained else None, architecture=None if pretrained else architecture,
                    train_cases=labelled, val_cases=val, test_cases=test,
                    label_names=label_names, spatial_dims=cfg.spatial_dims, roi_size=cfg.roi_size,
                    plan=cfg.plan if pretrained else scratch_plan, override_plan=cfg.override_plan,
                    hu_check=cfg.hu_check, cache_dir=cache_dir, decoder=cfg.decoder, epochs=cfg.epochs,
                    batch_size=cfg.batch_size, lr=cfg.lr if pretrained else (cfg.scratch_lr or cfg.lr), seed=seed,
                    patience=cfg.patience, min_steps=cfg.min_steps,
                    freeze_encoder_epochs=(cfg.epochs if method == "frozen" else cfg.freeze_encoder_epochs)
                    if pretrained else 0,
                    layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, warmup=cfg.warmup, pos=cfg.pos,
                    neg=cfg.neg, sw_overlap=cfg.sw_overlap,
                    run_dir=out_dir / "runs" / f"{method}_n{count}_seed{seed}" if cfg.keep_checkpoints else None,
                    transfer="whole" if method == "whole" else "encoder", **options)
                jobs.append((count, seed, method, [c.case_id for c in labelled], kwargs))

    def record(job: tuple, run: dict[str, Any]) -> None:
        count, seed, method, labelled_ids, _ = job
        run.update(method=method, count=count, seed=seed, labelled_cases=labelled_ids)
        result["runs"].append(run)
        m = run["metrics"]
        values = {"dice": m["mean_dice"], "hd95": m["mean_hd95"],
                  **{f"dice_{n}": v for n, v in m["dice"].items()},
                  **({f"hd95_{n}": v for n, v in m["hd95"].items()} if cfg.regions else {})}
        for metric, value in values.items():
            result["records"].append({
                "dataset": cfg.name, "method": method, "fraction": None, "count": count,
                "per_class": None, "n_labelled": count, "seed": seed, "metric": metric, "value": value,
                "split": "test", "encoder_sha256": run["encoder_sha256"]})
        bar.update()
        atomic_write_json(json_path, result)

    if cfg.workers == 1:
        for job in jobs:
            bar.set_postfix_str(f"{budget_label(None, job[0])} seed {job[1]} {job[2]}")
            record(job, fit_segmenter(**job[4]))
    else:
        for job, run in zip(jobs, run_parallel(fit_segmenter, [job[4] for job in jobs], cfg.workers)):
            record(job, run)
    bar.close()
    result.update(complete=True, wall_s=round(time.perf_counter() - t0, 2))
    atomic_write_json(json_path, result)
    parts = list(cfg.regions) if cfg.regions else label_names[1:]
    metrics = ["dice", *[f"dice_{n}" for n in parts], "hd95", *([f"hd95_{n}" for n in parts] if cfg.regions else [])]
    atomic_write_text(out_dir / f"label_efficiency_{cfg.name}.md",
                      markdown_table(result, metrics, SEG_METHODS, unit="cases"))
    if cfg.plot:
        label_efficiency_plot(result, out_dir / f"label_efficiency_{cfg.name}.png", "dice", SEG_METHODS, x="count")
    return result["records"]
