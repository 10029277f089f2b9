"""Rotation prediction and jigsaw through the pretraining CLI: the tiny configs run end to end without views, log
their accuracy, export an encoder that loads back exactly; jigsaw resumes bitwise exactly (seeded tiles and
permutations); the MedMNIST method files compose with the data overlays."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from medssl.models.hub import load_encoder
from medssl.training.cli import PretrainCLI
from tests.training.phantom_runs import CONFIGS, assert_exact_resume, pretrain_args

TINY = {"rotation2d_tiny.yaml": "rotation", "jigsaw3d_tiny.yaml": "jigsaw"}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretext_data")
    return root / "phantoms", root / "cache"


@pytest.mark.parametrize("config", list(TINY))
def test_tiny_config_runs_end_to_end(config, tmp_path, data_dirs, one_thread):
    run = tmp_path / "run"
    cli = PretrainCLI(args=pretrain_args(config, run, data_dirs))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] >= 3 and summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "train/accuracy_step" in header and "val/accuracy" in header
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == TINY[config] == cli.model.method_name
    report = load_encoder(run / "encoder.json")
    assert not report.missing and not report.unexpected
    exported = cli.model.encoder_module.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in report.module.state_dict().items())


def test_jigsaw_exact_resume(tmp_path, data_dirs, one_thread):
    common = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--checkpoint_every_n_steps=1",
              "--validate_first=false", "--trainer.limit_val_batches=0", "--trainer.deterministic=true")
    assert_exact_resume("jigsaw3d_tiny.yaml", tmp_path, data_dirs, common, crash_after=3, total_steps=4)


@pytest.mark.parametrize("method, cls", [("rotation", "RotationPrediction"), ("jigsaw", "Jigsaw")])
@pytest.mark.parametrize("dataset", ["pneumonia2d_cpu", "adrenal3d_cpu"])
def test_medmnist_method_files_compose(method, cls, dataset):
    folder = CONFIGS / "medmnist"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(folder / f"{method}.yaml"), "--config", str(folder / f"{dataset}.yaml"),
                          "--data.views=null", "--print_config"])
    assert exit_info.value.code == 0
    resolved = out.getvalue()
    assert f"medssl.ssl.{method}.{cls}" in resolved and "OnlineProbe" in resolved and "encoder_kwargs" in resolved
