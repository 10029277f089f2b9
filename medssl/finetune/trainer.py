"""The one Lightning training loop of fine-tuning: train, keep the best checkpoint by a validation metric, restore it.

:func:`fit_best` is shared by :func:`medssl.finetune.classification.train_classifier` (best by ``val/auroc``) and
:func:`medssl.finetune.seg_fit.train_segmenter` (best by ``val/dice``):

* ``ModelCheckpoint`` keeps ``checkpoints/best.ckpt`` (weights and hyper-parameters only; a full checkpoint whose
  weights are the average with ``ema_decay``) by ``monitor``, or the final epoch's with ``select="last"``;
  ``EarlyStopping(patience)`` stops after ``patience`` validations without improvement (None: all ``epochs``);
* with ``run_dir`` the checkpoint and Lightning's CSV log (``metrics.csv``) stay there; without it a temporary
  folder is used and removed;
* the fit runs inside a forked torch random state seeded from ``seed`` (the data order comes from the loader's own
  generator), so runs are deterministic and the caller's random state is left as it was;
* afterwards the best checkpoint is loaded back with ``torch.load(weights_only=True)`` and the module is left on
  the CPU holding it.

:func:`quiet_lightning` silences Lightning's per-fit banners and the warnings that a small CPU fit always triggers.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from medssl.finetune.config_file import SELECTS

__all__ = ["check_budget", "fit_best", "quiet_lightning"]

#: warnings that say nothing about the run: small CPU fits, a frozen encoder in eval mode (on purpose), and
#: Lightning 2.6 using torch's deprecated ``LeafSpec`` on torch >= 2.9 (Lightning's code, not ours)
_QUIET_WARNINGS = (".*does not have many workers.*", ".*number of training batches.*",
                   ".*GPU available but not used.*", ".*module\\(s\\) in eval mode.*",
                   ".*isinstance\\(treespec, LeafSpec\\).*")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-fit banners (GPU available, few workers ...) and known-harmless warnings off for one fit."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_budget(epochs: int, batch_size: int, val_every_n_epochs: int, patience: int | None) -> None:
    """ValueError unless ``epochs``, ``batch_size``, ``val_every_n_epochs`` >= 1 and ``patience`` None or >= 1."""
    if epochs < 1 or batch_size < 1 or val_every_n_epochs < 1 or (patience is not None and patience < 1):
        raise ValueError(f"need epochs, batch_size, val_every_n_epochs >= 1 and patience None or >= 1, got "
                         f"{epochs}, {batch_size}, {val_every_n_epochs}, {patience}")


def fit_best(module: L.LightningModule, train_loader: DataLoader, val_loader: DataLoader, *, monitor: str,
             mode: str = "max", epochs: int, patience: int | None = None, val_every_n_epochs: int = 1,
             run_dir: str | Path | None = None, seed: int = 0, accelerator: str = "cpu", progress: bool = False,
             scratch_prefix: str = "medssl-fit-", ema_decay: float = 0.0, select: str = "best") -> dict[str, Any]:
    """Train ``module`` and leave it (on the CPU) holding its best checkpoint by ``monitor``; return what happened.

    ``ema_decay`` > 0 keeps an exponential moving average of the weights and BatchNorm statistics, updated after
    every optimizer step (Lightning's ``EMAWeightAveraging``): validation scores the averaged weights, and the
    checkpoint kept (and left in ``module``) holds them. With the few hundred steps of a few-label run, a decay of
    0.9-0.98 (an average over the last 10-50 steps) smooths the step-to-step noise that a small validation split
    would otherwise select on.

    ``select="last"`` keeps the weights of the final epoch instead of the best validated ones (no checkpoint
    selection, so no early stopping: ``patience`` must be None). Validation still runs and is recorded. Either way
    the kept checkpoint is ``checkpoints/best.ckpt`` (what ``medssl predict`` takes).

    Returns ``best_epoch``, ``val_history`` (every validation's entry of ``module.val_history``), ``best_val`` (the
    entry of that epoch, ``{}`` when the module
    keeps no history), ``epochs_trained``, ``stopped_early`` and ``checkpoint`` (the path under ``run_dir``, None
    without it). Validation (and checkpoint selection) runs every ``val_every_n_epochs`` epochs.
    """
    from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must lie in [0, 1) (0 = off), got {ema_decay}")
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    if select == "last" and patience is not None:
        raise ValueError("select='last' keeps the final weights; early stopping (patience) selects by validation, "
                         "so it needs patience=None")
    check_budget(epochs, 1, val_every_n_epochs, patience)
    scratch = tempfile.TemporaryDirectory(prefix=scratch_prefix) if run_dir is None else None
    root = Path(scratch.name if scratch is not None else run_dir)
    try:
        # monitor=None: the newest validated weights replace the previous ones (the final epoch validates)
        best = ModelCheckpoint(dirpath=root / "checkpoints", filename="best",
                               monitor=monitor if select == "best" else None, mode=mode,
                               save_top_k=1, save_weights_only=not ema_decay, auto_insert_metric_name=False,
                               enable_version_counter=False)
        stopper = EarlyStopping(monitor=monitor, mode=mode, patience=patience) if patience else None
        # (a weights-only save skips the callbacks' on_save_checkpoint, which is where the average replaces the live
        # weights: with EMA the checkpoint is a full one, and its state_dict holds the average)
        averaging = [EMAWeightAveraging(decay=ema_decay)] if ema_decay > 0 else []
        with quiet_lightning():
            trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs,
                                logger=CSVLogger(root, name="", version="") if run_dir is not None else False,
                                callbacks=[*averaging, best, *([stopper] if stopper else [])],
                                enable_checkpointing=True,
                                enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                                log_every_n_steps=1, check_val_every_n_epoch=val_every_n_epochs,
                                default_root_dir=str(root))
            module.train()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                trainer.fit(module, train_loader, val_loader)
        if not best.best_model_path:
            raise RuntimeError("no checkpoint was written: did validation run?")
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        module.to("cpu")
        best_epoch = int(state["epoch"])
        history = getattr(module, "val_history", [])
        return {"best_epoch": best_epoch,
                "best_val": next((h for h in history if h["epoch"] == best_epoch), {}),
                "val_history": list(history),  # every validation: did the run converge within its budget?
                "epochs_trained": int(trainer.current_epoch),
                "stopped_early": bool(stopper is not None and stopper.stopped_epoch > 0),
                "checkpoint": None if scratch is not None else str(best.best_model_path)}
    finally:
        if scratch is not None:
            scratch.cleanup()
