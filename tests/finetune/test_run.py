"""medssl finetune: one run from a YAML config to a checkpoint that `medssl predict` uses, on tiny generated data."""
from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from medssl.cli import main
from medssl.finetune.protocol import ProtocolConfigError
from medssl.finetune.run import run_finetune
from medssl.finetune.run_config import FinetuneConfig
from medssl.finetune.seg_options import SEG_OPTION_FIELDS
from medssl.finetune.seg_protocol import SegProtocolConfig
from medssl.models.hub import read_card
from tests.finetune.conftest import TINY_RESNET, export_tiny_basicunet, write_box_cubes

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
RUN_FILES = ("checkpoints/best.ckpt", "checkpoints/config.yaml", "config.yaml", "metrics.json", "metrics.csv",
             "training_curves.png")


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> tuple[Path, dict]:
    """Six CT-like cubes with a bright box (label 1), a tiny exported BasicUNet card, and a run YAML for them."""
    root = tmp_path_factory.mktemp("finetune_run")
    write_box_cubes(root)
    export_tiny_basicunet(root / "enc")
    cfg = {"task": "segmentation", "images": str(root / "img" / "*.nii.gz"), "labels": str(root / "lab" / "*.nii.gz"),
           "label_names": ["background", "box"], "name": "cubes", "split_file": str(root / "split.json"),
           "n_val": 1, "n_test": 2, "encoder": None, "roi_size": [32, 16, 16], "epochs": 2, "batch_size": 2,
           "lr": "1e-2"}
    return root, cfg


def test_segmentation_run_then_predict_on_the_input_grid(cubes, tmp_path, one_thread):
    root, cfg = cubes
    yml = tmp_path / "seg.yaml"
    yml.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    card = root / "enc" / "encoder.json"
    args = ["finetune", "--config", str(yml), "--encoder", str(card), "--run_dir", str(run), "--quiet"]
    assert main(args) == 0
    assert all((run / f).is_file() for f in RUN_FILES)
    assert (run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    resolved = FinetuneConfig.from_yaml(run / "config.yaml")
    assert resolved == FinetuneConfig.from_yaml(yml, encoder=str(card)) and resolved.lr == 0.01
    assert (run / "checkpoints" / "config.yaml").read_text() == (run / "config.yaml").read_text()
    out = json.loads((run / "metrics.json").read_text())
    split = json.loads((root / "split.json").read_text())  # drawn and recorded by the run
    assert out["case_split"] == split and out["labelled_cases"] == split["train"] and out["n_train"] == 3
    assert out["init"] == "pretrained" and out["encoder_sha256"] == read_card(card)[0]["weights"]["sha256"]
    assert out["load_report"]["matched"] > 0 and out["checkpoint"] == "checkpoints/best.ckpt"
    assert 0 <= out["metrics"]["dice"]["box"] <= 1 and out["best_epoch"] in (0, 1) and out["wall_s"] > 0
    assert out["config"] == resolved.to_dict()
    assert main(args) == 2  # the run folder is taken: refused, not mixed

    test_dir = tmp_path / "test_images"
    test_dir.mkdir()
    for case in split["test"]:
        shutil.copy(root / "img" / f"{case}.nii.gz", test_dir)
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "best.ckpt"), str(test_dir), str(pred),
                 "--quiet"]) == 0
    for case in split["test"]:
        source, seg = nib.load(test_dir / f"{case}.nii.gz"), nib.load(pred / f"{case}_seg.nii.gz")
        assert seg.shape == source.shape and np.allclose(seg.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def test_classification_run_with_an_encoder_and_from_scratch(fake_npz, tiny_card, tmp_path, one_thread):
    base = {"task": "classification", "path": str(fake_npz), "label_count": 30, "epochs": 2, "batch_size": 16,
            "lr": 0.003, "patience": None}
    yml = tmp_path / "cls.yaml"
    yml.write_text(yaml.safe_dump(base))
    run = tmp_path / "pretrained"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["finetune", "--config", str(yml), "--encoder", str(tiny_card), "--run_dir", str(run),
                     "--quiet"]) == 0
    assert not [w for w in caught if "LeafSpec" in str(w.message)]  # Lightning's deprecation noise is silenced
    assert all((run / f).is_file() for f in RUN_FILES)
    out = json.loads((run / "metrics.json").read_text())
    assert out["init"] == "pretrained" and out["encoder_sha256"] and out["split"] == "test"
    assert out["subset"]["n_labelled"] == out["n_train"] == 30 and len(out["subset"]["indices"]) == 30
    assert set(out["metrics"]) == {"accuracy", "balanced_accuracy", "auroc"} and out["data"]["num_classes"] == 2
    assert FinetuneConfig.from_yaml(run / "config.yaml").spatial_dims == 2  # resolved from the file
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "best.ckpt"), str(fake_npz), str(pred),
                 "--split", "test", "--quiet"]) == 0
    with open(pred / "probabilities.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 30

    scratch = FinetuneConfig.from_dict({**base, "label_count": None, "epochs": 1, "patience": 3, "augment": True,
                                        "select": "last", "ema_decay": 0.5, "encoder_lr_scale": 0.5,
                                        "architecture": {"name": "resnet", "kwargs": TINY_RESNET}})
    out = run_finetune(scratch, tmp_path / "scratch", progress=False)
    assert out["init"] == "scratch" and out["encoder_sha256"] is None and out["load_report"] is None
    assert out["subset"] is None and out["n_train"] == 60
    assert (out["select"], out["ema_decay"], out["encoder_lr_scale"]) == ("last", 0.5, 0.5)
    assert json.loads((tmp_path / "scratch" / "metrics.json").read_text())["metrics"] == pytest.approx(
        out["metrics"], nan_ok=True)


@pytest.mark.parametrize("change, field", [
    ({"bogus": 1}, "bogus"),
    ({"task": "detection"}, "task"),
    ({"roi_size": [32, 32]}, "roi_size"),  # a segmentation field in a classification config
    ({"flip_axes": [0]}, "flip_axes"),
    ({"lr": -1.0}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"mode": "linear", "encoder": None}, "mode"),
    ({"encoder": None}, "architecture"),
    ({"label_fraction": 1.5}, "label_fraction"),
    ({"label_fraction": 0.5, "label_count": 3}, "label_count"),
    ({"patience": 0}, "patience"),
    ({"augment": "yes"}, "augment"),
    ({"select": "median"}, "select"),
    ({"encoder_lr_scale": 0}, "encoder_lr_scale"),
    ({"ema_decay": 1}, "ema_decay"),
    ({"transfer": "whole"}, "transfer"),  # whole-network transfer is segmentation-only
])
def test_config_errors_name_the_file_and_field(change, field, tmp_path):
    yml = tmp_path / "bad.yaml"
    yml.write_text(yaml.safe_dump({"task": "classification", "path": "x.npz", "encoder": "x/encoder.json", **change}))
    with pytest.raises(ProtocolConfigError, match=f"field '{field}'") as info:
        FinetuneConfig.from_yaml(yml)
    assert str(yml) in str(info.value)


def test_segmentation_config_errors_and_exit_codes(cubes, tmp_path):
    root, cfg = cubes
    for change, field in [({"roi_size": None}, "roi_size"), ({"root": "/data/msd"}, "root"),
                          ({"label_names": None}, "label_names"), ({"path": "x.npz"}, "path"),
                          ({"mode": "linear"}, "mode"), ({"n_val": -1}, "n_val"),
                          ({"flip_axes": [0, 3]}, "flip_axes"), ({"flip_axes": ["0"]}, "flip_axes"),
                          ({"use_masks": "yes"}, "use_masks"), ({"region_training": "softmax"}, "region_training"),
                          ({"regions": {"WT": "all"}}, "regions"), ({"adapt_channels": "mean"}, "adapt_channels"),
                          ({"transfer": "decoder"}, "transfer"),
                          ({"encoder": None}, "architecture")]:  # from scratch needs architecture and plan
        with pytest.raises(ProtocolConfigError, match=f"field '{field}'"):
            FinetuneConfig.from_dict({**cfg, "encoder": "x/encoder.json", **change})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "epochs": 0}))
    assert main(["finetune", "--config", str(bad), "--encoder", "x/encoder.json", "--run_dir", str(tmp_path)]) == 2
    missing = tmp_path / "missing.yaml"  # valid config, data that is not there: a data error
    missing.write_text(yaml.safe_dump({**cfg, "images": str(tmp_path / "none" / "*.nii.gz")}))
    assert main(["finetune", "--config", str(missing), "--encoder", str(root / "enc"), "--run_dir",
                 str(tmp_path / "r"), "--quiet"]) == 3
    with pytest.raises(ProtocolConfigError, match="field 'transfer'.*needs an encoder card"):
        FinetuneConfig.from_dict({**cfg, "transfer": "whole", "architecture": {"name": "basicunet"}, "plan": {}})
    whole = tmp_path / "whole.yaml"  # passed on to fit_segmenter: an encoder-only card is refused (a data error)
    whole.write_text(yaml.safe_dump({**cfg, "transfer": "whole"}))
    assert FinetuneConfig.from_yaml(whole, encoder="x/encoder.json").transfer == "whole"
    assert main(["finetune", "--config", str(whole), "--encoder", str(root / "enc"), "--run_dir",
                 str(tmp_path / "w"), "--quiet"]) == 3


def test_repo_finetune_configs_parse():
    files = sorted(REPO_CONFIGS.glob("*_finetune*.yaml")) + [REPO_CONFIGS / "hippocampus_unetr_gpu.yaml"]
    assert len(files) >= 4
    tasks = {}
    for file in files:
        cfg = FinetuneConfig.from_yaml(file, encoder="x/encoder.json")
        assert cfg.encoder == "x/encoder.json" and cfg.mode == "finetune"
        tasks[file.stem] = cfg.task
    assert tasks["hippocampus_finetune"] == tasks["hippocampus_unetr_gpu"] == "segmentation"
    assert tasks["pneumoniamnist_finetune"] == tasks["adrenalmnist3d_finetune"] == "classification"
    gpu = FinetuneConfig.from_yaml(REPO_CONFIGS / "hippocampus_unetr_gpu.yaml", encoder="x/encoder.json")
    assert gpu.accelerator == "gpu" and gpu.roi_size == [96, 96, 96] and gpu.override_plan
    with pytest.raises(ProtocolConfigError, match="field 'architecture'"):  # encoder left null on purpose
        FinetuneConfig.from_yaml(REPO_CONFIGS / "hippocampus_finetune.yaml")


#: one non-default value per shared segmentation option (keys must match SEG_OPTION_FIELDS: a new option needs one)
SEG_OPTION_VALUES = {"regions": {"WT": [1, 2]}, "region_labels": {"WT": 1}, "region_training": "classes",
                     "channel_names": ["T1"], "adapt_channels": "average", "masks": "masks/*.nii.gz",
                     "use_masks": False, "flip_axes": [0], "class_ratios": [1.0, 1.0, 2.0],
                     "postprocess": "auto"}


def test_shared_segmentation_options_in_both_configs(cubes, tmp_path):
    """The options are declared once (SegOptions): both configs accept them, a classification run refuses every
    one of them by name, and the written config round-trips with the task first and the options last."""
    _, cfg = cubes
    assert set(SEG_OPTION_VALUES) == set(SEG_OPTION_FIELDS)
    cls = {"task": "classification", "path": "x.npz", "encoder": "x/encoder.json"}
    for name, value in SEG_OPTION_VALUES.items():
        assert getattr(SegProtocolConfig(**{name: value}), name) == value
        with pytest.raises(ProtocolConfigError, match=f"field '{name}': does not apply to task 'classification'"):
            FinetuneConfig.from_dict({**cls, name: value})
    seg = FinetuneConfig.from_dict({**cfg, "encoder": "x/encoder.json", **SEG_OPTION_VALUES})
    data = seg.to_dict()
    assert next(iter(data)) == "task" and tuple(data)[-len(SEG_OPTION_FIELDS):] == SEG_OPTION_FIELDS
    yml = tmp_path / "resolved.yaml"
    yml.write_text(yaml.safe_dump(data, sort_keys=False))
    assert FinetuneConfig.from_yaml(yml) == seg


def test_transfer_choices_agree_with_the_finetuner():
    from medssl.finetune import run_config, segmentation

    assert run_config.TRANSFERS == segmentation.TRANSFERS == ("encoder", "whole")
