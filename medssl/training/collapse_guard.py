"""Collapse guard: warn when a joint-embedding method's embeddings collapse.

Methods that log ``train/embedding_std`` (:func:`medssl.eval.collapse.embedding_std`, about 1 for healthy
embeddings, 0 at collapse) and ``train/embedding_rank`` get a warning at the end of each epoch in which the
epoch mean of ``embedding_std`` falls below ``min_std``; the events are kept in :attr:`CollapseGuard.events`
(and in ``summary.json`` by the pretraining CLI). Methods that log neither (MAE, SimMIM) are ignored.
Typical causes: a learning rate too high for the batch, a too-small EMA momentum, missing stop-gradient /
predictor, or views so weak that the task is trivial.
"""
from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["CollapseGuard"]


class CollapseGuard(L.Callback):
    """Warns (once per affected epoch) when ``train/embedding_std`` drops below ``min_std``."""

    def __init__(self, min_std: float = 0.1):
        self.min_std = float(min_std)
        self.events: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        std = metrics.get("train/embedding_std_epoch", metrics.get("train/embedding_std"))
        if std is None:
            return
        std_value = float(std)
        rank = metrics.get("train/embedding_rank_epoch", metrics.get("train/embedding_rank"))
        if std_value < self.min_std:
            event = {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                     "embedding_std": std_value, "embedding_rank": None if rank is None else float(rank)}
            self.events.append(event)
            rank_zero_warn(
                f"representation collapse suspected at epoch {trainer.current_epoch}: embedding std "
                f"{std_value:.3g} < {self.min_std} (1 = spread out, 0 = collapsed)"
                + ("" if rank is None else f", effective rank {float(rank):.3g}")
                + "; check the learning rate, EMA momentum, predictor/stop-gradient and view strength"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"events": list(self.events)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = list(state_dict.get("events", []))
