"""``medssl pretrain``: LightningCLI over :class:`~medssl.ssl.base.SSLMethod` subclasses and the pretraining data
module, with medssl's run layout, exact resume and encoder export wired in.

Usage::

    medssl pretrain --config configs/pretrain/mae3d_tiny.yaml --trainer.max_epochs=1 --run_dir runs/try
    medssl pretrain --config configs/pretrain/mae3d_tiny.yaml --run_dir runs/try --resume last   # continue

Run folder (``--run_dir``, default ``runs/<config name>``)::

    config.yaml            resolved config (also in checkpoints/ and inside every checkpoint)
    checkpoints/           last.ckpt + the latest periodic checkpoint (atomic writes, weights_only loadable)
    metrics.csv            CSV log (train/val losses, LR); tensorboard/ holds the TensorBoard log
    reconstructions/*.png  input / masked / reconstruction grids
    loss_curves.png        losses versus step
    encoder.safetensors    the pretrained encoder, with its card encoder.json
    summary.json           losses before/after, steps, wall time

Multi-GPU / multi-node: ``--trainer.strategy=ddp --trainer.devices=N --trainer.num_nodes=M`` (or launch the same
command under torchrun / SLURM ``srun``; Lightning reads the environment). The data module shards by rank itself.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import TensorBoardLogger

from medssl.data.datamodule import PretrainDataModule
from medssl.ssl.base import SSLMethod
from medssl.storage.atomic import atomic_write_text
from medssl.training.checkpoint_io import AtomicCheckpointIO
from medssl.training.collapse_guard import CollapseGuard
from medssl.training.csv_log import ResumableCSVLogger
from medssl.training.export import CONFIG_NAME, EncoderExport
from medssl.training.monitor import ReconstructionMonitor
from medssl.training.resume import ExactResume

RESUME_CHOICES = ("last", "auto")


class SaveRunConfig(SaveConfigCallback):
    """Writes the resolved config to ``<run>/config.yaml`` and ``<run>/checkpoints/config.yaml`` (atomically) and
    embeds it in every checkpoint under ``"medssl_config"``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def _text(self) -> str:
        return self.parser.dump(self.config, skip_none=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        atomic_write_text(Path(trainer.default_root_dir) / CONFIG_NAME, self._text())

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        text = self._text()
        checkpoint["medssl_config"] = text
        if trainer.is_global_zero:  # written with the first checkpoint, so ModelCheckpoint finds an empty folder
            atomic_write_text(Path(trainer.default_root_dir) / "checkpoints" / CONFIG_NAME, text)


class PretrainCLI(LightningCLI):
    """LightningCLI with medssl's run folder, callbacks and checkpoint I/O (see module docstring)."""

    def __init__(self, args: Optional[list[str]] = None, run: bool = True):
        import sys

        if args is None:
            args = sys.argv[1:]
        argv, sys.argv = sys.argv, sys.argv[:1]  # parse ``args`` only (LightningCLI warns when both are present)
        try:
            super().__init__(
                SSLMethod, PretrainDataModule, subclass_mode_model=True, save_config_callback=SaveRunConfig,
                save_config_kwargs={"overwrite": True}, seed_everything_default=0, auto_configure_optimizers=False,
                parser_kwargs={"description": "Self-supervised pretraining (medssl)", "default_env": False},
                args=args, run=False, load_from_checkpoint_support=False,
            )
        finally:
            sys.argv = argv
        if run:
            self.summary = self.fit()

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="output folder (default: runs/<config file name>)")
        parser.add_argument("--resume", type=Optional[str], default=None,
                            help="checkpoint to continue from: a path, 'last' (<run_dir>/checkpoints/last.ckpt) or "
                                 "'auto' (last.ckpt if it exists, else start fresh; for requeued cluster jobs)")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=0,
                            help="checkpoint every N optimizer steps as well as at epoch ends (0: epoch ends only)")
        parser.add_argument("--validate_first", type=bool, default=True,
                            help="measure the validation loss before training (the step-0 reference)")
        parser.add_argument("--monitor_every_n_epochs", type=int, default=1,
                            help="reconstruction grid every N epochs (and at the end)")

    @property
    def run_dir(self) -> Path:
        if self.config.get("run_dir"):
            return Path(self.config["run_dir"])
        configs = self.config.get("config") or []
        name = Path(str(configs[-1])).stem if configs else "pretrain"
        return Path("runs") / name

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        run_dir = self.run_dir
        trainer_cfg = self.config.get("trainer", {})
        every = int(self.config.get("checkpoint_every_n_steps") or 0)
        checkpoints = run_dir / "checkpoints"
        callbacks = [
            ExactResume(),
            # at every epoch end (the final last.ckpt included), and additionally every N steps when asked
            ModelCheckpoint(dirpath=checkpoints, filename="epoch{epoch:03d}-step{step:07d}",
                            auto_insert_metric_name=False, save_last=True, save_top_k=1),
            *([ModelCheckpoint(dirpath=checkpoints, filename="step{step:07d}", auto_insert_metric_name=False,
                               save_last=True, save_top_k=1, every_n_train_steps=every)] if every else []),
            ReconstructionMonitor(every_n_epochs=int(self.config.get("monitor_every_n_epochs") or 1)),
            CollapseGuard(),
            EncoderExport(),
        ]
        if trainer_cfg.get("logger") in (None, True):
            ckpt = self.resume_path()
            resume_step = (torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]
                           if ckpt else None)
            kwargs["logger"] = [ResumableCSVLogger(str(run_dir), resume_step=resume_step,
                                                   flush_logs_every_n_steps=every or 50),
                                TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False)]
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        init_cfg = self._get(self.config_init, "trainer", default={})
        plugins = [*_as_list(init_cfg.get("plugins")), AtomicCheckpointIO()]
        if SLURMEnvironment.detect():
            # Lightning's SLURM auto-requeue would resume from an hpc_ckpt written mid-step behind this CLI's back;
            # requeued jobs resume explicitly with --resume auto instead
            plugins.append(SLURMEnvironment(auto_requeue=False))
        kwargs.update(default_root_dir=str(run_dir), use_distributed_sampler=False, plugins=plugins)
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        config = {**init_cfg, **kwargs}
        return self._instantiate_trainer(config, extra + callbacks)

    def resume_path(self) -> Optional[str]:
        resume = self.config.get("resume")
        if resume is None:
            return None
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if resume == "auto":
            return str(last) if last.is_file() else None
        path = last if resume == "last" else Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        return str(path)

    def fit(self) -> dict[str, Any]:
        """Validate (step 0), fit, export; returns and writes ``summary.json``."""
        trainer, model, dm = self.trainer, self.model, self.datamodule
        ckpt = self.resume_path()
        t0 = time.perf_counter()
        before = None
        if ckpt is None and self.config.get("validate_first"):
            results = trainer.validate(model, datamodule=dm, verbose=False)
            before = results[0].get("val/loss") if results else None
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt, weights_only=True if ckpt else None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        summary = {
            "method": getattr(model, "method_name", type(model).__name__),
            "run_dir": str(self.config.get("run_dir") or self.run_dir),  # as given on the command line
            "resumed_from": None if ckpt is None else Path(ckpt).name,
            "global_step": trainer.global_step,
            "epochs_completed": trainer.current_epoch,
            "val_loss_before": before,
            "val_loss_after": metrics.get("val/loss"),
            "train_loss_last_epoch": metrics.get("train/loss_epoch"),
            "skipped_nonfinite_steps": int(getattr(model, "skipped_steps", 0)),
            "replaced_items": int(getattr(model, "replaced_items", 0)),
            "unreadable_scans": _unreadable(dm),
            "collapse_warnings": [e for cb in trainer.callbacks if isinstance(cb, CollapseGuard) for e in cb.events],
            **_probe_summary(trainer),
            "wall_s": round(time.perf_counter() - t0, 2),
            "encoder_card": "encoder.json",  # paths in this file are relative to the run folder
        }
        if trainer.is_global_zero:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _unreadable(dm: Any) -> dict[str, int]:
    """Scans found unreadable during training in this process, counted by reason code (workers keep their own
    record; their warnings are in the log)."""
    counts: dict[str, int] = {}
    for ds in (getattr(dm, "train_set", None), getattr(dm, "val_set", None)):
        for reason in getattr(ds, "unreadable", {}).values():
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def _probe_summary(trainer: L.Trainer) -> dict[str, Any]:
    """Online-probe results before and after training, when an :class:`OnlineProbe` callback is configured."""
    from medssl.training.online_probe import OnlineProbe

    probes = [cb for cb in trainer.callbacks if isinstance(cb, OnlineProbe) and cb.history]
    if not probes:
        return {}
    return {"probe_before": probes[0].history[0], "probe_after": probes[0].history[-1]}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def main(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Entry point of ``medssl pretrain`` / ``pipelines/pretrain.py``."""
    return PretrainCLI(args=args).summary
