#!/usr/bin/env python
"""Label efficiency side by side: from scratch vs the lightly peer vs medssl's methods, same splits, seeds, budget.

One invocation pretrains every arm on the unlabeled train split of a dataset with the **same pretraining budget**
(``--epochs`` epochs at the dataset's batch size, for each ``--pretrain-seeds`` seed; default 0), then evaluates
every arm with the **same few-label protocol and code** (:mod:`medssl.finetune.protocol` for classification,
:mod:`medssl.finetune.seg_protocol` for segmentation) on the same recorded label subsets and seeds, scored on the
test split; checkpoint selection uses the validation split only.

Arms (``--arms``):

* ``scratch``: the encoder architecture of the other arms, randomly initialised, fine-tuned with the same budget;
* ``lightly_simclr``: the external peer, SimCLR pretrained with lightly (``benchmarks/lightly_peer.py``; needs the
  ``bench`` extra, see benchmarks/README.md); classification datasets only;
* ``simclr``, ``moco``, ``byol``, ``simsiam``, ``dino``, ``swav``, ``genesis``, ... : ``medssl pretrain`` with
  ``configs/pretrain/medmnist/<arm>.yaml`` + the dataset's CPU overlay (``configs/pretrain/hippocampus/
  <arm>_basicunet_cpu.yaml`` for hippocampus);
* ``mae``: ``medssl pretrain`` with ``configs/pretrain/mae{2,3}d_medmnist_cpu.yaml`` (a ViT; fine-tuned with
  layer-wise LR decay 0.75).

Downstream evaluations per pretrained arm (classification): ``finetune`` (everything trained, best epoch on val),
``linear_probe`` (logistic regression on frozen features) and ``knn``; segmentation: ``finetune``.

Label budgets (classification): ``--fractions`` of the train split and/or ``--per-class K ...`` (K labelled images
of every class, for every arm, the peer included); budgets given on the command line replace the dataset's defaults
(``Dataset.fractions`` / ``Dataset.per_class``). At 10 or fewer images per class the subset drawn moves the result a
lot, so the harness warns on stderr when fewer than 5 ``--seeds`` are given for such budgets.

Outputs in ``--out`` (default ``benchmarks/results``): ``label_efficiency_<dataset>.json`` (records: arm,
evaluation, label fraction, count or per-class budget, seed, metric, value, wall seconds of that run, pretraining
wall seconds of the arm),
``label_efficiency_<dataset>.md`` (mean ± std over seeds, ratio to the peer) and ``label_efficiency_<dataset>.png``.

Usage::

    python benchmarks/label_efficiency.py --datasets pneumoniamnist --epochs 15          # the issue's peer budget
    python benchmarks/label_efficiency.py --datasets adrenalmnist3d --arms scratch lightly_simclr simclr mae
    python benchmarks/label_efficiency.py --datasets pneumoniamnist --per-class 1 5 10 --seeds 0 1 2 3 4
    python benchmarks/label_efficiency.py --quick --out /tmp/res                          # minutes (smoke test)
"""
from __future__ import annotations

import argparse
import json
import math
import re
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest import machine  # one machine description for every benchmark

PRETRAIN = REPO / "configs" / "pretrain"
FINETUNE = REPO / "configs" / "finetune"
PEER = "lightly_simclr"
VIEW_OVERRIDE = "data.views.init_args."  # --pretrain-override prefix the peer's 3D views take too
CLS_EVALS = ("finetune", "linear_probe", "knn")
METRIC = {"cls": "auroc", "seg": "dice"}
FEW_PER_CLASS, MIN_SEEDS_FEW = 10, 5  # the issue: at <= 10 labelled images per class, use >= 5 seeds
FEW_CASES = 5  # and at <= 5 labelled segmentation cases


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: where it is, how arms pretrain on it, and which protocol evaluates them."""

    name: str
    kind: str                      # "cls" (MedMNIST .npz) or "seg" (MSD folder)
    data: str                      # path under the shared data folder
    protocol: str                  # configs/finetune/<...>.yaml
    overlay: str | None = None     # data + encoder overlay of the medssl SSL arms (classification)
    mae_config: str | None = None  # standalone MAE config
    fractions: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    per_class: tuple[int, ...] = ()  # labelled images of every class (classification); none by default: run time
    batch_size: int = 32
    overrides: dict[str, Any] = field(default_factory=dict)  # extra pretraining CLI arguments (e.g. 64^3 views)


DATASETS = {
    "pneumoniamnist": Dataset("pneumoniamnist", "cls", "medmnist/pneumoniamnist.npz",
                              "pneumoniamnist_protocol.yaml", "medmnist/pneumonia2d_cpu.yaml",
                              "mae2d_medmnist_cpu.yaml", fractions=(0.01, 0.1), batch_size=128),
    "adrenalmnist3d": Dataset("adrenalmnist3d", "cls", "medmnist/adrenalmnist3d.npz",
                              "adrenalmnist3d_protocol.yaml", "medmnist/adrenal3d_cpu.yaml",
                              "mae3d_medmnist_cpu.yaml", fractions=(0.1,), batch_size=32),
    "adrenalmnist3d_64": Dataset("adrenalmnist3d_64", "cls", "medmnist/adrenalmnist3d_64.npz",
                                 "adrenalmnist3d_protocol.yaml", "medmnist/adrenal3d_cpu.yaml", None,
                                 fractions=(0.1,), batch_size=16,
                                 overrides={"views": "--data.views.init_args.global_size=[64, 64, 64]"}),
    "hippocampus": Dataset("hippocampus", "seg", "hippocampus", "hippocampus_protocol.yaml", counts=(5, 20),
                           batch_size=24),  # the batch of configs/pretrain/hippocampus/*_basicunet_cpu.yaml
}


def shared_data() -> Path:
    return Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


# ---------------------------------------------------------------------------------------------------- pretraining
def _overlay(ds: Dataset, data_path: Path, tmp: Path, quick: bool) -> Path:
    """The dataset's CPU overlay with every data path made absolute (and small probes in quick mode)."""
    import yaml

    base = yaml.safe_load((PRETRAIN / ds.overlay).read_text())
    callbacks = base.get("trainer", {}).get("callbacks", [])
    for cb in callbacks:
        cb["init_args"]["path"] = str(data_path)
        if quick:
            cb["init_args"].update(max_train=32, max_eval=16)
    overlay = {"data": {"source": {"init_args": {"path": str(data_path)}}, "batch_size": ds.batch_size}}
    if callbacks:
        overlay["trainer"] = {"callbacks": callbacks}
    out = tmp / f"paths_{ds.name}.yaml"
    out.write_text(yaml.safe_dump(overlay))
    return out


def _cls_architecture(ds: Dataset) -> dict[str, Any]:
    """The encoder spec of the dataset's overlay: the architecture of scratch, the peer and the SSL arms."""
    import yaml

    init = yaml.safe_load((PRETRAIN / ds.overlay).read_text())["model"]["init_args"]
    return {"name": init["encoder"], "kwargs": dict(init["encoder_kwargs"])}


def _overlay_views(ds: Dataset) -> dict[str, Any]:
    """The view settings of the dataset's overlay (``data.views.init_args``): the peer's 3D views."""
    import yaml

    return dict(yaml.safe_load((PRETRAIN / ds.overlay).read_text())["data"]["views"]["init_args"])


def _is_3d(ds: Dataset) -> bool:
    return ds.kind == "cls" and _cls_architecture(ds)["kwargs"].get("spatial_dims") == 3


def _peer_overrides(ds: Dataset, overrides: list[str] | None) -> list[str]:
    """The ``--pretrain-override`` settings that also reach the peer: the view settings (``data.views.init_args.*``)
    on 3D datasets, where the peer's views are medssl's :class:`MultiViewTransform`. The rest configure medssl's
    methods; on 2D the peer keeps lightly's own ``SimCLRTransform``."""
    return [o for o in overrides or [] if o.startswith(VIEW_OVERRIDE)] if _is_3d(ds) else []


def _peer_views(ds: Dataset, overrides: list[str]) -> dict[str, Any] | None:
    """The peer's 3D view settings: the dataset overlay's, updated by the view overrides (values parsed as YAML,
    as the pretraining CLI parses them); None on 2D."""
    import yaml

    if not _is_3d(ds):
        return None
    views = _overlay_views(ds)
    for o in overrides:
        key, _, value = o.partition("=")
        views[key[len(VIEW_OVERRIDE):]] = yaml.safe_load(value)
    return views


def pretrain_medssl(arm: str, ds: Dataset, data_path: Path, run_dir: Path, tmp: Path, epochs: int,
                    quick: bool, overrides: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """``medssl pretrain`` of one arm; returns the card path, steps and wall seconds. ``overrides``: config
    settings ``KEY=VALUE`` given to the pretraining CLI after the config files (``--KEY=VALUE``); ``seed``: the
    run's ``seed_everything`` (initialisation, views, data order)."""
    from medssl.training.cli import PretrainCLI

    if ds.kind == "seg":
        config = PRETRAIN / "hippocampus" / f"{arm}_basicunet_cpu.yaml"
        if not config.is_file():
            raise SystemExit(f"no segmentation pretraining config for arm {arm!r}: {config}")
        args = ["--config", str(config), f"--data.source.init_args.pattern={data_path}/imagesTr/*.nii.gz",
                f"--data.source.init_args.exclude_split={FINETUNE / 'hippocampus_split.json'}",
                f"--data.source.init_args.cache_dir={tmp / 'cache'}"]
    elif arm == "mae":
        if ds.mae_config is None:
            raise SystemExit(f"no MAE config for {ds.name}")
        args = ["--config", str(PRETRAIN / ds.mae_config), f"--data.source.init_args.path={data_path}",
                f"--data.batch_size={ds.batch_size}"]
    else:
        method = PRETRAIN / "medmnist" / f"{arm}.yaml"
        if not method.is_file():
            raise SystemExit(f"unknown arm {arm!r}: no {method}")
        args = ["--config", str(method), "--config", str(PRETRAIN / ds.overlay),
                "--config", str(_overlay(ds, data_path, tmp, quick))]
        args += [v for k, v in ds.overrides.items()]
        if arm in ("dino", "swav"):
            local = [14] * (3 if "3d" in ds.overlay else 2)
            args += [f"--data.views.init_args.num_local={2 if len(local) == 3 else 4}",
                     f"--data.views.init_args.local_size={local}"]
    args += [f"--{o}" for o in overrides or []]
    args += ["--run_dir", str(run_dir), f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
             f"--seed_everything={seed}"]
    if quick:
        args += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.batch_size=8"]
    summary = PretrainCLI(args=args).summary
    return {"card": str(run_dir / "encoder.json"), "steps": summary["global_step"],
            "epochs": summary["epochs_completed"], "wall_s": round(float(summary["wall_s"]), 2),
            "val_loss_before": summary.get("val_loss_before"), "val_loss_after": summary.get("val_loss_after")}


def _config_files(arm: str, ds: Dataset) -> list[Path]:
    """The YAML files an arm's pretraining reads on ``ds`` (the peer: the overlay, for its encoder and 3D views)."""
    if ds.kind == "seg":
        return [PRETRAIN / "hippocampus" / f"{arm}_basicunet_cpu.yaml"]
    if arm == "mae":
        return [PRETRAIN / ds.mae_config] if ds.mae_config else []
    overlay = [PRETRAIN / ds.overlay] if ds.overlay else []
    return overlay if arm == PEER else [PRETRAIN / "medmnist" / f"{arm}.yaml", *overlay]


def _config_sha256(arm: str, ds: Dataset) -> str:
    """Digest of the contents of :func:`_config_files`: ``--reuse`` takes a pretraining run only while the files
    that configured it are unchanged (a new view recipe in the overlay must not reuse runs made with the old one)."""
    import hashlib

    h = hashlib.sha256()
    for path in _config_files(arm, ds):
        h.update(f"{path.relative_to(REPO)}\n".encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    return h.hexdigest()


def pretrain_arm(arm: str, ds: Dataset, data_path: Path, work: Path, tmp: Path, epochs: int,
                 quick: bool, reuse: bool = False, overrides: list[str] | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Pretrain one arm into ``work/pretrain_<arm>`` and record its summary there (``bench_pretrain.json``).

    ``reuse``: an earlier run of the same arm, epochs, quick setting, overrides, seed and config file contents
    (:func:`_config_sha256`) in that folder is taken as it is (its card and summary), so downstream settings can be
    compared without pretraining again. ``overrides``:
    pretraining config settings of the medssl arms; on 3D data their view settings also set the peer's views
    (:func:`_peer_overrides`), so every arm sees the same augmentations. A run with overrides goes to
    ``pretrain_<arm>_<hash of the overrides>``.
    ``seed``: the pretraining seed; seeds other than 0 go to ``..._s<seed>``.
    """
    import hashlib

    from medssl.storage.atomic import atomic_write_json

    overrides = _peer_overrides(ds, overrides) if arm == PEER else list(overrides or [])
    suffix = "_" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8] if overrides else ""
    run_dir = work / f"pretrain_{arm}{suffix}{f'_s{seed}' if seed else ''}"
    summary_path = run_dir / "bench_pretrain.json"
    configs = _config_sha256(arm, ds)
    if reuse and summary_path.is_file():
        done = json.loads(summary_path.read_text())
        # a summary written before config hashes were recorded is taken as made with the files as they are
        if (done.get("requested_epochs"), done.get("quick"), done.get("overrides", []), done.get("seed", 0),
                done.get("config_sha256", configs)) == (epochs, quick, overrides, seed, configs) \
                and Path(done["card"]).is_file():
            print(f"== reuse pretrained {arm} on {ds.name}: {done['card']}", flush=True)
            return {**done, "reused": True}
    print(f"== pretrain {arm} on {ds.name} ({epochs} epochs, seed {seed})", flush=True)
    if arm == PEER:
        if ds.kind != "cls":
            raise SystemExit(f"the lightly peer is defined for the MedMNIST classification datasets, not {ds.name}")
        from lightly_peer import pretrain_lightly_simclr

        done = pretrain_lightly_simclr(data_path, _cls_architecture(ds), run_dir, epochs=epochs,
                                       batch_size=8 if quick else ds.batch_size,
                                       views_3d=_peer_views(ds, overrides),
                                       max_steps=2 if quick else None, seed=seed)
    else:
        done = pretrain_medssl(arm, ds, data_path, run_dir, tmp, epochs, quick, overrides, seed)
    done.update(requested_epochs=epochs, quick=quick, overrides=overrides, seed=seed, config_sha256=configs)
    atomic_write_json(summary_path, done)
    return done


# ----------------------------------------------------------------------------------------------------- evaluation
def evaluate_cls(arm: str, ds: Dataset, data_path: Path, card: str | None, seeds: list[int],
                 fractions: list[float], work: Path, quick: bool, arm_overrides: dict[str, Any],
                 reuse: bool = False, label: str | None = None, per_class: list[int] = ()) -> dict[str, Any]:
    """The few-label classification protocol for one arm on the ``fractions`` and ``per_class`` budgets; returns
    the protocol's result JSON (folder ``work/eval_<label>``, label = the arm by default)."""
    from medssl.finetune.protocol import ProtocolConfig, run_protocol

    overrides: dict[str, Any] = {"path": str(data_path), "seeds": seeds, "fractions": fractions,
                                 "per_class": list(per_class), "plot": False, "dataset": ds.name}
    if arm == "scratch":
        overrides.update(methods=["scratch"], encoder=None, architecture=_cls_architecture(ds))
    else:
        overrides.update(methods=list(CLS_EVALS), encoder=card)
    if arm == "mae":
        overrides["layer_decay"] = 0.75
    if quick:
        overrides.update(epochs=1, min_steps=2, max_eval=64, batch_size=16)
    overrides.update(arm_overrides)
    cfg = ProtocolConfig.from_yaml(FINETUNE / ds.protocol, **overrides)
    out = work / f"eval_{label or arm}"
    return _run_or_reuse(out / f"label_efficiency_{data_path.stem}.json", cfg, card, reuse,
                         lambda: run_protocol(cfg, out, progress=False))


def evaluate_seg(arm: str, ds: Dataset, data_path: Path, card: str, seeds: list[int], counts: list[int],
                 work: Path, quick: bool, arm_overrides: dict[str, Any], reuse: bool = False,
                 label: str | None = None) -> dict[str, Any]:
    """The few-label segmentation protocol for one arm (``scratch`` takes only the architecture of ``card``);
    folder ``work/eval_<label>``, label = the arm by default."""
    from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol

    overrides: dict[str, Any] = {"root": str(data_path), "seeds": seeds, "counts": counts, "plot": False,
                                 "encoder": card, "methods": ["scratch" if arm == "scratch" else "finetune"],
                                 "split_file": str(FINETUNE / "hippocampus_split.json")}
    if quick:
        overrides.update(epochs=1, min_steps=2)
    overrides.update(arm_overrides)
    cfg = SegProtocolConfig.from_yaml(FINETUNE / ds.protocol, **overrides)
    out = work / f"eval_{label or arm}"
    return _run_or_reuse(out / f"label_efficiency_{cfg.name}.json", cfg, card, reuse,
                         lambda: run_seg_protocol(cfg, out, progress=False))


def _run_or_reuse(path: Path, cfg: Any, card: str | None, reuse: bool, run: Any) -> dict[str, Any]:
    """The protocol result at ``path``: taken as it is when ``reuse`` and it is finished (:func:`_finished`), else
    written by ``run()``."""
    done = _finished(path, cfg, card) if reuse else None
    if done is None:
        run()
    return done or json.loads(path.read_text())


def _finished(path: Path, cfg: Any, card: str | None) -> dict[str, Any] | None:
    """The protocol result at ``path`` when it is complete and was run with exactly ``cfg`` and the same encoder
    weights as ``card`` now has (``--reuse``: an interrupted or extended benchmark does not evaluate it again)."""
    from dataclasses import asdict

    from medssl.models.hub import read_card

    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    # a field added since, left at its default, is the same config
    then = json.loads(json.dumps({**_defaults(type(cfg)), **(done.get("config") or {})}))
    same_config = then == json.loads(json.dumps(asdict(cfg)))
    sha = read_card(card)[0]["weights"]["sha256"] if card else None
    same_weights = (done.get("encoder") or {}).get("sha256") == sha
    if done.get("complete") and same_config and same_weights:
        print(f"   reuse evaluation {path}", flush=True)
        return done
    return None


def _defaults(cls: type) -> dict[str, Any]:
    """The default of every field of dataclass ``cls`` that has one."""
    from dataclasses import MISSING, fields

    return {f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}


def arm_records(arm: str, result: dict[str, Any], pretrain: dict[str, Any] | None,
                pretrain_seed: int | None = None) -> list[dict[str, Any]]:
    """The protocol's records relabelled ``<arm> <evaluation>`` with each run's wall seconds and the arm's
    pretraining seed (None for scratch) attached."""
    walls = {(r["method"], *_budget(r), r["seed"]): r.get("wall_s") for r in result["runs"]}
    out = []
    for r in result["records"]:
        evaluation = r["method"]
        label = "scratch" if arm == "scratch" else f"{arm} {evaluation}"
        out.append({**r, "arm": arm, "evaluation": evaluation, "method": label,
                    "wall_s": walls.get((evaluation, *_budget(r), r["seed"])),
                    "pretrain_wall_s": None if pretrain is None else pretrain["wall_s"],
                    "pretrain_seed": None if arm == "scratch" else pretrain_seed})
    return out


# ------------------------------------------------------------------------------------------------------ reporting
def _budget(r: dict[str, Any]) -> tuple[float | None, int | None, int | None]:
    """``(fraction, count, per_class)`` of a record, run or summary row (``per_class`` None where absent: records
    written before per-class budgets)."""
    return r.get("fraction"), r.get("count"), r.get("per_class")


def _summary(records: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """:func:`~medssl.eval.label_efficiency.summarise` of ``metric`` (rows carry ``per_class``)."""
    from medssl.eval.label_efficiency import summarise

    return summarise([r for r in records if r["metric"] == metric])


def seed_warning(per_class: list[int], seeds: list[int], counts: list[int] | None = None) -> str | None:
    """The warning for per-class budgets of at most ``FEW_PER_CLASS`` images, or segmentation budgets of at most
    ``FEW_CASES`` cases, run with fewer than ``MIN_SEEDS_FEW`` seeds (None when there is nothing to warn about)."""
    few = sorted(k for k in per_class if k <= FEW_PER_CLASS)
    few_cases = sorted(c for c in counts or [] if c <= FEW_CASES)
    if not (few or few_cases) or len(set(seeds)) >= MIN_SEEDS_FEW:
        return None
    what = (f"per-class budget(s) {few} (<= {FEW_PER_CLASS} labelled images per class)" if few else
            f"labelled-case budget(s) {few_cases} (<= {FEW_CASES} cases)")
    return (f"warning: {what} with {len(set(seeds))} seed(s) {sorted(set(seeds))}: use >= {MIN_SEEDS_FEW} seeds "
            "(--seeds); with so few labels the subset drawn moves the result a lot")


def markdown(report: dict[str, Any]) -> str:
    """Mean ± std per arm x evaluation x budget, the ratio to the peer, wall times and the settings."""
    from medssl.eval.label_efficiency import budget_label, paired_table

    ds, metric = report["dataset"], report["metric"]
    unit = "cases" if report["kind"] == "seg" else "items"
    rows = _summary(report["records"], metric)  # mean ± sample std over seeds
    runs: dict[tuple, list[dict[str, Any]]] = {}  # the records behind each row: arm, wall seconds
    for r in report["records"]:
        if r["metric"] == metric:
            runs.setdefault((*_budget(r), r["method"]), []).append(r)
    peer_mean = {_budget(r): r["mean"] for r in rows if r["method"] == f"{PEER} finetune"}
    scratch_mean = {_budget(r): r["mean"] for r in rows if r["method"] == "scratch"}
    m, st = report["machine"], report["settings"]
    machine_line = (f"Machine: {m['cpu']} ({m.get('cores_usable', m['cores'])} cores usable), torch "
                    f"{m['versions'].get('torch')}, lightly {m['versions'].get('lightly')}, {m['date']}; load average "
                    f"start {m['loadavg_start']}, end {m.get('loadavg_end')}.")
    pseeds = st.get("pretrain_seeds", [0])
    pooled = (f"seeds {st['seeds']}" if len(pseeds) == 1 else
              f"every (pretraining seed, fine-tuning seed) pair of {pseeds} x {st['seeds']} (scratch: fine-tuning "
              "seeds only)")
    budget_line = (f"Pretraining budget: {st['epochs']} epoch(s) per arm at batch size {st['batch_size']} on the "
                   f"unlabeled train split, pretraining seed{'s' if len(pseeds) > 1 else ''} "
                   f"{', '.join(map(str, pseeds))}. Test-split {metric}, mean ± sample std over {pooled}; "
                   f"ratio = mean / mean of `{PEER} finetune` (the peer) or of `scratch` at the same budget.")
    if report.get("parts"):  # a merged report: each part's own machine, budget and command
        machine_line = f"Merged from {len(report['parts'])} runs of this harness on the same data:"
        budget_line = "\n".join(
            f"{i + 1}. `{p['command']}` ({p['machine']['date']}, load {p['machine']['loadavg_start']}): "
            f"{p['settings']['epochs']} pretraining epoch(s), pretraining seed(s) "
            f"{', '.join(map(str, p['settings'].get('pretrain_seeds', [0])))}, fine-tuning seeds "
            f"{p['settings']['seeds']}; arms {', '.join(p['settings']['arms'])}."
            for i, p in enumerate(report["parts"])) + (
            f"\n\nTest-split {metric}, mean ± sample std over each budget's runs; ratio = mean / mean of "
            f"`{PEER} finetune` (the peer) or of `scratch` at the same budget.")
    header = (f"| arm / evaluation | labels | n labelled | runs | test {metric} | ratio to peer | ratio to scratch "
              "| eval wall s (mean) | pretrain wall s (mean) |")
    lines = [f"# Label efficiency side by side: {ds}", "", machine_line, "", budget_line, "", header,
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    order = {a: i for i, a in enumerate(st["arms"])}
    # fractions, then counts, then per-class budgets, each ascending; arms in --arms order within a budget
    rows.sort(key=lambda r: (r["per_class"] is not None, r["fraction"] is None, r["fraction"] or 0, r["count"] or 0,
                             r["per_class"] or 0, order.get(runs[(*_budget(r), r["method"])][0]["arm"], 99),
                             r["method"]))
    for row in rows:
        (fraction, count, per_class), mean, std = _budget(row), row["mean"], row["std"]
        rs = runs[(fraction, count, per_class, row["method"])]
        ratio, ratio_scratch = (f"{mean / ref:.3f}" if ref and math.isfinite(ref) and math.isfinite(mean) else "–"
                                for ref in (peer_mean.get(_budget(row)), scratch_mean.get(_budget(row))))
        walls = [r["wall_s"] for r in rs if r.get("wall_s") is not None]
        pre_walls = {r.get("pretrain_seed"): r["pretrain_wall_s"] for r in rs if r.get("pretrain_wall_s") is not None}
        pre = sum(pre_walls.values()) / len(pre_walls) if pre_walls else None  # mean over pretraining seeds
        value = f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"
        wall = f"{sum(walls) / len(walls):.0f}" if walls else "–"
        pre_wall = "–" if pre is None else f"{pre:.0f}"
        labels = budget_label(fraction, count, unit, per_class)
        lines.append(f"| {row['method']} | {labels} | {row['n_labelled']:g} | "
                     f"{row['n_seeds']} | {value} | {ratio} | {ratio_scratch} | {wall} | {pre_wall} |")
    # the claim itself: every arm against scratch on the same label subsets and fine-tuning seeds
    paired = paired_table(report["records"], [metric], unit=unit)
    if paired:
        lines += ["", paired.rstrip()]
    lines += ["", "Pretraining runs:", "", "| arm | epochs | steps | wall s | notes |", "|---|---:|---:|---:|---|"]
    for arm, p in report["pretraining"].items():
        before, after = (p.get(k) for k in ("val_loss_before", "val_loss_after"))
        note = (f"loss {p['loss_first_epoch']:.3f} -> {p['loss_last_epoch']:.3f}" if "loss_first_epoch" in p else
                f"val loss {before:.3f} -> {after:.3f}" if before is not None and after is not None else
                f"val loss {before} -> {after}")
        if p.get("overrides"):
            note += "; settings " + ", ".join(f"`{o}`" for o in p["overrides"])
        lines.append(f"| {arm} | {p['epochs']} | {p['steps']} | {p['wall_s']:.0f} | {note} |")
    if not report.get("parts"):
        lines += ["", f"Command: `{report['command']}`", ""]
    else:
        lines += [""]
    return "\n".join(lines)


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several runs of the harness on one dataset (e.g. the 10% budget with its peer and 3
    pretraining seeds, and a later 10-per-class run with 5 seeds): records concatenated, arms in first-seen order,
    each run's command, settings and machine kept under ``parts`` (the header then describes every part). Refused
    when the datasets, metrics or data differ, or two parts measured the same budget (a record would be counted
    twice)."""
    from medssl.eval.paired import budget_key

    if len(reports) < 2:
        raise ValueError("merge needs at least two result files")
    for r in reports:
        missing = [k for k in ("dataset", "metric", "kind", "records", "settings", "machine", "pretraining") if k not in r]
        if missing:
            raise ValueError(f"cannot merge: a result file lacks {missing} (not a label_efficiency.py result?)")
    first = reports[0]
    for r in reports[1:]:
        for key in ("dataset", "metric", "kind"):
            if r[key] != first[key]:
                raise ValueError(f"cannot merge: {key} {r[key]!r} differs from {first[key]!r}")
        if r["data"].get("sha256") != first["data"].get("sha256"):
            raise ValueError("cannot merge results measured on different data files (sha256 differs)")
    seen: dict[Any, int] = {}
    for i, r in enumerate(reports):
        for budget in {budget_key(x) for x in r["records"]}:
            if budget in seen:
                raise ValueError(f"cannot merge: budget {budget} is in part {seen[budget] + 1} and part {i + 1}")
            seen[budget] = i
    parts = [p for r in reports for p in (r.get("parts") or [{k: r[k] for k in ("command", "settings", "machine")}])]
    arms = list(dict.fromkeys(a for p in parts for a in p["settings"]["arms"]))
    pretraining: dict[str, Any] = {}
    offset = 0  # parts before this report, so "(part k)" counts the flattened parts
    for r in reports:
        for key, value in r["pretraining"].items():
            m = re.fullmatch(r"(.*) \(part (\d+)\)", key)  # from an earlier merge: part k of that report
            base, part = (m[1], offset + int(m[2])) if m else (key, offset + 1)
            name = base if part == 1 else f"{base} (part {part})"
            if name in pretraining:
                raise ValueError(f"cannot merge: two pretraining runs named {name!r}")
            pretraining[name] = value
        offset += len(r.get("parts") or [None])
    return {**first, "settings": {**first["settings"], "arms": arms}, "parts": parts, "pretraining": pretraining,
            "records": [x for r in reports for x in r["records"]],
            "command": " ; ".join(p["command"] for p in parts),
            "complete": all(r.get("complete") for r in reports)}


def write_report(report: dict[str, Any], out: Path, name: str | None = None) -> None:
    """``<name>.{json,md,png}`` in ``out`` (name: ``label_efficiency_<dataset>[_<tag>][_quick]``)."""
    from medssl.storage.atomic import atomic_write_json, atomic_write_text
    from medssl.eval.label_efficiency import label_efficiency_plot

    tag, quick = report["settings"].get("tag"), report["settings"].get("quick")
    name = name or f"label_efficiency_{report['dataset']}" + (f"_{tag}" if tag else "") + ("_quick" if quick else "")
    atomic_write_json(out / f"{name}.json", report)
    atomic_write_text(out / f"{name}.md", markdown(report))
    if any(r["metric"] == report["metric"] for r in report["records"]):
        plot = {"dataset": report["dataset"], "records": report["records"], "data": report["data"]}
        order = ["scratch"] + [f"{a} {e}" for a in report["settings"]["arms"] for e in CLS_EVALS]
        label_efficiency_plot(plot, out / f"{name}.png", report["metric"], order,
                              x="count" if report["kind"] == "seg" else "fraction")


def run_dataset(ds: Dataset, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    data_path = shared_data() / ds.data
    if not data_path.exists():
        raise SystemExit(f"{data_path} not found: set MEDSSL_SHARED_DATA to the shared data folder")
    arms = list(args.arms)
    if ds.kind == "seg" and PEER in arms:
        print(f"note: {PEER} is skipped for {ds.name} (classification datasets only)", flush=True)
        arms.remove(PEER)
    seeds = [0] if args.quick else args.seeds
    if args.fractions is None and args.per_class is None:
        fractions, per_class = list(ds.fractions), list(ds.per_class)
    else:  # classification budgets given on the command line replace the dataset's
        fractions, per_class = list(args.fractions or []), list(args.per_class or [])
    fractions, per_class = fractions[:1 if args.quick else None], per_class[:1 if args.quick else None]
    if ds.kind == "seg" and per_class:
        print(f"note: --per-class is skipped for {ds.name} (classification datasets only)", flush=True)
        per_class = []
    counts = list(args.counts or ds.counts)[:1 if args.quick else None]
    if not args.quick and (warning := seed_warning(per_class, seeds, counts if ds.kind == "seg" else None)):
        print(warning, file=sys.stderr, flush=True)
    epochs = 1 if args.quick else args.epochs
    info = machine()
    info["versions"]["lightly"] = _version("lightly")
    report: dict[str, Any] = {
        "format": "medssl-label-efficiency-benchmark", "format_version": 1, "dataset": ds.name, "kind": ds.kind,
        "metric": METRIC[ds.kind], "machine": info, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": {"arms": arms, "epochs": epochs, "batch_size": 8 if args.quick else ds.batch_size,
                     "seeds": seeds, "pretrain_seeds": list(args.pretrain_seeds),
                     "fractions": fractions if ds.kind == "cls" else None,
                     "per_class": per_class if ds.kind == "cls" else None,
                     "counts": counts if ds.kind == "seg" else None, "quick": args.quick,
                     "threads": torch.get_num_threads(), "finetune_overrides": args.finetune_override,
                     "protocol_overrides": args.protocol_override,
                     "pretrain_overrides": args.pretrain_override,
                     "tag": args.tag},
        "data": {"path": str(data_path)}, "pretraining": {}, "records": [], "complete": False,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pseeds = list(args.pretrain_seeds)
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = [a for a in arms if a != "scratch"]
        cards: dict[tuple[str, int], str] = {}
        for pseed in pseeds:
            for arm in pretrained:
                p = pretrain_arm(arm, ds, data_path, work / ds.name, Path(tmp), epochs, args.quick, args.reuse,
                                 args.pretrain_override, pseed)
                report["pretraining"][_pretrain_key(arm, pseed)] = p
                cards[arm, pseed] = p["card"]
        eval_root = work / ds.name / (f"eval_{args.tag}" if args.tag else "eval")
        for arm in arms:
            extra = {**args.protocol_override_map, **(args.finetune_override_map if arm != "scratch" else {})}
            for pseed in pseeds[:1] if arm == "scratch" else pseeds:
                t0 = time.perf_counter()
                print(f"== evaluate {arm} on {ds.name}" + (f" (pretraining seed {pseed})" if pseed else ""),
                      flush=True)
                label = arm + (f"_ps{pseed}" if pseed else "")
                if ds.kind == "cls":
                    result = evaluate_cls(arm, ds, data_path, cards.get((arm, pseed)), seeds, fractions, eval_root,
                                          args.quick, extra, args.reuse, label, per_class)
                else:
                    if not cards:
                        raise SystemExit("hippocampus needs at least one pretrained arm (its card gives scratch "
                                         "the architecture and preprocessing plan)")
                    card = cards.get((arm, pseed)) or next(iter(cards.values()))
                    result = evaluate_seg(arm, ds, data_path, card, seeds, counts, eval_root, args.quick, extra,
                                          args.reuse, label)
                report["data"].update({k: v for k, v in result["data"].items()
                                       if k.startswith("n_") or k == "sha256"})
                report["records"] += arm_records(arm, result, report["pretraining"].get(_pretrain_key(arm, pseed)),
                                                 pseed)
                print(f"   {arm}: {time.perf_counter() - t0:.0f} s", flush=True)
                info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
                write_report(report, out)
    report["complete"] = True
    write_report(report, out)
    print(markdown(report), flush=True)
    return report


def _pretrain_key(arm: str, seed: int) -> str:
    """The arm's key in the report's ``pretraining`` table: the arm for seed 0, ``<arm> seed <seed>`` otherwise."""
    return arm if seed == 0 else f"{arm} seed {seed}"


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist"], choices=list(DATASETS))
    parser.add_argument("--arms", nargs="+", default=["scratch", PEER, "simclr", "mae"])
    parser.add_argument("--epochs", type=int, default=15, help="pretraining epochs of every arm (equal budget)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrain-seeds", nargs="+", type=int, default=[0],
                        help="pretraining seeds of every pretrained arm; each is evaluated with every --seeds "
                             "fine-tuning seed and the table pools them (scratch has no pretraining seed)")
    parser.add_argument("--fractions", nargs="+", type=float, default=None,
                        help="default: the dataset's (none when only --per-class is given)")
    parser.add_argument("--per-class", nargs="+", type=int, default=None, dest="per_class", metavar="K",
                        help="K labelled images of every class, for every arm (classification); with --fractions "
                             "or alone, replaces the dataset's budgets; <= 10 per class: give >= 5 --seeds")
    parser.add_argument("--counts", nargs="+", type=int, default=None, help="labelled cases (segmentation)")
    parser.add_argument("--protocol-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="protocol fields for every arm, scratch included, e.g. augment=true")
    parser.add_argument("--finetune-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="protocol fields for the pretrained arms' evaluation, e.g. freeze_encoder_epochs=5")
    parser.add_argument("--pretrain-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="pretraining config settings of the medssl arms (not the peer), e.g. "
                             "model.init_args.temperature=0.5; recorded, and pretrained in their own folder")
    parser.add_argument("--tag", default="", help="output name suffix: label_efficiency_<dataset>_<tag>.*")
    parser.add_argument("--reuse", action="store_true",
                        help="take each arm's pretraining from --workdir when it was run with the same --epochs "
                             "and settings, and each evaluation when it completed with the same protocol and weights")
    parser.add_argument("--quick", action="store_true", help="1 epoch x 2 steps, 1 seed, 1 budget (smoke test)")
    parser.add_argument("--workdir", default=str(REPO / "runs" / "bench_label_efficiency"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--render", nargs="+", default=None, metavar="JSON",
                        help="only rewrite the .md and .png of these result files from their records (after a change "
                             "of the report code); runs nothing")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="OUT.json IN1.json IN2.json ...: one report of several runs on one dataset (different "
                             "budgets), written as OUT.{json,md,png}; runs nothing")
    args = parser.parse_args(argv)
    if args.merge:
        if len(args.merge) < 3:
            parser.error("--merge takes OUT.json and at least two result files")
        out_path, *inputs = map(Path, args.merge)
        write_report(merge_reports([json.loads(p.read_text()) for p in inputs]), out_path.parent, name=out_path.stem)
        print(f"merged {len(inputs)} reports into {out_path.with_suffix('.md')}", flush=True)
        return 0
    if args.render:
        for path in map(Path, args.render):
            report = json.loads(path.read_text())
            write_report(report, path.parent, name=path.stem)
            print(f"rendered {path.with_suffix('.md')}", flush=True)
        return 0
    args.finetune_override_map = dict(_parse_override(t) for t in args.finetune_override)
    args.protocol_override_map = dict(_parse_override(t) for t in args.protocol_override)
    for name in args.datasets:
        run_dataset(DATASETS[name], args, Path(args.workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
