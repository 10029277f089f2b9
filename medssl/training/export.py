"""Encoder export at the end of pretraining: ``<run>/encoder.safetensors`` + ``<run>/encoder.json``.

A method with a dense decoder (``dense_decoder``: a restoration method pretrained with ``decoder: basicunet``) also
writes ``<run>/decoder.safetensors``, recorded in the card's ``decoder`` entry for whole-network transfer
(:mod:`medssl.models.dense_transfer`); other methods' cards are unchanged.

The card records the method, the encoder architecture, the preprocessing of the data source, a training summary
without patient data (item counts, steps, last losses) and the SHA-256 of the run's resolved ``config.yaml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from medssl.models.dense_transfer import export_decoder
from medssl.models.hub import export_encoder
from medssl.storage.hashing import file_sha256

CONFIG_NAME = "config.yaml"


class EncoderExport(L.Callback):
    """Writes the trained encoder and its card into the run folder when fitting ends (rank 0)."""

    def __init__(self) -> None:
        self.card_path: Optional[Path] = None

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = Path(trainer.default_root_dir)
        dm = trainer.datamodule
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        training: dict[str, Any] = {
            "data": dm.describe() if hasattr(dm, "describe") else {},
            "epochs_completed": trainer.current_epoch,
            "global_step": trainer.global_step,
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "last_metrics": metrics,
            "skipped_nonfinite_steps": int(getattr(pl_module, "skipped_steps", 0)),
        }
        preprocessing = dm.source.preprocessing() if hasattr(dm, "source") else {}
        decoder = getattr(pl_module, "dense_decoder", None)
        extra = None if decoder is None else {
            "decoder": export_decoder(decoder, run_dir, out_activation=pl_module.hparams.get("out_activation"))}
        self.card_path = export_encoder(pl_module.encoder_module, run_dir, method=pl_module.method_name,
                                        preprocessing=preprocessing, training=training,
                                        config_sha256=file_sha256(config) if (config := run_dir / CONFIG_NAME).is_file()
                                        else None, extra=extra)
