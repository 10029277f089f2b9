#!/usr/bin/env python
"""Self-supervised pretraining on real MedMNIST (CPU): does each method beat a randomly initialised encoder?

For every method (SimCLR, MoCo v3, BYOL, SimSiam, DINO) and dataset (PneumoniaMNIST 2D, AdrenalMNIST3D 3D) this
runs ``medssl pretrain`` with ``configs/pretrain/medmnist/<method>.yaml`` + ``<dataset>_cpu.yaml`` and reads the
online probe (frozen encoder features -> weighted kNN and logistic regression on labelled images,
:class:`medssl.training.online_probe.OnlineProbe`). The probe runs before training on the freshly initialised
encoder -- the random-initialisation reference of the *same* architecture and seed -- and after every epoch.
Writes ``<out>/ssl_medmnist.json`` and ``.md``.

Usage::

    python benchmarks/ssl_medmnist.py                                   # all methods x both datasets (~1 h, 2 cores)
    python benchmarks/ssl_medmnist.py --methods simclr dino --datasets pneumonia2d
    python benchmarks/ssl_medmnist.py --quick                           # 2 steps per run (smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the machine description and writer every benchmark shares
from ingest import code_line, code_state, machine, write_results

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "pretrain" / "medmnist"
JOINT_EMBEDDING = ("simclr", "moco", "byol", "simsiam", "dino")
#: pretext, restoration, predictive-coding and clustering methods (issue 6); methods that read the plain image
#: (no views) are run with ``--data.views=null``
PRETEXT = ("rotation", "jigsaw", "genesis", "autoencoder", "cpc", "swav")
NO_VIEWS = ("rotation", "jigsaw", "genesis", "autoencoder", "cpc")
METHODS = JOINT_EMBEDDING + PRETEXT
DATASETS = {"pneumonia2d": ("pneumoniamnist.npz", 2), "adrenal3d": ("adrenalmnist3d.npz", 3)}
#: DINO's multi-crop: local views at half the global size
EXTRA = {("dino", 2): ["--data.views.init_args.num_local=4", "--data.views.init_args.local_size=[14, 14]"],
         ("dino", 3): ["--data.views.init_args.num_local=2", "--data.views.init_args.local_size=[14, 14, 14]"],
         ("swav", 2): ["--data.views.init_args.num_local=4", "--data.views.init_args.local_size=[14, 14]"],
         ("swav", 3): ["--data.views.init_args.num_local=2", "--data.views.init_args.local_size=[14, 14, 14]"]}
METRICS = ("knn_acc", "knn_balanced_acc", "linear_acc", "linear_balanced_acc", "linear_auroc")


def shared_data() -> Path:
    return Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def paths_overlay(dataset: str, tmp: Path, quick: bool) -> Path:
    """Config overlay pointing the data source and the probe at the shared data folder (absolute paths)."""
    import yaml

    path = str(shared_data() / "medmnist" / DATASETS[dataset][0])
    base = yaml.safe_load((CONFIGS / f"{dataset}_cpu.yaml").read_text())
    callbacks = base["trainer"]["callbacks"]
    for cb in callbacks:
        cb["init_args"]["path"] = path
        if quick:
            cb["init_args"].update(max_train=64, max_eval=32)
    overlay = {"trainer": {"callbacks": callbacks}, "data": {"source": {"init_args": {"path": path}}}}
    out = tmp / f"paths_{dataset}.yaml"
    out.write_text(yaml.safe_dump(overlay))
    return out


def run_one(method: str, dataset: str, runs_dir: Path, tmp: Path, quick: bool, epochs: int | None,
            limit_train_batches: int | None = None) -> dict:
    from medssl.training.cli import PretrainCLI

    dims = DATASETS[dataset][1]
    run_dir = runs_dir / f"{method}_{dataset}"
    args = ["--config", str(CONFIGS / f"{method}.yaml"), "--config", str(CONFIGS / f"{dataset}_cpu.yaml"),
            "--config", str(paths_overlay(dataset, tmp, quick)), "--run_dir", str(run_dir),
            *EXTRA.get((method, dims), []), *(["--data.views=null"] if method in NO_VIEWS else [])]
    if quick:
        args += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                 "--data.batch_size=8", "--trainer.enable_progress_bar=false"]
    else:
        args += [f"--trainer.max_epochs={epochs}"] if epochs else []
        args += [f"--trainer.limit_train_batches={limit_train_batches}"] if limit_train_batches else []
    summary = PretrainCLI(args=args).summary
    before, after = summary.get("probe_before") or {}, summary.get("probe_after") or {}
    return {"method": method, "dataset": dataset, "spatial_dims": dims, "run_dir": str(run_dir),
            "epochs": summary["epochs_completed"], "steps": summary["global_step"], "wall_s": summary["wall_s"],
            "val_loss_before": summary["val_loss_before"], "val_loss_after": summary["val_loss_after"],
            "collapse_warnings": len(summary.get("collapse_warnings", [])),
            "before": {k: before.get(k) for k in METRICS}, "after": {k: after.get(k) for k in METRICS}}


def _pair(before: dict, after: dict, key: str) -> str:
    """``before -> after (change)`` for one probe metric, or ``n/a`` where either run lacks it."""
    b, a = before.get(key), after.get(key)
    return "n/a" if b is None or a is None else f"{b:.3f} -> {a:.3f} ({a - b:+.3f})"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Self-supervised pretraining on MedMNIST (CPU): probe accuracy vs a random encoder", "",
             (f"Machine: {m['cpu']} ({m['cores_usable']} usable cores), torch {m['versions'].get('torch')}, "
              f"{m['date']}; load average start {m['loadavg_start']}, end {m.get('loadavg_end')}. "
              "Before = the same encoder at initialisation (seeded), after = at the end of pretraining; probes on "
              "frozen, globally pooled encoder features (weighted cosine kNN, k=20; logistic regression on "
              "standardised features)."), "",
             ("| method | dataset | epochs | steps | wall s | kNN acc before -> after | kNN bal. acc | linear acc | "
              "linear bal. acc | linear AUROC | collapse warnings |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        def pair(key: str, r: dict = r) -> str:
            return _pair(r["before"], r["after"], key)

        lines.append(f"| {r['method']} | {r['dataset']} | {r['epochs']} | {r['steps']} | {r['wall_s']:.0f} | "
                     f"{pair('knn_acc')} | {pair('knn_balanced_acc')} | {pair('linear_acc')} | "
                     f"{pair('linear_balanced_acc')} | {pair('linear_auroc')} | {r['collapse_warnings']} |")
    lines += ["", *[f"- {n}" for n in report["notes"]], "", code_line(report), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(JOINT_EMBEDDING), choices=METHODS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--epochs", type=int, default=None, help="override the overlays' max_epochs")
    parser.add_argument("--limit-train-batches", type=int, default=None, help="training batches per epoch")
    parser.add_argument("--quick", action="store_true", help="2 steps per run on 8-item batches (smoke test)")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "bench_ssl_medmnist"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default=None, help="output file stem (default ssl_medmnist, or ssl_medmnist_quick)")
    args = parser.parse_args(argv)

    info = machine()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            for method in args.methods:
                print(f"== {method} on {dataset}", flush=True)
                runs.append(run_one(method, dataset, Path(args.runs_dir), Path(tmp), args.quick, args.epochs,
                                    args.limit_train_batches))
                print(json.dumps(runs[-1]), flush=True)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "benchmark": "ssl_medmnist", "machine": info, "code": code_state(),
        "settings": {"quick": args.quick, "epochs_override": args.epochs,
                     "limit_train_batches": args.limit_train_batches,
                     "configs": "configs/pretrain/medmnist/<method>.yaml + <dataset>_cpu.yaml"},
        "runs": runs,
        "notes": [("Short CPU runs (a few epochs): they show whether a method learns on real medical images at "
                   "all, not its converged quality; GPU recipes are configs/pretrain/*3d.yaml."),
                  ("PneumoniaMNIST probe: 1000 labelled train images -> 500 val images; AdrenalMNIST3D probe: all "
                   "1188 train volumes -> the 298 test volumes (its val split has 98)."),
                  ("The probe re-estimates the encoder's BatchNorm statistics on its training images before "
                   "extracting features (PreciseBN, medssl.eval.precise_bn), for the random-initialisation reference "
                   "and after training alike; results written before 2026-11-30 (ssl_medmnist.md) used the running "
                   "statistics."),
                  ("Wall seconds are of one run on a shared machine (other jobs ran at the same time; see the load "
                   "average): compare them within a table only roughly.")],
    }
    name = args.name or ("ssl_medmnist_quick" if args.quick else "ssl_medmnist")
    print(write_results(Path(args.out), name, report, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
