"""End-to-end pretraining through the YAML/LightningCLI engine on phantoms: smoke runs of every tiny config,
exact resume after a crash, the saved config and checkpoint safety."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medssl.models.hub import load_encoder
from medssl.training.cli import PretrainCLI
from tests.conftest import REPO
from tests.training.crash import Crash

CONFIGS = REPO / "configs" / "pretrain"


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_data")
    return root / "phantoms", root / "cache"


def _args(config: str, run_dir: Path, data_dirs, *extra: str) -> list[str]:
    phantoms, cache = data_dirs
    return ["--config", str(CONFIGS / config), "--run_dir", str(run_dir),
            f"--data.source.init_args.root={phantoms}", f"--data.source.init_args.cache_dir={cache}", *extra]


@pytest.mark.parametrize("config", ["mae3d_tiny.yaml", "mae2d_tiny.yaml", "simmim3d_tiny.yaml"])
def test_tiny_config_runs_end_to_end(config, tmp_path, data_dirs):
    run = tmp_path / "run"
    cli = PretrainCLI(args=_args(config, run, data_dirs, "--trainer.max_epochs=1"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary == cli.summary
    assert summary["epochs_completed"] == 1 and summary["global_step"] > 0  # the dotted override took effect
    assert summary["val_loss_before"] is not None and summary["val_loss_after"] is not None
    for name in ("config.yaml", "checkpoints/config.yaml", "checkpoints/last.ckpt", "encoder.json",
                 "encoder.safetensors", "metrics.csv", "loss_curves.png", "reconstructions/final.png"):
        assert (run / name).is_file(), name
    assert "max_epochs: 1" in (run / "config.yaml").read_text()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # no pickle needed
    assert ckpt["medssl_config"] == (run / "config.yaml").read_text()
    assert "medssl_resume" in ckpt["callbacks"]
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == cli.model.method_name and card["training"]["global_step"] == summary["global_step"]
    assert card["preprocessing"]["plan"]["intensity"] == "ct_window"
    report = load_encoder(run / "encoder.json")
    assert not report.missing and not report.unexpected
    trained = cli.model.encoder.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in report.module.state_dict().items())


def test_exact_resume_is_bitwise(tmp_path, data_dirs):
    # 3 training scans, batch 1 -> 3 steps per epoch; 3 epochs = 9 steps; crash after step 4 (mid-epoch 1)
    common = ("--trainer.max_epochs=3", "--data.batch_size=1", "--checkpoint_every_n_steps=1",
              "--validate_first=false", "--trainer.deterministic=true", "--monitor_every_n_epochs=100",
              "--data.augment.intensity_scale=0.2", "--data.augment.noise_std=0.05")
    straight = PretrainCLI(args=_args("mae3d_tiny.yaml", tmp_path / "a", data_dirs, *common))
    assert straight.summary["global_step"] == 9

    crashed = PretrainCLI(args=_args("mae3d_tiny.yaml", tmp_path / "b", data_dirs, *common), run=False)
    crashed.trainer.callbacks.append(Crash(after=4))
    with pytest.raises(RuntimeError, match="simulated kill"):
        crashed.fit()
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4 and state["callbacks"]["medssl_resume"]["batches"] == 1

    resumed = PretrainCLI(args=_args("mae3d_tiny.yaml", tmp_path / "b", data_dirs, *common, "--resume", "last"))
    assert resumed.summary["global_step"] == 9 and resumed.summary["resumed_from"].endswith("last.ckpt")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    opt_a = straight.trainer.optimizers[0].state_dict()["state"]
    opt_b = resumed.trainer.optimizers[0].state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)


def test_resume_auto_starts_fresh_without_checkpoint(tmp_path, data_dirs):
    cli = PretrainCLI(args=_args("mae3d_tiny.yaml", tmp_path / "r", data_dirs, "--trainer.max_epochs=1",
                                 "--resume", "auto", "--validate_first=false"))
    assert cli.summary["resumed_from"] is None
    with pytest.raises(FileNotFoundError):
        PretrainCLI(args=_args("mae3d_tiny.yaml", tmp_path / "empty", data_dirs, "--resume", "last"))


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path, data_dirs):
    """The unchanged command runs as 2 DDP processes (gloo on CPU); every rank sees its own shard."""
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "medssl.cli", "pretrain",
           *_args("mae3d_tiny.yaml", run, data_dirs, "--trainer.strategy=ddp", "--trainer.devices=2",
                  "--trainer.max_epochs=2", "--data.batch_size=1")]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 4  # 3 training scans -> 2 per rank (padded) -> 2 steps per epoch
    card = json.loads((run / "encoder.json").read_text())
    assert card["training"]["world_size"] == 2


def test_readme_main_job_pretrains_from_the_indexed_dicom_archive(tmp_path, monkeypatch):
    """The README chain: phantoms as DICOM -> index -> MAE through the DICOM reader and cache (demo config)."""
    from medssl.cli import main as medssl_main

    monkeypatch.chdir(tmp_path)
    assert medssl_main(["phantoms", "demo", "--shape", "40", "40", "32"]) == 0
    assert medssl_main(["index", "demo/dicom", "--out", "demo/index", "--quiet"]) == 0
    cli = PretrainCLI(args=["--config", str(CONFIGS / "mae3d_demo.yaml"), "--run_dir", "demo/mae3d",
                            "--trainer.max_epochs=1"])
    card = json.loads((tmp_path / "demo/mae3d/encoder.json").read_text())
    assert card["training"]["data"]["source"] == "ArchiveIndex" and card["training"]["data"]["scans"] == 4
    assert cli.summary["global_step"] == 2
    text = json.dumps(card) + (tmp_path / "demo/mae3d/config.yaml").read_text()
    assert "PHANTOM" not in text and "MEDSSL-" not in text  # no patient name / ID from the DICOM headers
