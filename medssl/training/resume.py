"""Exact resume: the data position and the RNG states travel in every checkpoint.

Lightning's checkpoints already carry the model, optimizer, LR scheduler, precision scaler and loop counters. This
callback adds what a bitwise-identical continuation also needs:

- the **data position**: the epoch and the number of training batches this rank consumed in it (counted when a
  training batch ends, i.e. before ``ModelCheckpoint``, which Lightning always runs last). On load it tells the data
  module to resume the sampler there, so prefetching workers never shift the position;
- the **RNG states** of Python, NumPy and torch (CPU and CUDA), stored as plain lists/tensors so the checkpoint
  loads with ``torch.load(weights_only=True)``. They are restored right before the first training batch after
  a resume, i.e. after the loaders were built (building a DataLoader iterator draws from the torch RNG).
"""
from __future__ import annotations

import random
from typing import Any, Optional

import lightning as L
import numpy as np
import torch

STATE_KEY = "medssl_resume"


def capture_rng() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch as weights_only-loadable objects."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(L.Callback):
    """Records the data position and RNG states in checkpoints and restores both on resume."""

    def __init__(self) -> None:
        self.epoch = 0
        self.batches = 0
        self._pending_rng: Optional[dict[str, Any]] = None

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch != trainer.current_epoch:  # a new epoch (not the resumed one)
            self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches += 1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "rng": capture_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self._pending_rng = state_dict["rng"]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        datamodule = trainer.datamodule
        if state is not None and hasattr(datamodule, "resume_at"):
            datamodule.resume_at(int(state["epoch"]), int(state["batches"]))
