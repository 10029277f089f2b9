"""Monitoring callbacks: reconstruction grids a person can judge, and loss curves.

:class:`ReconstructionMonitor` draws a fixed set of samples (the first validation items, else the first training
items) every ``every_n_epochs`` epochs through the method's ``reconstruct`` (input / masked / reconstruction),
writes ``<run>/reconstructions/epoch_XXX.png`` and logs the image to TensorBoard when that logger is active. At the
end of fitting it plots ``<run>/loss_curves.png`` from the CSV log.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import default_collate

from medssl.eval.plots import reconstruction_grid, training_curves


class ReconstructionMonitor(L.Callback):
    """Reconstruction grids every ``every_n_epochs`` epochs and at the end (``final.png``), loss curves at the end."""

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 4):
        self.every_n_epochs, self.num_samples = max(1, every_n_epochs), num_samples
        self._batch: Optional[dict[str, Any]] = None
        self.written: list[Path] = []

    def _samples(self, trainer: L.Trainer) -> Optional[dict[str, Any]]:
        if self._batch is None:
            dm = trainer.datamodule
            dataset = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
            if dataset is None or len(dataset) == 0:
                return None
            picks = np.linspace(0, len(dataset) - 1, min(self.num_samples, len(dataset))).round().astype(int)
            items = [dataset[int(i)] for i in picks]
            self._batch = default_collate([{"image": torch.as_tensor(item["image"])} for item in items])
        return self._batch

    @rank_zero_only
    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> None:
        if not hasattr(pl_module, "reconstruct"):
            return
        batch = self._samples(trainer)
        if batch is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            images = pl_module.reconstruct({"image": batch["image"].to(pl_module.device)},
                                           pl_module.generator("val", 0))
        finally:
            pl_module.train(was_training)
        path = Path(trainer.default_root_dir) / "reconstructions" / f"{tag}.png"
        reconstruction_grid({k: v.float().cpu() for k, v in images.items()}, path,
                            title=f"{type(pl_module).__name__} {tag} (step {trainer.global_step})")
        self.written.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                import matplotlib.image

                logger.experiment.add_image("reconstruction", matplotlib.image.imread(path)[..., :3],
                                            trainer.global_step, dataformats="HWC")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module, f"epoch_{trainer.current_epoch:03d}")

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step:
            self._draw(trainer, pl_module, "final")
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
                metrics = Path(logger.log_dir) / "metrics.csv"
                if metrics.is_file():
                    try:
                        training_curves(metrics, Path(trainer.default_root_dir) / "loss_curves.png",
                                        title=f"{type(pl_module).__name__} losses")
                    except ValueError:  # no loss logged (e.g. zero steps)
                        pass
