"""Checkpoint I/O that never destroys the last good checkpoint and never unpickles arbitrary objects.

Writes go through :func:`medssl.storage.atomic.atomic_write` (temp file in the same folder, fsync, ``os.replace``):
a crash mid-save leaves the previous ``last.ckpt`` intact, and a failed write (disk full, quota, I/O error) raises
:class:`CheckpointWriteError` naming the checkpoint, the cause and that the previous one is intact. Reads use
``torch.load(weights_only=True)``; checkpoints
written by medssl hold only tensors and plain containers, so this always works for them.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medssl.errors import MedsslError, Reason
from medssl.storage.atomic import atomic_write

#: errno values meaning "no room": ENOSPC (device full), EDQUOT (quota exceeded), EFBIG (file too large)
NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG}


class CheckpointWriteError(MedsslError):
    """A checkpoint could not be written; the previous checkpoint at that path (if any) is untouched."""

    def __init__(self, message: str, path: Path):
        super().__init__(Reason.WRITE_FAILED, message, [path])


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic, fsynced writes and safe (weights-only) loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")

        def write(tmp: str) -> None:
            torch.save(checkpoint, tmp)

        path = Path(path)
        try:
            atomic_write(path, write)
        except OSError as err:
            why = "no space left on the device (or quota exceeded)" if err.errno in NO_SPACE else str(err)
            kept = "the previous checkpoint there is intact" if path.is_file() else "no earlier checkpoint exists"
            raise CheckpointWriteError(f"could not write checkpoint {path.name}: {why}; {kept}. Free space in "
                                       f"{path.parent} and resume with --resume last", path) from err

    def load_checkpoint(self, path: Any, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        path = Path(path)
        if weights_only is False:
            raise ValueError(f"refusing to load {path} with weights_only=False: medssl checkpoints hold only tensors "
                             "and plain containers, and unpickling arbitrary objects can run code")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return torch.load(path, map_location=map_location, weights_only=True)
