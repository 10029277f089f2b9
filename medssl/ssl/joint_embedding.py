"""Shared base of the joint-embedding methods (SimCLR, MoCo, BYOL, SimSiam, DINO).

A joint-embedding method is three small parts (as in lightly): a **view transform** that makes two or more views
of each item (:class:`medssl.transforms.views.MultiViewTransform`, configured as the data module's ``views``), a
**head** on top of an encoder from the registry (:mod:`medssl.models.heads`), and a **loss**
(:mod:`medssl.losses`). This base class adds what they share:

* the encoder, built by name from :data:`medssl.models.registry.ENCODERS` (``vit``, ``resnet``, ``segresnet``; 2D
  or 3D through ``encoder_kwargs.spatial_dims``), and the views read from the batch with a clear error when the
  data module was configured without them;
* momentum (EMA) targets updated right after every optimizer step (not per accumulation micro-batch, not after a
  skipped non-finite batch) with BYOL's cosine schedule
  (:mod:`medssl.ssl.momentum`) for the methods that declare them (:meth:`momentum_pairs`);
* collapse diagnostics of the encoder features, logged every step as ``embedding_std`` / ``embedding_rank``
  (:mod:`medssl.eval.collapse`) and watched by :class:`medssl.training.collapse_guard.CollapseGuard`.

Everything else (optimiser, LR schedule, non-finite policy, seeded randomness, export) is the engine's
(:class:`medssl.ssl.base.SSLMethod`), shared with the masked-image-modelling methods.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from medssl.errors import MedsslError, Reason
from medssl.eval.collapse import effective_rank, embedding_std
from medssl.models.registry import build_encoder
from medssl.ssl.base import SSLMethod
from medssl.ssl.momentum import cosine_momentum, ema_update
from medssl.training.optim import OptimConfig

__all__ = ["JointEmbeddingMethod"]


class JointEmbeddingMethod(SSLMethod):
    """Base class: encoder + views + momentum targets + collapse metrics (see module docstring).

    Args:
        encoder: registry name of the encoder (``"resnet"``, ``"vit"``, ``"segresnet"``).
        encoder_kwargs: its constructor arguments (``in_channels``, ``spatial_dims``, sizes ...).
        base_momentum, final_momentum: EMA momentum schedule of the momentum targets (methods with targets).
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 base_momentum: float = 0.99, final_momentum: float = 1.0, optim: Optional[OptimConfig] = None,
                 nonfinite: str = "stop", max_consecutive_skips: int = 10, seed: int = 0):
        super().__init__(optim, nonfinite, max_consecutive_skips, seed)
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}")
        self.encoder = build_encoder(encoder, dict(encoder_kwargs or {}))
        self.base_momentum, self.final_momentum = base_momentum, final_momentum

    # --- views ------------------------------------------------------------------------------------------------
    def views(self, batch: dict[str, Any], min_global: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(global_views, local_views)`` of the batch as plain tensors."""
        if "global_views" not in batch:
            raise MedsslError(Reason.BAD_CONFIG, f"{type(self).__name__} needs views of each item: set data.views "
                              "(e.g. class_path: medssl.transforms.views.MultiViewTransform) in the config")
        plain = [v.as_tensor() if hasattr(v, "as_tensor") else v for v in batch["global_views"]]
        local = [v.as_tensor() if hasattr(v, "as_tensor") else v for v in batch.get("local_views") or []]
        if len(plain) < min_global:
            raise MedsslError(Reason.BAD_CONFIG, f"{type(self).__name__} needs at least {min_global} global views, "
                              f"the data module makes {len(plain)}: set data.views.init_args.num_global")
        return plain, local

    # --- collapse diagnostics ---------------------------------------------------------------------------------
    @staticmethod
    def collapse_metrics(features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``embedding_std`` and ``embedding_rank`` of a batch of encoder features (no gradient); NaN for a batch of
        one item (the keys stay the same on every rank, which DDP's synchronised logging needs)."""
        if features.shape[0] < 2:
            nan = features.new_tensor(float("nan"))
            return {"embedding_std": nan, "embedding_rank": nan}
        f = features.detach()
        return {"embedding_std": embedding_std(f), "embedding_rank": effective_rank(f)}

    # --- momentum targets -------------------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(target, online)`` module pairs updated by EMA after every optimizer step (none by default)."""
        return []

    def current_momentum(self) -> float:
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return cosine_momentum(self.global_step, total, self.base_momentum, self.final_momentum)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # The EMA follows the optimizer step inside the same hook, so a checkpoint written at the end of this batch
        # (callbacks run before the module's on_train_batch_end) already holds the updated targets: exact resume.
        super().optimizer_step(*args, **kwargs)
        if self.last_step_finite and self.momentum_pairs():
            m = self.current_momentum()
            for target, online in self.momentum_pairs():
                ema_update(target, online, m)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.momentum_pairs():
            self.log("train/momentum", self.current_momentum(), on_step=True, on_epoch=False)
