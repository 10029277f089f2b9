"""Every pretraining config parses against the typed signatures (realistic GPU configs are validated, not run)."""
from __future__ import annotations

import contextlib
import io

import pytest
import yaml

from medssl.training.cli import PretrainCLI
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))
#: complete recipes for one real dataset (the medmnist/ folder holds overlays, composed in their own test)
DATASET_CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*/*.yaml"))
DATASET_CONFIGS = [p for p in DATASET_CONFIGS if p.parent.name != "medmnist"]


def test_there_is_a_tiny_and_a_realistic_config_per_method():
    names = {p.stem for p in CONFIGS}
    for method in ("mae3d", "mae2d", "simmim3d"):
        assert {method, f"{method}_tiny"} <= names
    for method in ("simclr", "moco", "byol", "simsiam", "dino", "rotation", "jigsaw", "genesis", "autoencoder", "cpc", "swav"):
        assert any(n.startswith(method) and n.endswith("_tiny") for n in names), method
        assert f"{method}3d" in names, method  # the realistic GPU recipe


MEDMNIST = REPO / "configs" / "pretrain" / "medmnist"


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "simsiam", "dino"])
@pytest.mark.parametrize("dataset", ["pneumonia2d_cpu", "adrenal3d_cpu"])
def test_medmnist_overlays_compose(method, dataset):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(MEDMNIST / f"{method}.yaml"), "--config", str(MEDMNIST / f"{dataset}.yaml"),
                          "--print_config"])
    assert exit_info.value.code == 0
    resolved = out.getvalue()
    assert f"medssl.ssl.{method}." in resolved and "OnlineProbe" in resolved and "encoder_kwargs" in resolved


@pytest.mark.parametrize("config", CONFIGS + DATASET_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses(config):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    resolved = out.getvalue()
    assert "class_path: medssl.ssl." in resolved and "source:" in resolved


def test_hippocampus_genesis_pretrains_the_segmenters_decoder():
    # the protocol's 'whole' method needs the decoder exported: the recipe must build MONAI BasicUNet's decoder
    from medssl.models.unet import BasicUNetDecoder
    from medssl.ssl.genesis import ModelsGenesis

    config = yaml.safe_load((REPO / "configs/pretrain/hippocampus/genesis_basicunet_cpu.yaml").read_text())
    args = {k: v for k, v in config["model"]["init_args"].items() if k != "optim"}
    assert args["decoder"] == "basicunet"
    assert isinstance(ModelsGenesis(**args).dense_decoder, BasicUNetDecoder)
