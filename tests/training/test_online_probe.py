"""OnlineProbe inside Lightning: probes before fitting and at scheduled epochs, logs, probe.json, global RNG left
alone, seeded subsets, shape mismatches skipped with one warning, history kept across checkpoints."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medssl.models.cnn import SegResNetEncoder
from medssl.training.online_probe import PROBE_FILE, OnlineProbe

KEYS = {"knn_acc", "knn_balanced_acc", "knn_auroc", "linear_acc", "linear_balanced_acc", "linear_auroc"}


def write_two_class_npz(path: Path, sizes=(("train", 48), ("val", 24), ("test", 8)), seed: int = 0) -> Path:
    """MedMNIST-format file: uint8 (N, 28, 28) noise; class 1 has a bright square in the middle, class 0 not."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes:
        labels = np.arange(n) % 2
        images = rng.integers(0, 80, (n, 28, 28))
        images[labels == 1, 9:19, 9:19] += 150
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


class TinyMethod(L.LightningModule):
    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.encoder = SegResNetEncoder(in_channels=in_channels, spatial_dims=2, init_filters=8, blocks_down=[1, 1])

    @property
    def encoder_module(self) -> torch.nn.Module:
        return self.encoder

    def training_step(self, batch, batch_idx):
        return self.encoder(batch["image"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.encoder(batch["image"]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class RecordingProbe(OnlineProbe):
    """Records whether each probe left the global torch / numpy / Python random states as they were."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng_untouched: list[bool] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        before = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        super().on_validation_epoch_end(trainer, pl_module)
        after = (torch.random.get_rng_state(), np.random.get_state()[1], random.getstate())
        self.rng_untouched.append(torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
                                  and before[2] == after[2])


def loader(in_channels: int = 1, n: int = 8) -> DataLoader:
    images = torch.rand(n, in_channels, 28, 28, generator=torch.Generator().manual_seed(0))
    return DataLoader([{"image": x} for x in images], batch_size=4)


def trainer(root: Path, probe: OnlineProbe, max_epochs: int = 2) -> L.Trainer:
    return L.Trainer(default_root_dir=root, max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1,
                     num_sanity_val_steps=1, callbacks=[probe], accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_probe_before_fit_and_at_scheduled_epochs(tmp_path, one_thread):
    torch.manual_seed(0)
    path = write_two_class_npz(tmp_path / "two.npz")
    probe = RecordingProbe(str(path), max_train=40, max_eval=20, every_n_epochs=2, k=5, batch_size=16)
    method = TinyMethod()
    t = trainer(tmp_path / "run", probe)
    (validated,) = t.validate(method, dataloaders=loader(), verbose=False)  # the step-0 reference
    assert {f"probe/{k}" for k in KEYS} <= set(validated)
    t.fit(method, train_dataloaders=loader(), val_dataloaders=loader())

    # the sanity check and epoch 0 are skipped; pre-fit validation and epoch 1 (every 2nd) are probed
    assert [(h["stage"], h["epoch"], h["global_step"]) for h in probe.history] == [("validate", 0, 0),
                                                                                     ("fit", 1, 4)]
    assert probe.first is probe.history[0] and probe.last is probe.history[1]
    assert probe.rng_untouched == [True] * 4  # validate, sanity check, epochs 0 and 1
    assert set(probe.first) == KEYS | {"stage", "epoch", "global_step"}
    assert probe.first["knn_acc"] > 0.75, probe.first  # random features already see the bright square
    assert float(t.callback_metrics["probe/knn_acc"]) == pytest.approx(probe.last["knn_acc"])
    saved = json.loads((tmp_path / "run" / PROBE_FILE).read_text())
    assert saved["history"] == probe.history and saved["eval_split"] == "val"
    train, evaluation = probe.datasets()
    assert len(train) == 40 and len(evaluation) == 20


def test_subsets_are_seeded_and_do_not_use_the_global_rng(tmp_path):
    path = write_two_class_npz(tmp_path / "two.npz")
    torch.manual_seed(1)
    np.random.seed(1)
    a = OnlineProbe(str(path), max_train=10, max_eval=5, seed=3).datasets()
    torch.manual_seed(2)
    np.random.seed(2)
    b = OnlineProbe(str(path), max_train=10, max_eval=5, seed=3).datasets()
    c = OnlineProbe(str(path), max_train=10, max_eval=5, seed=4).datasets()
    assert a[0].indices == b[0].indices and a[1].indices == b[1].indices
    assert a[0].indices != c[0].indices
    assert len(set(a[0].indices)) == 10 and all(0 <= i < 48 for i in a[0].indices)
    assert len(OnlineProbe(str(path), max_eval=1000).datasets()[1]) == 24  # all items when fewer


def test_shape_mismatch_warns_once_and_training_goes_on(tmp_path, one_thread):
    path = write_two_class_npz(tmp_path / "two.npz")
    probe = OnlineProbe(str(path), max_train=8, max_eval=4, k=3)
    method = TinyMethod(in_channels=3)  # built for RGB, the probe file is grey
    t = trainer(tmp_path / "run", probe, max_epochs=1)
    with pytest.warns(UserWarning, match=r"OnlineProbe disabled.*in_channels.*\(B, 1, 28, 28\)"):
        t.validate(method, dataloaders=loader(3), verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OnlineProbe")
        t.fit(method, train_dataloaders=loader(3), val_dataloaders=loader(3))
    assert probe.disabled and probe.history == [] and t.global_step == 2
    assert not (tmp_path / "run" / PROBE_FILE).exists()


def test_multilabel_file_is_refused_and_history_survives_checkpoints(tmp_path):
    path = tmp_path / "multi.npz"
    labels = np.zeros((4, 3), np.uint8)
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=labels,
             val_images=np.zeros((4, 28, 28), np.uint8), val_labels=labels)
    with pytest.raises(ValueError, match="multi-label"):
        OnlineProbe(str(path)).datasets()
    probe = OnlineProbe(str(path))
    probe.history = [{"global_step": 0, "epoch": 0, "stage": "validate", "knn_acc": 0.5, "knn_auroc": float("nan")}]
    restored = OnlineProbe(str(path))
    restored.load_state_dict(probe.state_dict())
    assert restored.history[0]["knn_acc"] == 0.5 and restored.state_key == probe.state_key
    assert OnlineProbe(str(path), eval_split="test").state_key != probe.state_key
    with pytest.raises(ValueError):
        OnlineProbe(str(path), every_n_epochs=0)
