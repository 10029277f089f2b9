"""Joint-embedding methods through the pretraining CLI: every tiny config runs end to end and exports its
encoder, resume is bitwise exact with EMA teachers / DINO centre / MoCo queue, and a 2-process DDP SimCLR run
matches a single process with the doubled batch."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medssl.models.hub import load_encoder
from medssl.training.cli import PretrainCLI
from tests.training.phantom_runs import assert_exact_resume, pretrain_args

TINY = ["simclr2d_tiny.yaml", "moco3d_tiny.yaml", "byol2d_tiny.yaml", "simsiam3d_tiny.yaml", "dino2d_tiny.yaml"]


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("je_data")
    return root / "phantoms", root / "cache"


@pytest.mark.parametrize("config", TINY)
def test_tiny_config_runs_end_to_end(config, tmp_path, data_dirs, one_thread):
    run = tmp_path / "run"
    cli = PretrainCLI(args=pretrain_args(config, run, data_dirs))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] >= 3 and summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    assert isinstance(summary["collapse_warnings"], list)
    for name in ("config.yaml", "checkpoints/last.ckpt", "encoder.json", "encoder.safetensors", "metrics.csv",
                 "loss_curves.png"):
        assert (run / name).is_file(), name
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "train/embedding_std_step" in header and "train/embedding_rank_step" in header
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == cli.model.method_name
    report = load_encoder(run / "encoder.json")
    assert not report.missing and not report.unexpected
    exported = cli.model.encoder_module.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in report.module.state_dict().items())


@pytest.mark.parametrize("config, extra", [("dino2d_tiny.yaml", ()), ("byol2d_tiny.yaml", ()),
                                           ("moco3d_tiny.yaml", ("--model.init_args.queue_size=8",))])
def test_exact_resume_with_teacher_centre_and_queue(config, extra, tmp_path, data_dirs, one_thread):
    common = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--data.batch_size=2",
              "--checkpoint_every_n_steps=1", "--validate_first=false", "--trainer.deterministic=true", *extra)
    assert_exact_resume(config, tmp_path, data_dirs, common, crash_after=4, total_steps=6)


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["train/loss_step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


@pytest.mark.slow
def test_ddp_simclr_equals_single_process_with_doubled_batch(tmp_path, data_dirs):
    """2 gloo processes x batch 4 (gathered negatives) == 1 process x batch 8, step by step. BatchNorm cannot be
    synchronised on CPU, so the encoder uses group norm and the projector no BatchNorm: every remaining coupling
    between the items of a batch goes through the loss's gathered negatives."""
    import subprocess
    import sys

    encoder = json.dumps({"in_channels": 1, "spatial_dims": 2, "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 16, 32],
                          "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True, "norm": ["group", {"num_groups": 4}]})
    common = ("--trainer.max_epochs=1", "--trainer.limit_train_batches=3", f"--model.init_args.encoder_kwargs={encoder}",
              "--model.init_args.proj_batch_norm=false",
              "--validate_first=false", "--trainer.limit_val_batches=0", "--model.init_args.optim.warmup=0")
    runs = {"single": ("--data.batch_size=8",),
            "ddp": ("--data.batch_size=4", "--trainer.strategy=ddp", "--trainer.devices=2")}
    for name, extra in runs.items():
        cmd = [sys.executable, "-m", "medssl.cli", "pretrain",
               *pretrain_args("simclr2d_tiny.yaml", tmp_path / name, data_dirs, *common, *extra)]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 3
    assert single == pytest.approx(ddp, rel=1e-4, abs=1e-5), (single, ddp)
