"""Atomic checkpoint writes and the non-finite loss policy."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medssl.data.datamodule import PretrainDataModule
from medssl.data.sources import DataSource, DatasetRequest
from medssl.ssl.base import NonFiniteLossError
from medssl.ssl.mae import MAE
from medssl.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError


def test_crash_during_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")  # partial bytes land in the temp file...
        raise OSError("disk full")  # ...then the process fails mid-save

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(CheckpointWriteError, match="disk full") as info:
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    good = io.load_checkpoint(path)
    assert good["step"] == 1 and torch.equal(good["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


class Arbitrary:
    """A class a malicious checkpoint could make torch.load instantiate."""


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    torch.save({"obj": Arbitrary()}, tmp_path / "evil.ckpt")  # unpickling would import and build this class
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(FileNotFoundError):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")


class _Images(Dataset):
    """8 random 2D images; items listed in ``bad`` are NaN."""

    def __init__(self, bad: set[int]):
        self.bad = bad
        self.data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x = self.data[i].clone()
        if i in self.bad:
            x[:] = float("nan")
        return {"image": MetaTensor(x)}


class _Source(DataSource):
    def __init__(self, bad: set[int]):
        self.bad = bad

    def datasets(self, request: DatasetRequest):
        return _Images(self.bad), None

    def preprocessing(self):
        return {"kind": "test"}

    def summary(self):
        return {"source": "test"}


def _fit(nonfinite: str, bad: set[int], max_skips: int = 10) -> MAE:
    model = MAE(img_size=[16, 16], patch_size=4, spatial_dims=2, hidden_size=16, num_layers=1, num_heads=2,
                mlp_dim=32, decoder_dim=16, decoder_depth=1, decoder_heads=2, nonfinite=nonfinite,
                max_consecutive_skips=max_skips)
    dm = PretrainDataModule(_Source(bad), spatial_dims=2, batch_size=1, seed=0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    return model


def test_nonfinite_loss_stops_with_a_clear_message():
    with pytest.raises(NonFiniteLossError, match="nonfinite_loss.*loss is nan .*at global step"):
        _fit("stop", bad={3})


def test_nonfinite_loss_skip_policy_skips_and_keeps_weights_finite():
    model = _fit("skip", bad={2, 5})
    assert model.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_consecutive_nonfinite_losses_stop():
    with pytest.raises(NonFiniteLossError, match="consecutive"):
        _fit("skip", bad=set(range(8)), max_skips=3)
