"""The ``medssl`` console command. Each subcommand is a thin adapter from arguments to a library call.

Data layer: ``phantoms``, ``index``, ``convert``; training: ``pretrain``; transfer: ``finetune``, ``evaluate``,
``predict``. Exit codes: 0 success, 2 usage error (a bad ``finetune`` config or ``evaluate`` protocol included),
3 data error (a typed
:class:`medssl.errors.MedsslError`; its reason code is printed).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medssl import __version__
from medssl.errors import MedsslError

console = Console(stderr=False, highlight=False)

DATA_ERROR = 3


def _add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tilt", choices=["error", "correct"], default="error",
                   help="gantry-tilted (sheared) stacks: raise (default) or resample to an orthogonal grid")
    p.add_argument("--uneven", choices=["error", "resample"], default="error",
                   help="uneven slice spacing: raise (default) or resample to equal spacing")
    p.add_argument("--fourd", choices=["stack", "split", "error"], default="stack",
                   help="repeated slice positions (time points): 4D volume (default), one file per volume, or raise")


def cmd_phantoms(args: argparse.Namespace) -> int:
    from medssl.data.phantoms import generate_phantoms

    info = generate_phantoms(args.out, n=args.n, seed=args.seed, shape=tuple(args.shape))
    console.print(f"wrote {len(info['cases'])} phantom cases to [bold]{args.out}[/] (DICOM under dicom/, NIfTI under nifti/)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from medssl.data.index import build_index

    result = build_index(Path(args.archive), Path(args.out), workers=args.workers, tilt=args.tilt,
                         uneven=args.uneven, fourd=args.fourd, progress=not args.quiet, reuse=not args.no_reuse,
                         dedup=args.dedup)
    table = Table(title="archive index")  # no path: archive folder names can hold patient names
    table.add_column("files seen", justify="right")
    table.add_column("indexed", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("volumes", justify="right")
    table.add_row(str(result.seen), str(result.indexed), str(result.skipped), str(len(result.series)))
    console.print(table)
    if args.dedup:
        kinds = {k: sum(r["kind"] == k for r in result.duplicates) for k in ("file", "series", "near")}
        console.print(f"duplicates: {kinds['file']} file copies (skipped), {kinds['series']} series with the same "
                      f"pixels, {kinds['near']} near-duplicate volumes (both excluded from datasets); see "
                      "duplicates.csv")
    if result.reason_counts:
        reasons = Table(title="skipped files by reason")
        reasons.add_column("reason")
        reasons.add_column("files", justify="right")
        for reason, count in sorted(result.reason_counts.items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, str(count))
        console.print(reasons)
    console.print(escape(result.summary()))
    console.print(f"wrote {Path(args.out) / 'series.csv'} and {Path(args.out) / 'files.csv'}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from medssl.data.convert import convert_series, is_folder_target
    from medssl.data.deid import load_or_create_salt
    from medssl.data.dicom import find_series

    salt = load_or_create_salt(args.index) if args.index else None
    if args.list:
        stacks = find_series(args.source)
        table = Table(title="stacks in SOURCE (keys are salted hashes)")  # no path: folders can hold patient names
        for col in ("#", "key" if salt else "", "series", "split", "modality", "files", "rows x cols"):
            if col:
                table.add_column(col)
        for i, s in enumerate(stacks, 1):
            row = [str(i)] + ([s.public_key(salt)] if salt else []) + [
                str(s.first.series_number), s.split, s.first.modality, str(len(s.headers)),
                f"{s.first.rows}x{s.first.columns}"]
            table.add_row(*row)
        console.print(table)
        return 0
    if not args.out:
        console.print("[red]convert needs OUT.nii.gz, OUT_DIR/ (or --list)[/]")
        return 2
    if is_folder_target(args.out):
        if args.series is not None:
            console.print("[red]--series converts one stack: give OUT as a .nii or .nii.gz file[/]")
            return 2
        return _convert_folder(args, salt)
    written = convert_series(args.source, args.out, series=args.series, tilt=args.tilt, uneven=args.uneven,
                             fourd=args.fourd, salt=salt)
    for path in written:
        console.print(f"wrote {path}")
    return 0


def _convert_folder(args: argparse.Namespace, salt: str | None) -> int:
    """``medssl convert FOLDER OUT_DIR/``: every stack, one table row each; exit 0 when every image stack was
    written (localizers are skipped by design), DATA_ERROR otherwise."""
    from medssl.data.convert import convert_folder

    result = convert_folder(args.source, args.out, tilt=args.tilt, uneven=args.uneven, fourd=args.fourd, salt=salt)
    table = Table(title=f"stacks converted into {args.out} (names: series number, split, salted key)")
    for col in ("name", "status", "reason"):
        table.add_column(col)
    for o in result.stacks:
        table.add_row(o.name, o.status, o.reason)
    console.print(table)
    if result.skipped_files:
        console.print("files skipped: " + ", ".join(f"{k} {v}" for k, v in result.skipped_files.items()))
    written = sum(o.status == "written" for o in result.stacks)
    failed = [o for o in result.stacks if o.status != "written" and o.reason != "localizer"]
    console.print(f"wrote {written} of {len(result.stacks)} stacks; see {escape(str(result.table))}")
    return DATA_ERROR if failed or not written else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medssl", description="Self-supervised learning on medical images.")
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantoms", help="write synthetic CT-like phantoms as DICOM series and NIfTI (+ labels)")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=4, help="number of cases (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48], metavar=("X", "Y", "Z"))
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("index", help="crawl an archive: de-identified manifest of every file and usable volume")
    p.add_argument("archive", help="folder to crawl")
    p.add_argument("--out", required=True, help="index folder (series.csv, files.csv, index.json, salt.txt)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-reuse", action="store_true", help="re-read every header even if unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dedup", action="store_true",
                   help="find duplicate files (sha256), duplicate series (same decoded pixels) and near-duplicate "
                        "volumes (perceptual hash; decodes every series): duplicates.csv, excluded from datasets")
    _add_policy(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("convert", help="convert DICOM to NIfTI: one stack to OUT.nii.gz, or every stack to OUT_DIR/")
    p.add_argument("source", help="DICOM folder or file")
    p.add_argument("out", nargs="?", help="output .nii or .nii.gz (one stack), or a folder (OUT_DIR/: every stack, "
                   "named <series number>[_<split>]_<salted key>.nii.gz, with conversion.csv)")
    p.add_argument("--series", help="stack to convert when the folder holds several: number from --list or key")
    p.add_argument("--list", action="store_true", help="list the stacks in SOURCE and exit")
    p.add_argument("--index", help="index folder whose salt is used for series keys (as in series.csv)")
    _add_policy(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("evaluate", help="few-label protocol: linear probe / kNN / fine-tune / scratch over label "
                                         "fractions and seeds (YAML under configs/finetune/); or `evaluate report "
                                         "RESULTS_DIR`: markdown/HTML report of benchmark result files")
    p.add_argument("action", nargs="?", choices=["report"], help="report: build RESULTS_DIR/report (or --out)")
    p.add_argument("results_dir", nargs="?", help="with `report`: folder of result *.json files")
    p.add_argument("--protocol", help="protocol YAML (fields of medssl.finetune.protocol.ProtocolConfig or, with "
                                      "task: segmentation, medssl.finetune.seg_protocol.SegProtocolConfig)")
    p.add_argument("--encoder", help="exported encoder card (encoder.json or its folder); overrides the YAML")
    p.add_argument("--out", help="output folder (default: runs/<protocol file name>)")
    p.add_argument("--path", help="MedMNIST-format .npz; overrides the YAML")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--fractions", type=float, nargs="+", help="override the label fractions")
    p.add_argument("--counts", type=int, nargs="+", help="override the label counts")
    p.add_argument("--per-class", type=int, nargs="+", dest="per_class", metavar="K",
                   help="override the per-class budgets: K labelled images of every class (classification)")
    p.add_argument("--methods", nargs="+", help="override the methods (linear_probe knn finetune scratch)")
    p.add_argument("--epochs", type=int, help="override the fine-tuning epochs")
    p.add_argument("--max-eval", type=int, dest="max_eval", help="cap validation and test items (stratified)")
    p.add_argument("--workers", type=int, help="segmentation: runs trained at once, one process and one thread each "
                                               "(same records as one at a time)")
    p.add_argument("--no-plot", action="store_true", help="skip the label-efficiency PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("quickstart", help="the main job on generated phantoms (no download): DICOM archive -> index "
                                           "-> 3D pretraining -> few-label fine-tune vs scratch -> OUT/report.md")
    p.add_argument("--out", required=True, help="output folder (data, index, runs, figures, metrics.json, report.md)")
    p.add_argument("--quick", action="store_true", help="smallest settings that exercise every stage (tests)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("finetune", help="one fine-tuning run (segmentation or classification) from a YAML config "
                                         "under configs/finetune/: best checkpoint for `medssl predict`, test metrics")
    p.add_argument("--config", required=True, help="run YAML (fields of medssl.finetune.run_config.FinetuneConfig)")
    p.add_argument("--encoder", help="exported encoder card (encoder.json or its folder); overrides the YAML")
    p.add_argument("--run_dir", "--run-dir", dest="run_dir",
                   help="output folder (default: runs/<config file name>); must not hold a run already")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="run a fine-tuned segmenter (label maps on the input grid + volumes.csv) or "
                                        "classifier (probabilities.csv) on NIfTI / DICOM / MedMNIST .npz input")
    p.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint (.ckpt)")
    p.add_argument("input", help="NIfTI file or folder, DICOM series folder or archive, or MedMNIST .npz")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--split", choices=["train", "val", "test"], help="split of an .npz input (default test)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tilt", choices=["error", "correct"], default="error", help="DICOM gantry tilt (as for index)")
    p.add_argument("--uneven", choices=["error", "resample"], default="error",
                   help="DICOM uneven slice spacing (as for index)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pretrain", add_help=False,
                       help="self-supervised pretraining from a YAML config (LightningCLI; see --help)")
    p.add_argument("cli_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_pretrain)
    return parser


def _report(args: argparse.Namespace) -> int:
    from medssl.eval.report import build_report

    if not args.results_dir or not Path(args.results_dir).is_dir():
        console.print(f"[red]error[/] results folder not found: {escape(str(args.results_dir))}")
        return 2
    path = build_report(args.results_dir, args.out)
    console.print(f"wrote {escape(str(path))}" + (" and report.html" if path.with_suffix(".html").is_file() else ""))
    return 0


def _protocol_task(file: str) -> str:
    """``task`` of a protocol YAML (classification when absent or unreadable: its loader then reports why)."""
    import yaml

    try:
        data = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        return "classification"
    return str(data.get("task", "classification")) if isinstance(data, dict) else "classification"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load the protocol YAML (+ overrides), run it, print the report table; or build a results report."""
    if args.action == "report":
        return _report(args)
    if not args.protocol:
        console.print("[red]error[/] give --protocol FILE (or: medssl evaluate report RESULTS_DIR)")
        return 2
    from medssl.finetune.protocol import ProtocolConfig, ProtocolConfigError, run_protocol

    budgets = ("fractions", "counts", "per_class")
    overrides = {k: getattr(args, k) for k in ("encoder", "path", "seeds", *budgets, "methods", "epochs", "max_eval")}
    if args.no_plot:
        overrides["plot"] = False
    if any(overrides[k] is not None for k in budgets):  # budgets given on the command line replace those of the file
        overrides.update({k: [] for k in budgets if overrides[k] is None})
    try:
        if _protocol_task(args.protocol) == "segmentation":
            from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol

            seg_overrides = {k: v for k, v in overrides.items() if k in ("encoder", "seeds", "counts", "methods",
                                                                             "epochs", "plot")}
            seg_overrides["workers"] = args.workers
            if args.path or args.fractions or args.per_class or args.max_eval:
                raise ProtocolConfigError("--path/--fractions/--per-class/--max-eval",
                                          "apply to classification protocols only")
            cfg = SegProtocolConfig.from_yaml(args.protocol, **seg_overrides)
            run, stem = run_seg_protocol, cfg.name
        else:
            if args.workers is not None:
                raise ProtocolConfigError("--workers", "applies to segmentation protocols only")
            cfg = ProtocolConfig.from_yaml(args.protocol, **overrides)
            run, stem = run_protocol, Path(cfg.path).stem
    except ProtocolConfigError as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return 2
    out = Path(args.out) if args.out else Path("runs") / Path(args.protocol).stem
    records = run(cfg, out, progress=not args.quiet)
    console.print((out / f"label_efficiency_{stem}.md").read_text(), markup=False, soft_wrap=True)
    console.print(f"{len(records)} records; wrote {escape(str(out / f'label_efficiency_{stem}.json'))} and .md"
                  + ("" if not cfg.plot else " and .png"))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Load the run YAML (+ ``--encoder``), train, print the test metrics and where the checkpoint is."""
    from medssl.finetune.protocol import ProtocolConfigError
    from medssl.finetune.run import run_finetune
    from medssl.finetune.run_config import FinetuneConfig

    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    try:
        cfg = FinetuneConfig.from_yaml(args.config, encoder=args.encoder)
        result = run_finetune(cfg, run_dir, progress=not args.quiet)
    except ProtocolConfigError as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return 2
    m = result["metrics"]
    table = Table(title=f"{result['name']}: {result['task']} ({result['init']})")
    table.add_column("metric")
    table.add_column("test split", justify="right")
    rows = ({"dice (mean)": m["mean_dice"], **{f"dice {k}": v for k, v in m["dice"].items()},
             "hd95 mm (mean)": m["mean_hd95"]} if result["task"] == "segmentation" else m)
    for name, value in rows.items():
        table.add_row(escape(name), _fmt(value))
    console.print(table)
    console.print(f"best epoch {result['best_epoch'] + 1} of {result['epochs_trained']} (by validation); "
                  f"{result['wall_s']} s")
    ckpt = run_dir / result["checkpoint"]
    console.print(f"wrote {escape(str(ckpt))}, config.yaml, metrics.json, metrics.csv in {escape(str(run_dir))}; "
                  f"predict with: medssl predict --checkpoint {escape(str(ckpt))} INPUT OUT")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict with a fine-tuned checkpoint; print counts, skipped inputs by reason, and what was written."""
    from collections import Counter

    from medssl.finetune.predict import run_predict

    if args.split and not args.input.lower().endswith(".npz"):
        console.print("[red]error[/] --split applies to a MedMNIST .npz input only")
        return 2
    summary = run_predict(args.checkpoint, args.input, args.out_dir, split=args.split, progress=not args.quiet,
                          tilt=args.tilt, uneven=args.uneven)
    counts = summary["counts"]
    console.print(f"{summary['task']}: {counts['written']} of {counts['cases']} case(s) predicted, "
                  f"{counts['skipped']} input(s) skipped")
    for reason, n in Counter(s["reason"] for s in summary["skipped"]).most_common():
        console.print(f"  skipped {n} x {reason}")
    table = "volumes.csv" if summary["task"] == "segmentation" else "probabilities.csv"
    console.print(f"wrote {escape(str(Path(args.out_dir) / table))} and predict.json")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Run the quickstart and print where its report is."""
    from medssl.quickstart import run_quickstart

    result = run_quickstart(args.out, quick=args.quick, progress=not args.quiet)
    console.print(f"report: {escape(str(Path(args.out) / 'report.md'))}; metrics: "
                  f"{escape(str(Path(args.out) / 'metrics.json'))} ({result['wall_s']['total']:.0f} s)")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Hand everything after ``pretrain`` to the LightningCLI (``--config``, ``--trainer.*``, ``--model.*`` ...)."""
    from medssl.training.cli import main as pretrain_main

    summary = pretrain_main(args.cli_args)
    console.print(f"pretraining done: {summary['global_step']} steps in {summary['wall_s']} s; val loss "
                  f"{_fmt(summary['val_loss_before'])} -> {_fmt(summary['val_loss_after'])}; encoder card "
                  f"{escape(str(Path(summary['run_dir']) / summary['encoder_card']))}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pretrain"]:  # argparse would swallow --help/--config meant for the LightningCLI
        args = argparse.Namespace(func=cmd_pretrain, cli_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedsslError as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return DATA_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
