"""The quick-start stages, each a thin call into the library: phantoms, crawl, pretrain, fine-tune versus scratch.

* :func:`make_data`: an unlabelled phantom CT archive (DICOM + NIfTI copies) and a separate labelled study
  (:func:`medssl.data.phantoms.generate_phantoms`, other seeds: its cases never reach pretraining);
* :func:`index_archive`: the crawler over the whole archive folder (:func:`medssl.data.index.build_index`), so the
  accounting shows DICOM files indexed and the NIfTI / JSON files beside them skipped with their reason code;
* :func:`pretrain`: the pretraining engine (:mod:`medssl.training.cli`) on a ``configs/quickstart`` recipe reading
  the indexed archive; it exports the encoder card;
* fine-tuning versus scratch is :mod:`medssl.quickstart.comparison`.

Each returns a JSON-ready record without patient data (counts, codes, metrics, paths inside the output folder).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from medssl.errors import MedsslError, Reason
from medssl.finetune.trainer import quiet_lightning
from medssl.quickstart.settings import CONFIG_DIR, QuickstartSettings

__all__ = ["QuickstartError", "index_archive", "make_data", "pretrain", "set_threads"]

#: the labelled study's phantoms use this seed offset, so none of them is an archive phantom
STUDY_SEED_OFFSET = 1


class QuickstartError(MedsslError):
    """A quick-start stage produced nothing usable (e.g. the crawler accepted no series)."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_CONFIG, message, files)


def make_data(root: Path, s: QuickstartSettings) -> dict[str, Any]:
    """Write ``root/archive`` (pretraining) and ``root/study`` (labelled); return their descriptions (no paths)."""
    from medssl.data.phantoms import generate_phantoms

    archive = generate_phantoms(root / "archive", n=s.archive_cases, seed=s.seed, shape=s.shape)
    study = generate_phantoms(root / "study", n=s.study_cases, seed=s.seed + STUDY_SEED_OFFSET, shape=s.shape)

    def describe(d: dict[str, Any]) -> dict[str, Any]:
        cases = d["cases"]
        return {"cases": len(cases), "shape": list(s.shape), "seed": d["seed"],
                "spacings_mm": sorted({tuple(c["spacing"]) for c in cases}),
                "oblique": sum(bool(c["oblique_deg"]) for c in cases),
                "flipped_slices": sum(bool(c["flipped_slices"]) for c in cases),
                "dicom_files": sum(c["n_dicom_files"] for c in cases)}

    return {"archive": describe(archive), "study": describe(study)}


def index_archive(archive: Path, out_dir: Path, *, seed: int, progress: bool) -> dict[str, Any]:
    """Crawl ``archive``; the accounting (seen = indexed + skipped, reasons) and the usable series count.

    The salt of the series keys is derived from ``seed`` instead of drawn at random: the phantoms are synthetic, and
    a fixed salt makes the keys, their order and so the pretraining split and sample order the same on every run.
    (A real archive keeps the crawler's random, secret salt.)
    """
    from medssl.data.deid import SALT_FILE
    from medssl.data.index import build_index

    salt = out_dir / SALT_FILE
    if not salt.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        salt.write_text(hashlib.sha256(f"medssl-quickstart-phantoms-{seed}".encode()).hexdigest()[:32] + "\n")
    result = build_index(archive, out_dir, workers=2, progress=progress)
    if not result.series:
        raise QuickstartError("the crawler accepted no series in the phantom archive", [result.files_csv])
    return {"seen": result.seen, "indexed": result.indexed, "skipped": result.skipped,
            "skipped_by_reason": dict(sorted(result.reason_counts.items())), "series": len(result.series),
            "rejected_series": len(result.rejected), "summary": result.summary()}


def pretrain(run_dir: Path, index_dir: Path, archive: Path, cache_dir: Path, s: QuickstartSettings, *,
             progress: bool) -> dict[str, Any]:
    """Pretrain with the recipe through the engine; the summary plus the card's method and architecture."""
    from medssl.models.hub import read_card
    from medssl.training.cli import main as pretrain_main

    args = ["--config", str(CONFIG_DIR / s.pretrain_config), "--run_dir", str(run_dir),
            f"--data.source.init_args.index_dir={index_dir}", f"--data.source.init_args.archive_root={archive}",
            f"--data.source.init_args.cache_dir={cache_dir}", f"--trainer.max_epochs={s.pretrain_epochs}",
            f"--seed_everything={s.seed}", f"--trainer.enable_progress_bar={str(progress).lower()}",
            *s.pretrain_overrides]
    with quiet_lightning():
        summary = pretrain_main(args)
    card = read_card(run_dir / summary["encoder_card"])[0]
    keep = ("method", "global_step", "epochs_completed", "val_loss_before", "val_loss_after",
            "train_loss_last_epoch", "skipped_nonfinite_steps", "collapse_warnings", "wall_s")
    return {**{k: summary.get(k) for k in keep}, "config": f"configs/quickstart/{s.pretrain_config}",
            "encoder_card": "pretrain/encoder.json", "architecture": card["architecture"],
            "training_data": card.get("training", {}).get("data"), "weights_sha256": card["weights"]["sha256"]}


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None: leave them); return the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    return before
