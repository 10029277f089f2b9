"""The few-label segmentation protocol end to end on generated cubes and a tiny exported BasicUNet encoder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medssl.cli import main
from medssl.finetune.protocol import ProtocolConfigError
from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol
from medssl.models.dense_transfer import MissingDecoderError
from tests.finetune.conftest import export_tiny_basicunet, export_tiny_genesis_basicunet, write_box_cubes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("segproto")
    write_box_cubes(root)
    export_tiny_basicunet(root / "enc")
    cfg = {"task": "segmentation", "images": str(root / "img" / "*.nii.gz"), "labels": str(root / "lab" / "*.nii.gz"),
           "label_names": ["background", "box"], "dataset": "cubes", "split_file": str(root / "split.json"),
           "n_val": 1, "n_test": 2, "encoder": str(root / "enc" / "encoder.json"), "counts": [1, 2], "seeds": [0],
           "methods": ["finetune", "frozen", "scratch"], "roi_size": [32, 16, 16], "epochs": 2, "batch_size": 2,
           "cache_dir": str(root / "cache")}
    return root, cfg


def test_protocol_records_split_and_reports(setup, tmp_path, one_thread):
    root, cfg = setup
    records = run_seg_protocol(SegProtocolConfig(**cfg).validate(), tmp_path, progress=False)
    assert len(records) == 2 * 3 * 3  # counts x methods x (dice, hd95, dice_box)
    assert {r["metric"] for r in records} == {"dice", "hd95", "dice_box"}
    assert all(r["split"] == "test" and r["per_class"] is None for r in records)  # the keys of every protocol
    assert all((r["encoder_sha256"] is None) == (r["method"] == "scratch") for r in records)
    out = json.loads((tmp_path / "label_efficiency_cubes.json").read_text())
    split = json.loads((root / "split.json").read_text())
    assert out["complete"] and out["case_split"] == split and len(split["test"]) == 2 and len(split["val"]) == 1
    runs = {(r["method"], r["count"]): r for r in out["runs"]}
    one, two = runs[("finetune", 1)]["labelled_cases"], runs[("finetune", 2)]["labelled_cases"]
    assert set(one) <= set(two) and not set(two) & (set(split["val"]) | set(split["test"]))
    assert runs[("frozen", 1)]["freeze_encoder_epochs"] >= runs[("frozen", 1)]["max_epochs"]
    assert runs[("scratch", 2)]["load_report"] is None and runs[("finetune", 2)]["load_report"]["matched"] > 0
    md = (tmp_path / "label_efficiency_cubes.md").read_text()
    assert "| scratch | 2 cases | 2 | 1 |" in md and "mean Dice" in md
    assert (tmp_path / "label_efficiency_cubes.png").read_bytes()[:4] == b"\x89PNG"
    # the written split is reused as is (a second run cannot silently draw another one)
    split["test"], split["train"] = split["train"][:2], split["test"] + split["train"][2:]
    (root / "split.json").write_text(json.dumps(split))
    cfg2 = SegProtocolConfig(**{**cfg, "methods": ["scratch"], "counts": [1], "epochs": 1}).validate()
    run_seg_protocol(cfg2, tmp_path / "again", progress=False)
    again = json.loads((tmp_path / "again" / "label_efficiency_cubes.json").read_text())
    assert again["case_split"]["test"] == split["test"]


def test_whole_network_method_against_encoder_only(setup, tmp_path, one_thread):
    # 'whole' and 'finetune' on the same subsets and seeds; only 'whole' loads the pretrained decoder
    root, cfg = setup
    card = export_tiny_genesis_basicunet(tmp_path / "genesis")
    whole = SegProtocolConfig(**{**cfg, "encoder": str(card), "methods": ["finetune", "whole"], "counts": [1],
                                 "epochs": 1, "plot": False}).validate()
    run_seg_protocol(whole, tmp_path / "out", progress=False)
    out = json.loads((tmp_path / "out" / "label_efficiency_cubes.json").read_text())
    runs = {r["method"]: r for r in out["runs"]}
    assert runs["whole"]["labelled_cases"] == runs["finetune"]["labelled_cases"]
    assert (runs["whole"]["transfer"], runs["finetune"]["transfer"]) == ("whole", "encoder")
    keys = runs["whole"]["load_report"]["keys"]
    assert keys["decoder"] > 0 and keys["reinitialised"] == 2
    assert runs["finetune"]["load_report"]["keys"] == {"encoder": keys["encoder"], "decoder": 0,
                                                       "reinitialised": keys["decoder"] + 2}
    assert "| whole | 1 case" in (tmp_path / "out" / "label_efficiency_cubes.md").read_text()
    # a card without a decoder is refused before any run (not after the other methods)
    refused = SegProtocolConfig(**{**cfg, "methods": ["scratch", "whole"]}).validate()
    with pytest.raises(MissingDecoderError, match="holds no decoder"):
        run_seg_protocol(refused, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused" / "label_efficiency_cubes.json").exists()
    # class_ratios of the wrong length: refused against the label names before any run, not inside one
    wrong = SegProtocolConfig(**{**cfg, "methods": ["scratch"], "class_ratios": [1, 1, 1]}).validate()
    with pytest.raises(ProtocolConfigError, match="'class_ratios'.*background"):
        run_seg_protocol(wrong, tmp_path / "wrong", progress=False)
    assert not (tmp_path / "wrong" / "label_efficiency_cubes.json").exists()


def test_config_errors_name_the_field(setup):
    _, cfg = setup
    with pytest.raises(ProtocolConfigError, match="'encoder'"):
        SegProtocolConfig(**{**cfg, "encoder": None}).validate()
    with pytest.raises(ProtocolConfigError, match="'methods'"):
        SegProtocolConfig(**{**cfg, "methods": ["knn"]}).validate()
    with pytest.raises(ProtocolConfigError, match="'roi_size'"):
        SegProtocolConfig(**{**cfg, "roi_size": [32, 16]}).validate()
    for axes in ([3], [0, 0], "0"):
        with pytest.raises(ProtocolConfigError, match="'flip_axes'"):
            SegProtocolConfig(**{**cfg, "flip_axes": axes}).validate()
    assert SegProtocolConfig(**{**cfg, "flip_axes": [0]}).validate().flip_axes == [0]
    for change, name in [({"use_masks": "no"}, "use_masks"), ({"region_training": "softmax"}, "region_training"),
                         ({"adapt_channels": "mean"}, "adapt_channels"), ({"class_ratios": [1]}, "class_ratios"),
                         ({"class_ratios": [1, -1]}, "class_ratios"), ({"postprocess": "largest"}, "postprocess")]:
        with pytest.raises(ProtocolConfigError, match=f"'{name}'"):
            SegProtocolConfig(**{**cfg, **change}).validate()


def test_cli_dispatches_segmentation_protocols(setup, tmp_path, one_thread):
    _, cfg = setup
    yml = tmp_path / "p.yaml"
    yml.write_text(yaml.safe_dump({**cfg, "split_file": str(tmp_path / "split.json")}))
    assert main(["evaluate", "--protocol", str(yml), "--methods", "scratch", "--counts", "1", "--epochs", "1",
                 "--workers", "1", "--out", str(tmp_path / "out"), "--quiet", "--no-plot"]) == 0
    out = json.loads((tmp_path / "out" / "label_efficiency_cubes.json").read_text())
    assert {r["method"] for r in out["records"]} == {"scratch"} and out["config"]["epochs"] == 1
    assert out["config"]["workers"] == 1
    assert main(["evaluate", "--protocol", str(yml), "--max-eval", "5", "--out", str(tmp_path / "x")]) == 2
    assert main(["evaluate", "--protocol", str(yml), "--per-class", "2", "--out", str(tmp_path / "x")]) == 2
    assert Path(REPO_CONFIG).is_file()


REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "hippocampus_protocol.yaml"


def test_repo_hippocampus_config_parses():
    cfg = SegProtocolConfig.from_yaml(REPO_CONFIG, encoder="x/encoder.json")
    assert cfg.counts == [5, 20] and cfg.methods == ["finetune", "scratch"] and cfg.lr == 0.002
    assert cfg.flip_axes == [0]  # RAS left-right only: the labels are anterior / posterior parts
    tiny = SegProtocolConfig.from_yaml(REPO_CONFIG.with_name("hippocampus_tiny.yaml"), encoder="x/encoder.json")
    assert tiny.epochs == 1


def test_postprocessing_is_chosen_on_validation_and_travels_with_the_checkpoint(setup, tmp_path, one_thread):
    """postprocess: auto scores every method on the validation case and keeps the best ('none' on ties); a fixed
    method is applied to the test maps and written into best.ckpt, which medssl predict's loader applies."""
    import numpy as np
    import torch
    from scipy import ndimage

    from medssl.finetune.postprocess import POSTPROCESS
    from medssl.finetune.predict import load_checkpoint
    from medssl.finetune.seg_data import SegmentationVolumes

    _, cfg = setup
    base = {**cfg, "methods": ["scratch"], "counts": [1], "epochs": 1, "class_ratios": [1, 3],
            "keep_checkpoints": True, "plot": False}
    run_seg_protocol(SegProtocolConfig(**{**base, "postprocess": "auto"}).validate(), tmp_path / "auto",
                     progress=False)
    run = json.loads((tmp_path / "auto" / "label_efficiency_cubes.json").read_text())["runs"][0]
    post = run["postprocess"]
    assert set(post["val_dice"]) == set(POSTPROCESS) and post["n_cases"] == 1 and run["class_ratios"] == [1, 3]
    best = max(post["val_dice"].values())
    assert post["val_dice"][post["chosen"]] == best
    assert post["chosen"] == "none" or best > post["val_dice"]["none"]
    assert post["val_dice"]["none"] == pytest.approx(run["best_val"]["dice"])  # scored as validation scores
    ckpt = tmp_path / "auto" / "runs" / "scratch_n1_seed0" / "checkpoints" / "best.ckpt"
    assert load_checkpoint(ckpt).postprocess == post["chosen"]

    run_seg_protocol(SegProtocolConfig(**{**base, "postprocess": "largest_foreground"}).validate(),
                     tmp_path / "fixed", progress=False)
    run = json.loads((tmp_path / "fixed" / "label_efficiency_cubes.json").read_text())["runs"][0]
    assert run["postprocess"]["chosen"] == "largest_foreground" and run["postprocess"]["val_dice"] is None
    model = load_checkpoint(tmp_path / "fixed" / "runs" / "scratch_n1_seed0" / "checkpoints" / "best.ckpt")
    assert model.postprocess == "largest_foreground"
    cases = json.loads((tmp_path / "fixed" / "label_efficiency_cubes.json").read_text())
    from medssl.data.cache import PreprocessCache
    from medssl.data.plan import PreprocessPlan
    from medssl.finetune.seg_protocol import task_cases
    from medssl.finetune.seg_cases import select_cases

    test = select_cases(task_cases(SegProtocolConfig(**base))[0], cases["case_split"]["test"])
    volumes = SegmentationVolumes(test, PreprocessCache(cfg["cache_dir"], PreprocessPlan.from_dict(model.hparams["plan"])))
    for i in range(len(volumes)):
        pred = model.predict_volume(volumes[i]["image"]).numpy()
        assert ndimage.label(pred > 0, structure=np.ones((3, 3, 3)))[1] <= 1
        assert torch.is_tensor(model.predict_volume(volumes[i]["image"]))
