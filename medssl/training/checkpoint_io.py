"""Checkpoint I/O that never destroys the last good checkpoint and never unpickles arbitrary objects.

Writes go through :func:`medssl.data.atomic.atomic_write` (temp file in the same folder, fsync, ``os.replace``):
a crash mid-save leaves the previous ``last.ckpt`` intact. Reads use ``torch.load(weights_only=True)``; checkpoints
written by medssl hold only tensors and plain containers, so this always works for them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medssl.data.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic, fsynced writes and safe (weights-only) loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")

        def write(tmp: str) -> None:
            torch.save(checkpoint, tmp)

        atomic_write(Path(path), write)

    def load_checkpoint(self, path: Any, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return torch.load(path, map_location=map_location, weights_only=True if weights_only is None else weights_only)
