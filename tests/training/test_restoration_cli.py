"""Models Genesis and the denoising autoencoder through the pretraining CLI: the tiny configs run end to end, write
input / transformed / restored grids and export the encoder alone (with ``decoder: basicunet`` also the decoder, which
then loads into a segmentation BasicUNet); resume is bitwise exact (all corruption randomness comes from the
per-step generator); the MedMNIST method files compose with both data overlays."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from medssl.models.dense_transfer import load_whole_network
from medssl.models.hub import load_encoder
from medssl.models.segmenter import build_segmenter
from medssl.training.cli import PretrainCLI
from tests.training.phantom_runs import CONFIGS, assert_exact_resume, pretrain_args

TINY = ["genesis3d_tiny.yaml", "autoencoder2d_tiny.yaml"]


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("restoration_data")
    return root / "phantoms", root / "cache"


@pytest.mark.parametrize("config", TINY)
def test_tiny_config_runs_end_to_end(config, tmp_path, data_dirs, one_thread):
    run = tmp_path / "run"
    cli = PretrainCLI(args=pretrain_args(config, run, data_dirs))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] >= 3 and summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    for name in ("config.yaml", "checkpoints/last.ckpt", "encoder.json", "encoder.safetensors", "metrics.csv",
                 "loss_curves.png", "reconstructions/final.png"):
        assert (run / name).is_file(), name
    assert "train/corrupted_mse_step" in (run / "metrics.csv").read_text().splitlines()[0]
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == cli.model.method_name
    assert "decoder" not in card and not (run / "decoder.safetensors").exists()  # the default decoder is discarded
    report = load_encoder(run / "encoder.json")
    assert not report.missing and not report.unexpected
    exported = cli.model.encoder_module.state_dict()
    assert exported.keys() == report.module.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in report.module.state_dict().items())


def test_genesis_with_the_basicunet_decoder_exports_it_for_whole_transfer(tmp_path, data_dirs, one_thread):
    run = tmp_path / "run"
    unet = '{in_channels: 1, spatial_dims: 3, features: [4, 4, 8, 8, 16, 4], norm: batch}'
    cli = PretrainCLI(args=pretrain_args(
        "genesis3d_tiny.yaml", run, data_dirs, "--model.init_args.encoder=basicunet",
        f"--model.init_args.encoder_kwargs={unet}", "--model.init_args.decoder=basicunet",
        "--data.patch_size=[32,32,32]", "--trainer.limit_train_batches=2"))
    card = json.loads((run / "encoder.json").read_text())
    record = card["decoder"]
    assert record["file"] == "decoder.safetensors" and (run / "decoder.safetensors").is_file()
    assert record["network"] == "BasicUNet" and record["upsample"] == "deconv" and record["out_activation"] == "sigmoid"
    net = build_segmenter(card["architecture"], num_classes=2, spatial_dims=3, in_channels=1, img_size=32)
    report = load_whole_network(run / "encoder.json", into=net)
    decoder = cli.model.dense_decoder.state_dict()
    assert report.key_sources()["decoder"] == len(decoder) - 2 == record["num_tensors"] - 2
    assert all(torch.equal(net.state_dict()[k], v) for k, v in decoder.items() if not k.startswith("final_conv."))


def test_genesis_exact_resume(tmp_path, data_dirs, one_thread):
    common = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--checkpoint_every_n_steps=1",
              "--validate_first=false", "--trainer.deterministic=true")
    assert_exact_resume("genesis3d_tiny.yaml", tmp_path, data_dirs, common, crash_after=4, total_steps=6)


@pytest.mark.parametrize("method", ["genesis", "autoencoder"])
@pytest.mark.parametrize("dataset", ["pneumonia2d_cpu", "adrenal3d_cpu"])
def test_medmnist_method_files_compose(method, dataset):
    medmnist = CONFIGS / "medmnist"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(medmnist / f"{method}.yaml"), "--config", str(medmnist / f"{dataset}.yaml"),
                          "--data.views=null", "--print_config"])
    assert exit_info.value.code == 0
    resolved = out.getvalue()
    assert f"medssl.ssl.{method}." in resolved and "OnlineProbe" in resolved and "encoder_kwargs" in resolved
