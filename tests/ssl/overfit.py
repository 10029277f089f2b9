"""Shared by the method tests: train a method on one fixed batch (the "overfits one batch" check)."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader


class OneBatch(torch.utils.data.Dataset):
    """The same (already collated) batch, ``steps`` times."""

    def __init__(self, batch: dict, steps: int):
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict:
        return self.batch


def fit_one_batch(method: L.LightningModule, batch: dict, steps: int, **trainer_kwargs) -> L.Trainer:
    """``steps`` optimizer steps of ``method`` on ``batch`` (CPU, no logger, checkpoints or progress bar)."""
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs)
    trainer.fit(method, train_dataloaders=DataLoader(OneBatch(batch, steps), batch_size=None))
    return trainer
