"""The base of every pretraining method: a thin LightningModule around ``model -> outputs -> loss``.

A method subclass builds its model in ``__init__`` and implements :meth:`SSLMethod.compute_loss` (batch ->
``{"loss": ..., other metrics}``); the base class does the rest once for all methods: logging, the non-finite
loss policy, AdamW + warmup/cosine, per-step seeded randomness and the encoder it exports.

Randomness of a method (masks, view parameters drawn on the device) comes from :meth:`SSLMethod.generator`, seeded
from ``(seed, epoch, batch index, rank)`` in training (every micro-batch of a gradient-accumulation window gets its
own draw) and ``(seed, batch index, rank)`` in validation: independent of the global RNG, so resumed runs draw the
same masks, and validation losses of different epochs are comparable.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.training.optim import OptimConfig, build_optimizer

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteLossError(MedsslError):
    """Training produced a NaN/Inf loss (stop policy, or too many consecutive skips)."""

    def __init__(self, message: str):
        super().__init__(Reason.NONFINITE_LOSS, message)


class SSLMethod(L.LightningModule):
    """Base LightningModule of the pretraining methods.

    Args:
        optim: optimiser and LR schedule.
        nonfinite: ``"stop"`` raises :class:`NonFiniteLossError` at the first NaN/Inf loss; ``"skip"`` skips the
            optimizer step of that batch and stops after ``max_consecutive_skips`` in a row.
        max_consecutive_skips: see ``nonfinite``.
        seed: seed of the method's own randomness (masks, views).
    """

    #: attribute name of the encoder that is exported (``self.<name>``)
    encoder_attr = "encoder"

    def __init__(self, optim: Optional[OptimConfig] = None, nonfinite: str = "stop",
                 max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self.optim = optim if optim is not None else OptimConfig()
        self.nonfinite, self.max_consecutive_skips, self.seed = nonfinite, max_consecutive_skips, seed
        self.skipped_steps = 0
        #: training items that were substitutes for unreadable scans (``replaced`` in the batch; this rank)
        self.replaced_items = 0
        self._consecutive_skips = 0
        #: whether the last training batch had a finite loss (its optimizer step really updated the weights)
        self.last_step_finite = False
        self.save_hyperparameters()
        # plain containers only, so checkpoints load with weights_only=True
        self.hparams["optim"] = asdict(self.optim)

    # --- to implement -----------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, ...}`` for one batch (extra entries are logged)."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------------------------
    @staticmethod
    def images(batch: dict[str, Any]) -> torch.Tensor:
        """The batch's images as a plain tensor (MetaTensor meta is not needed inside the model)."""
        x = batch["image"]
        return x.as_tensor() if hasattr(x, "as_tensor") else x

    @property
    def encoder_module(self) -> nn.Module:
        return getattr(self, self.encoder_attr)

    def generator(self, stage: str, batch_idx: int) -> torch.Generator:
        """Seeded generator for this step (see module docstring)."""
        if stage == "train":
            key = [self.seed, 0, self.current_epoch, batch_idx, self.global_rank]
        else:
            key = [self.seed, 1, batch_idx, self.global_rank]
        seed = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Optional[torch.Tensor]:
        self._count_replaced(batch)
        out = self.compute_loss(batch, self.generator("train", batch_idx))
        loss = out["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if self._trainer is not None and self.trainer.world_size > 1:
            # every rank must take the same decision, or DDP's gradient all-reduce would deadlock
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        self.last_step_finite = bool(finite)
        if not self.last_step_finite:
            return self._nonfinite(loss, batch_idx)
        self._consecutive_skips = 0
        bs = _batch_size(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        for k, v in out.items():
            if k != "loss":
                self.log(f"train/{k}", v, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch, self.generator("val", batch_idx))
        bs = _batch_size(batch)
        for k, v in out.items():
            self.log(f"val/{k}", v, prog_bar=k == "loss", on_epoch=True, batch_size=bs, sync_dist=True)
        return out["loss"]

    def _count_replaced(self, batch: Any) -> None:
        """Count items the dataset substituted for unreadable scans (see :class:`medssl.data.dataset.ScanDataset`)."""
        replaced = batch.get("replaced") if isinstance(batch, dict) else None
        if replaced is not None:
            n = int(torch.as_tensor(replaced).sum())
            self.replaced_items += n
            self.log("train/replaced_items", float(self.replaced_items), on_step=True, on_epoch=False)

    def _nonfinite(self, loss: torch.Tensor, batch_idx: int) -> None:
        where = f"loss is {loss.item()} (on this or another rank) at global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.nonfinite == "stop":
            raise NonFiniteLossError(f"{where}; stopping instead of training on garbage (set model.nonfinite=skip to "
                                     "skip such batches); check the learning rate, precision and input intensities")
        self.skipped_steps += 1
        self._consecutive_skips += 1
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
        if self._consecutive_skips > self.max_consecutive_skips:
            raise NonFiniteLossError(f"{where}; {self._consecutive_skips} consecutive non-finite losses")
        return None  # Lightning skips backward and the optimizer step

    def configure_optimizers(self) -> dict[str, Any]:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        if not math.isfinite(total):
            raise MedsslError(Reason.BAD_CONFIG, "the LR schedule needs a finite length: set trainer.max_epochs or "
                              "trainer.max_steps")
        opt, sched = build_optimizer(self, self.optim, int(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medssl_skipped_steps"] = self.skipped_steps
        checkpoint["medssl_replaced_items"] = self.replaced_items

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("medssl_skipped_steps", 0))
        self.replaced_items = int(checkpoint.get("medssl_replaced_items", 0))


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        image = batch["image"] if "image" in batch else batch["global_views"][0]
    else:
        image = batch[0]
    return int(image.shape[0])
