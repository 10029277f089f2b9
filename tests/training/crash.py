"""A callback that simulates the training process dying: shared by the exact-resume tests."""
from __future__ import annotations

import lightning as L


class Crash(L.Callback):
    """Raises right after the checkpoint of step ``after`` was written, as a killed process would stop there."""

    def __init__(self, after: int):
        self.after = after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.after:
            raise RuntimeError("simulated kill")
