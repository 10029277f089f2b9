"""CPC and SwAV through the pretraining CLI: the tiny configs run end to end and export their encoders, resume is
bitwise exact (CPC's seeded per-patch jitter, SwAV's queue and prototype renormalisation), and the MedMNIST method
files compose with both data overlays."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from medssl.models.hub import load_encoder
from medssl.training.cli import PretrainCLI
from tests.training.phantom_runs import CONFIGS, assert_exact_resume, pretrain_args

TINY = ["cpc2d_tiny.yaml", "swav3d_tiny.yaml"]


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpc_swav_data")
    return root / "phantoms", root / "cache"


@pytest.mark.parametrize("config, metric", [("cpc2d_tiny.yaml", "cpc_accuracy"),
                                            ("swav3d_tiny.yaml", "prototypes_used")])
def test_tiny_config_runs_end_to_end(config, metric, tmp_path, data_dirs, one_thread):
    run = tmp_path / "run"
    cli = PretrainCLI(args=pretrain_args(config, run, data_dirs))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] >= 3 and summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    for name in ("config.yaml", "checkpoints/last.ckpt", "encoder.json", "encoder.safetensors", "metrics.csv"):
        assert (run / name).is_file(), name
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert f"train/{metric}_step" in header and "train/embedding_rank_step" in header
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == cli.model.method_name
    report = load_encoder(run / "encoder.json")
    assert not report.missing and not report.unexpected
    exported = cli.model.encoder_module.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in report.module.state_dict().items())


@pytest.mark.parametrize("config", TINY)
def test_exact_resume(config, tmp_path, data_dirs, one_thread):
    common = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--data.batch_size=2",
              "--checkpoint_every_n_steps=1", "--validate_first=false", "--trainer.deterministic=true",
              "--trainer.limit_val_batches=0")
    b = assert_exact_resume(config, tmp_path, data_dirs, common, crash_after=4, total_steps=6)
    if config.startswith("swav"):
        assert int(b["queue_rows"]) == 12 and "queues.0.queue" in b


@pytest.mark.parametrize("method", ["cpc", "swav"])
@pytest.mark.parametrize("dataset", ["pneumonia2d_cpu", "adrenal3d_cpu"])
def test_medmnist_overlays_compose(method, dataset):
    folder = CONFIGS / "medmnist"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(folder / f"{method}.yaml"), "--config", str(folder / f"{dataset}.yaml"),
                          "--print_config"])
    assert exit_info.value.code == 0
    assert f"medssl.ssl.{method}." in out.getvalue() and "encoder_kwargs" in out.getvalue()
