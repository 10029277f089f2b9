"""SegmentationFinetuner / train_segmenter / fit_segmenter on tiny exported encoders and trivially separable cubes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.data.cache import PreprocessCache
from medssl.data.nifti import write_nifti
from medssl.data.plan import PreprocessPlan
from medssl.finetune import seg_fit, segmentation
from medssl.finetune.seg_cases import SegmentationCase, SegmentationDataError, cases_from_msd, msd_label_names
from medssl.finetune.seg_data import SegmentationPatches, SegmentationVolumes
from medssl.finetune.segmentation import SegmentationFinetuner, evaluate_segmenter, fit_segmenter, train_segmenter
from medssl.models.dense_transfer import MissingDecoderError, load_decoder_state
from medssl.models.hub import export_encoder, load_encoder_state
from medssl.models.registry import build_encoder
from tests.finetune.conftest import export_tiny_genesis_basicunet

CT = PreprocessPlan(intensity="ct_window")
UNET = {"in_channels": 1, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]}
ROI = (32, 16, 16)


def export(folder: Path, name: str, kwargs: dict, plan: PreprocessPlan = CT) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder(name, kwargs)
    pre = {"kind": "plan", "plan": plan.to_dict(), "fingerprint": plan.fingerprint()}
    export_encoder(encoder, folder, method="test", preprocessing=pre)
    return folder / "encoder.json"


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    return export(tmp_path_factory.mktemp("unet"), "basicunet", UNET)


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> list[SegmentationCase]:
    """Three CT-like volumes (air -800 HU, a +200 HU box labelled 1) at 1.5 x 1.5 x 2 mm: separable by intensity."""
    root, rng, cases = tmp_path_factory.mktemp("cubes"), np.random.default_rng(0), []
    for i in range(3):
        label = np.zeros((24, 24, 16), np.uint8)
        o = rng.integers(2, 10, 3)
        label[o[0]:o[0] + 10, o[1]:o[1] + 10, o[2]:o[2] + 6] = 1
        image = np.where(label > 0, rng.normal(200, 30, label.shape), rng.normal(-800, 30, label.shape))
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        write_nifti(image.astype(np.float32), root / f"cube{i}_0000.nii.gz", affine)
        write_nifti(label, root / f"cube{i}.nii.gz", affine)
        cases.append(SegmentationCase((root / f"cube{i}_0000.nii.gz",), root / f"cube{i}.nii.gz", f"cube{i}"))
    return cases


@pytest.fixture(scope="module")
def data(cubes, tmp_path_factory):
    cache = PreprocessCache(tmp_path_factory.mktemp("cache"), CT)
    return SegmentationPatches(cubes[:2], cache, roi_size=ROI, seed=0), SegmentationVolumes(cubes[:2], cache)


def _encoder_state(module: SegmentationFinetuner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.net.state_dict().items() if k in module.load_report.matched}


def test_pretrained_init_fills_every_encoder_key_and_records_plain_hparams(card):
    module = SegmentationFinetuner(num_classes=2, encoder=str(card), roi_size=ROI)
    state, card_json = load_encoder_state(card)
    assert sorted(module.load_report.matched) == sorted(state) and not module.load_report.missing
    assert module.plan == CT and module.plan_record["source"] == "card"
    hp = module.hparams
    assert (hp["task"], hp["num_classes"], hp["spatial_dims"], hp["in_channels"]) == ("segmentation", 2, 3, 1)
    assert hp["plan"] == CT.to_dict() and hp["label_names"] == ["background", "1"] and hp["roi_size"] == list(ROI)
    assert hp["architecture"] == card_json["architecture"] and hp["network"]["img_size"] == list(ROI)


def test_scratch_never_reads_the_weights(card, monkeypatch):
    monkeypatch.setattr(segmentation, "load_encoder", lambda *a, **k: pytest.fail("scratch read the weights"))
    a = SegmentationFinetuner(num_classes=2, init="scratch", encoder=str(card), roi_size=ROI, seed=1)
    b = SegmentationFinetuner(num_classes=2, init="scratch", architecture={"name": "basicunet", "kwargs": UNET},
                              plan=CT.to_dict(), roi_size=ROI, seed=1)
    assert a.load_report is None and not a.encoder_frozen
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())  # seeded init


def test_dice_ce_training_overfits_two_cubes(card, data, one_thread):
    train, val = data
    module = SegmentationFinetuner(num_classes=2, encoder=str(card), roi_size=ROI, optim={"lr": 3e-2, "warmup": 0})
    start = evaluate_segmenter(module, val)["mean_dice"]
    info = train_segmenter(module, train, val, epochs=60, batch_size=2, seed=0, val_every_n_epochs=30)
    assert [h["epoch"] for h in module.val_history] == [29, 59]
    assert info["best_val"]["dice"] > 0.9 > start + 0.3  # a +1000 HU step is trivially separable
    assert evaluate_segmenter(module, val)["mean_dice"] == pytest.approx(info["best_val"]["dice"])
    pred = module.predict_volume(val[0]["image"])
    assert pred.shape == val[0]["label"].shape[1:] and pred.dtype == torch.int64


def test_freezing_leaves_the_encoder_bit_identical_then_trains_it(card, data, one_thread):
    train, val = data
    module = SegmentationFinetuner(num_classes=2, encoder=str(card), roi_size=ROI, freeze_encoder_epochs=2,
                                   optim={"lr": 1e-2, "warmup": 0})
    start, decoder = _encoder_state(module), module.net.final_conv.weight.detach().clone()
    snapshots, decoders, modes = [], [], []
    module.on_train_epoch_end = lambda: (snapshots.append(_encoder_state(module)),
                                         decoders.append(module.net.final_conv.weight.detach().clone()))
    step = module.training_step

    def spy(*args):
        frozen = {n for n, p in module.net.named_parameters() if not p.requires_grad}
        modes.append((module.net.conv_0.training, frozen))
        return step(*args)

    module.training_step = spy
    train_segmenter(module, train, val, epochs=3, batch_size=2, seed=0, val_every_n_epochs=3)
    for frozen in snapshots[:2]:
        assert all(torch.equal(frozen[k], v) for k, v in start.items())
    assert any(not torch.equal(snapshots[2][k], v) for k, v in start.items())  # thawed in epoch 3
    loaded = {n for n, _ in module.net.named_parameters()} & set(module.load_report.matched)
    assert loaded and modes == [(False, loaded), (False, loaded), (True, set())]  # exactly the loaded parameters,
    # their modules in eval mode while frozen
    assert not torch.equal(decoder, decoders[0])  # the decoder trains while the encoder is frozen


def test_checkpoint_reload_reproduces_predictions(card, data, tmp_path, one_thread):
    train, val = data
    module = SegmentationFinetuner(num_classes=2, encoder=str(card), roi_size=ROI, optim={"lr": 1e-2})
    info = train_segmenter(module, train, val, epochs=2, batch_size=2, seed=0, run_dir=tmp_path / "run")
    ckpt = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["task"] == "segmentation" and ckpt["trained_as"]["plan_record"]["source"] == "card"
    expected = module.predict_volume(val[1]["image"])
    moved = tmp_path / "elsewhere"
    shutil.copytree(card.parent, moved)
    shutil.rmtree(card.parent)  # the checkpoint holds every weight: the card is not needed any more
    try:
        again = SegmentationFinetuner.load_from_checkpoint(info["checkpoint"], map_location="cpu", weights_only=True)
    finally:
        shutil.copytree(moved, card.parent)
    assert torch.equal(again.predict_volume(val[1]["image"]), expected)
    assert again.init == again.hparams["init"] == "pretrained" and again.hparams["encoder"] == str(card)
    assert again.encoder_sha256 == module.encoder_sha256 and again.plan == module.plan


def test_layer_decay_scales_unetr_blocks(card, tmp_path):
    vit = {"in_channels": 1, "spatial_dims": 2, "img_size": 32, "patch_size": 16, "hidden_size": 16, "mlp_dim": 32,
           "num_heads": 2, "num_layers": 12}
    path = export(tmp_path, "vit", vit)
    module = SegmentationFinetuner(num_classes=2, encoder=str(path), spatial_dims=2, roi_size=(32, 32),
                                   layer_decay=0.5, optim={"lr": 1.0})
    lr_of = {id(p): g["lr"] for g in module.param_groups() for p in g["params"]}
    params = dict(module.net.named_parameters())
    for i in (0, 5, 11):
        assert lr_of[id(params[f"vit.blocks.{i}.mlp.linear1.weight"])] == 0.5 ** (12 - i)
    assert lr_of[id(params["vit.patch_embedding.position_embeddings"])] == 0.5 ** 13
    assert lr_of[id(params["vit.norm.weight"])] == lr_of[id(params["out.conv.conv.weight"])] == 1.0
    assert not any(id(p) in lr_of for n, p in params.items() if "norm_cross_attn" in n)
    with pytest.raises(ValueError, match="layer_decay is defined for UNETR"):
        SegmentationFinetuner(num_classes=2, encoder=str(card), roi_size=ROI, layer_decay=0.5)


def test_fit_segmenter_contradictions_name_the_file(card, cubes, tmp_path):
    kwargs = {"num_classes": 2, "roi_size": ROI, "epochs": 1, "cache_dir": tmp_path}
    with pytest.raises(SegmentationDataError, match="card is 3-D but the task is 2-D") as err:
        fit_segmenter(card, None, cubes[:1], cubes[1:2], cubes[2:], **{**kwargs, "roi_size": (32, 32)}, spatial_dims=2)
    assert err.value.files == [str(card)]
    two = export(tmp_path / "two", "basicunet", {**UNET, "in_channels": 2})
    with pytest.raises(SegmentationDataError, match="1 image channel.*expects 2") as err:
        fit_segmenter(two, None, cubes[:1], cubes[1:2], cubes[2:], **kwargs)
    assert err.value.files == [str(cubes[0].image[0]), str(two)]
    with pytest.raises(SegmentationDataError, match="differs from the card's") as err:
        fit_segmenter(card, None, cubes[:1], cubes[1:2], cubes[2:], plan={"intensity": "zscore"}, **kwargs)
    assert err.value.files == [str(card)]
    with pytest.raises(SegmentationDataError, match="in_channels=2 contradicts the card's 1") as err:
        SegmentationFinetuner(num_classes=2, encoder=card, in_channels=2, roi_size=ROI)
    assert err.value.files == [str(card)]
    module = SegmentationFinetuner(num_classes=2, encoder=card, roi_size=ROI)  # a Path: recorded as a str
    assert module.hparams["encoder"] == str(card)


def test_fit_segmenter_stretches_tiny_label_sets_and_reports(card, cubes, tmp_path, one_thread):
    out = fit_segmenter(card, None, cubes[:2], cubes[:2], cubes[2:], num_classes=2, roi_size=ROI, epochs=3,
                        batch_size=2, lr=3e-2, warmup=0.0, min_steps=45, patience=None, seed=0,
                        cache_dir=tmp_path / "cache", freeze_encoder_epochs=1)
    assert (out["max_epochs"], out["val_every_n_epochs"], out["steps_per_epoch"]) == (45, 15, 1)
    assert out["freeze_encoder_epochs"] == 15 and out["epochs_trained"] == 45 and out["best_epoch"] in (14, 29, 44)
    assert out["n_train"] == 2 and out["n_test"] == 1 and out["plan"]["source"] == "card"
    metrics = out["metrics"]
    assert metrics["hd95_unit"] == "mm" and set(metrics["dice"]) == {"1"} and metrics["mean_dice"] > 0.8
    assert out["load_report"]["matched"] == len(load_encoder_state(card)[0])


def test_2d_segmenter_trains_on_slices_and_is_deterministic(cubes, tmp_path, one_thread):
    arch = {"name": "basicunet", "kwargs": {**UNET, "spatial_dims": 2}}
    kwargs = {"num_classes": 2, "spatial_dims": 2, "roi_size": (32, 16), "plan": CT.to_dict(), "epochs": 2,
              "batch_size": 8, "cache_dir": tmp_path, "seed": 3}
    torch.manual_seed(123)
    out = fit_segmenter(None, arch, cubes[:1], cubes[1:2], cubes[2:], **kwargs)
    after = torch.rand(1)
    torch.manual_seed(123)
    again = fit_segmenter(None, arch, cubes[:1], cubes[1:2], cubes[2:], **kwargs)
    assert torch.equal(after, torch.rand(1))  # the caller's random stream is untouched
    assert out["metrics"] == again["metrics"] and out["best_val"] == again["best_val"]
    assert out["init"] == "scratch" and out["steps_per_epoch"] == 2 and out["plan"]["source"] == "config"
    assert json.loads(json.dumps(out)) == out  # one JSON-serialisable record
    module = SegmentationFinetuner(num_classes=2, init="scratch", architecture=arch, spatial_dims=2,
                                   roi_size=(32, 16), plan=CT.to_dict())
    assert module.predict_volume(torch.rand(1, 24, 24, 16)).shape == (24, 24, 16)



@pytest.fixture(scope="module")
def whole_card(tmp_path_factory) -> Path:
    return export_tiny_genesis_basicunet(tmp_path_factory.mktemp("genesis"))


def test_fit_segmenter_whole_transfer_loads_the_decoder_and_reports(whole_card, cubes, tmp_path, one_thread):
    module = SegmentationFinetuner(num_classes=2, encoder=whole_card, roi_size=ROI, transfer="whole")
    decoder = load_decoder_state(whole_card)[0]
    net = module.net.state_dict()
    assert all(torch.equal(net[k], v) for k, v in decoder.items() if not k.startswith("final_conv."))
    assert module.hparams["decoder"] == {"upsample": "deconv"} and module.hparams["transfer"] == "whole"
    with pytest.raises(SegmentationDataError, match="differs from the pretrained decoder's 'deconv'"):
        SegmentationFinetuner(num_classes=2, encoder=whole_card, roi_size=ROI, transfer="whole",
                              decoder={"upsample": "nontrainable"})

    out = fit_segmenter(whole_card, None, cubes[:2], cubes[:2], cubes[2:], num_classes=2, roi_size=ROI, epochs=1,
                        batch_size=2, patience=None, seed=0, cache_dir=tmp_path / "cache", transfer="whole")
    n_enc = len(load_encoder_state(whole_card)[0])
    assert out["transfer"] == "whole" and out["network"]["options"] == {"upsample": "deconv"}
    assert out["load_report"]["keys"] == {"encoder": n_enc, "decoder": len(decoder) - 2, "reinitialised": 2}
    assert set(out["load_report"]["reinitialised"]) == {"final_conv.weight", "final_conv.bias"}
    assert 0.0 <= out["metrics"]["mean_dice"] <= 1.0 and json.loads(json.dumps(out)) == out


def test_whole_transfer_needs_a_card_with_a_decoder(card, cubes, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("volumes were checked before the card was refused")

    monkeypatch.setattr(seg_fit, "check_cases", never)  # refused before any volume is read
    with pytest.raises(MissingDecoderError, match="holds no decoder"):
        fit_segmenter(card, None, cubes[:1], cubes[1:2], cubes[2:], num_classes=2, roi_size=ROI,
                      cache_dir=tmp_path, transfer="whole")
    with pytest.raises(ValueError, match="give an encoder card"):
        fit_segmenter(None, {"name": "basicunet", "kwargs": UNET}, cubes[:1], cubes[1:2], cubes[2:], num_classes=2,
                      roi_size=ROI, plan=CT.to_dict(), cache_dir=tmp_path, transfer="whole")

@pytest.mark.realdata
def test_hippocampus_basicunet_from_scratch(shared_data, tmp_path, one_thread):
    root = shared_data / "hippocampus"
    cases = cases_from_msd(root)
    names = msd_label_names(root)
    arch = {"name": "basicunet", "kwargs": {"in_channels": 1, "spatial_dims": 3, "features": [8, 8, 16, 16, 32, 8]}}
    out = fit_segmenter(None, arch, cases[:3], cases[3:4], cases[4:6], label_names=names, roi_size=(32, 32, 32),
                        plan={"intensity": "zscore"}, epochs=2, batch_size=3, lr=1e-2, min_steps=20, seed=0,
                        patience=None, cache_dir=tmp_path)
    metrics = out["metrics"]
    assert set(metrics["dice"]) == {"Anterior", "Posterior"} and metrics["n_cases"] == 2
    assert all(0.0 <= d <= 1.0 for d in metrics["dice"].values()) and out["steps_per_epoch"] == 1
    assert out["max_epochs"] == 20 and out["wall_s"] < 60
