"""``run_quickstart``: the main job end to end on synthetic phantoms, with a progress bar over the stages.

Output folder::

    data/archive/          phantom CT archive: dicom/<case>/*.dcm (+ nifti/ copies, phantoms.json)
    data/study/            labelled study: nifti/imagesTr, nifti/labelsTr, dataset.json (+ its DICOM)
    index/                 crawler manifests of data/archive (files.csv, series.csv, index.json ...)
    cache/                 preprocessing cache (content-hashed; reused by a re-run)
    pretrain/              pretraining run: config.yaml, metrics.csv, checkpoints/, encoder.json + .safetensors
    finetune/              the segmentation protocol: split.json, label_efficiency_phantoms.{json,md,png} (paired
                           gains), runs/<method>_n<labelled>_seed<N>/ (checkpoints/best.ckpt, metrics.csv) for the
                           pretrained arm's method and scratch
    figures/*.png          pretraining curves, test-case segmentation overlays
    metrics.json           settings, data, index accounting, pretraining summary, both arms' test metrics, seconds
    report.md              the same as a readable report with the figures

A re-run into the same folder starts the training stages afresh (their folders are replaced); a non-empty folder
that is not a quick-start output is refused.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from medssl.storage.atomic import atomic_write_json
from medssl.quickstart.comparison import ARMS, finetune_vs_scratch
from medssl.quickstart.report import write_figures, write_report
from medssl.quickstart.settings import CONFIG_DIR, FULL, QUICK, QuickstartSettings
from medssl.quickstart.stages import (
    QuickstartError,
    index_archive,
    make_data,
    pretrain,
    set_threads,
)

__all__ = ["run_quickstart"]

FORMAT = "medssl-quickstart"
#: what a quick-start output folder holds; anything else in a non-empty folder makes run_quickstart refuse it
OWNED = {"data", "index", "cache", "pretrain", "finetune", "figures", "metrics.json", "report.md"}
STAGES = ("data", "index", "pretrain", "finetune", "report")


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise QuickstartError("the output path exists and is not a folder", [out])
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWNED) if out.is_dir() else []
    if foreign:
        raise QuickstartError(f"the output folder holds files that are not quick-start outputs ({foreign[:5]}); "
                              "choose an empty or new folder", [out])
    for name in ("pretrain", "finetune", "figures"):  # runs start fresh; data, index and cache are reused
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.json", "report.md"):  # never leave an older run's results beside a failed re-run
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def run_quickstart(out_dir: str | Path, *, quick: bool = False, progress: bool = True,
                   settings: QuickstartSettings | None = None) -> dict[str, Any]:
    """Phantoms -> crawler -> pretraining -> few-label fine-tuning versus scratch -> ``metrics.json`` + ``report.md``.

    Args:
        out_dir: output folder (layout in the module docstring); created, or a previous quick-start output.
        quick: the smallest settings that still run every stage (:data:`~medssl.quickstart.settings.QUICK`, for
            tests) instead of the main job (:data:`~medssl.quickstart.settings.FULL`).
        progress: a progress bar over the stages (and the trainers' own bars).
        settings: explicit settings (overrides ``quick``).

    Returns:
        The metrics record written to ``metrics.json``.
    """
    from tqdm.auto import tqdm

    from medssl import __version__

    s = settings or (QUICK if quick else FULL)
    recipe = CONFIG_DIR / s.pretrain_config
    if not recipe.is_file():
        raise QuickstartError(f"pretraining recipe {s.pretrain_config!r} not found: the quick start reads "
                              "configs/quickstart/ of the source checkout (install with pip install -e .)", [recipe])
    out = Path(out_dir).resolve()
    _prepare(out)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    bar = tqdm(total=len(STAGES), desc="quickstart", unit="stage", disable=not progress)
    threads = set_threads(s.threads)

    def stage(name: str, detail: str = "") -> float:
        bar.set_description_str(f"quickstart: {name}")
        bar.set_postfix_str(detail)
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 2)
        bar.update()

    try:
        t0 = stage("data", f"{s.archive_cases} + {s.study_cases} phantoms")
        data = make_data(out / "data", s)
        done("data", t0)
        t0 = stage("index", "crawling the archive")
        index = index_archive(out / "data" / "archive", out / "index", seed=s.seed, progress=False)
        done("index", t0)
        t0 = stage("pretrain", s.pretrain_config)
        pre = pretrain(out / "pretrain", out / "index", out / "data" / "archive", out / "cache", s,
                       progress=progress)
        done("pretrain", t0)
        t0 = stage("finetune", f"{s.n_labelled} labelled cases")
        ft, overlays = finetune_vs_scratch(out / "pretrain" / "encoder.json", out / "data" / "study",
                                           out / "finetune", out / "cache", s, progress=progress)
        done("finetune", t0)
        seconds.update({f"finetune_{arm}": ft["arms"][arm]["summary"]["wall_s"] for arm in ARMS})
        t0 = stage("report")
        metrics: dict[str, Any] = {
            "format": FORMAT, "format_version": 1, "medssl_version": __version__, "quick": settings is None and quick,
            "settings": s.to_dict(), "data": data, "index": index, "pretraining": pre, "finetune": ft,
        }
        metrics["figures"] = write_figures(out, overlays, ft["label_names"], ARMS)
        seconds["report"] = round(time.perf_counter() - t0, 2)
        seconds["total"] = round(time.perf_counter() - t_all, 2)
        metrics["wall_s"] = seconds
        write_report(out, metrics)
        atomic_write_json(out / "metrics.json", metrics)
        bar.update()
    finally:
        bar.close()
        set_threads(threads)
    return metrics
