"""Multi-channel inputs: channel names on the card, typed mismatch errors naming both lists, an explicit first-layer
adaptation with a report line, and MSD channel files found for fine-tuning and prediction."""
from __future__ import annotations

import json
from pathlib import Path

import lightning
import nibabel as nib
import numpy as np
import pytest
import torch

from medssl.data.nifti import write_nifti
from medssl.data.plan import PreprocessPlan
from medssl.finetune.inputs import find_inputs
from medssl.finetune.predict import run_predict
from medssl.finetune.seg_cases import SegmentationDataError, cases_from_msd, msd_channel_names
from medssl.finetune.seg_fit import fit_segmenter
from medssl.finetune.segmentation import SegmentationFinetuner
from medssl.models.hub import ChannelMismatchError, check_channels, export_encoder, load_encoder, read_card
from medssl.models.registry import build_encoder
from medssl.models.segmenter import build_segmenter

PLAN = PreprocessPlan(orientation="RAS")
KW = {"spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]}
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def card2(tmp_path_factory) -> Path:
    """A tiny 2-channel BasicUNet encoder whose card names its channels FLAIR, T1c."""
    folder = tmp_path_factory.mktemp("enc2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder("basicunet", {"in_channels": 2, **KW})
    pre = {"kind": "plan", "plan": PLAN.to_dict(), "fingerprint": PLAN.fingerprint(), "channels": ["FLAIR", "T1c"]}
    return export_encoder(encoder, folder, method="test", preprocessing=pre)


def write_msd(root: Path, n: int = 3, modality=("FLAIR", "T1c"), shape=(32, 24, 16), seed: int = 0) -> Path:
    """An MSD folder of ``n`` 2-channel tumour-like cases (labels 0-4 as float, a brain mask), BraTS layout."""
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "brainmasks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        label = np.zeros(shape, np.float32)
        c = rng.integers(10, 20), rng.integers(8, 14), 8
        label[c[0] - 6:c[0] + 6, c[1] - 5:c[1] + 5, c[2] - 4:c[2] + 4] = 2  # edema
        label[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 2:c[2] + 2] = 1  # necrosis
        label[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 4  # enhancing
        brain = np.zeros(shape, np.float32)
        brain[2:-2, 2:-2, 1:-1] = 1.0
        flair = np.where(label > 0, 2.0, 0.0) + rng.normal(0, 0.3, shape)
        t1c = np.where(label == 4, 3.0, np.where(label == 1, -1.0, 0.0)) + rng.normal(0, 0.3, shape)
        name = f"case_{i:03d}"
        for ch, img in enumerate((flair, t1c)):
            write_nifti((img * brain - 3 * (1 - brain)).astype(np.float32), root / "imagesTr" / f"{name}_{ch:04d}.nii.gz",
                        AFFINE)
        write_nifti(label, root / "labelsTr" / f"{name}.nii.gz", AFFINE)
        write_nifti(brain, root / "brainmasks" / f"{name}.nii.gz", AFFINE)
        entries.append({"image": [f"./imagesTr/{name}_{ch:04d}.nii.gz" for ch in range(2)],
                        "label": f"./labelsTr/{name}.nii.gz", "brainmask": f"./brainmasks/{name}.nii.gz"})
    meta = {"modality": {str(i): m for i, m in enumerate(modality)},
            "labels": {"0": "background", "1": "necrosis", "2": "edema", "3": "non-enhancing", "4": "enhancing"},
            "training": entries}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_card_records_channels_and_check_names_both_lists(card2):
    card = read_card(card2)[0]
    assert card["channels"] == ["FLAIR", "T1c"] and card["in_channels"] == 2
    assert check_channels(card, 2, ["flair", " T1c "]) is None  # case and spaces do not matter
    with pytest.raises(ChannelMismatchError) as err:
        check_channels(card, 1, ["T2"], card_path=card2)
    assert "['T2']" in str(err.value) and "['FLAIR', 'T1c']" in str(err.value) and "adapt_channels" in str(err.value)
    assert err.value.card_channels == ["FLAIR", "T1c"] and err.value.data_channels == ["T2"]
    with pytest.raises(ChannelMismatchError, match=r"\['T1c', 'FLAIR'\] differ from the encoder's \['FLAIR', 'T1c'\]"):
        check_channels(card, 2, ["T1c", "FLAIR"])
    assert check_channels(card, 1, ["T2"], adapt_channels="average") == "average"
    with pytest.raises(ValueError, match="adapt_channels"):
        check_channels(card, 1, None, adapt_channels="mean")
    with pytest.raises(Exception, match="3 channel names"):
        export_encoder(build_encoder("basicunet", {"in_channels": 2, **KW}), card2.parent / "x", method="t",
                       preprocessing={}, channels=["a", "b", "c"])


@pytest.mark.parametrize("mode", ["average", "repeat"])
def test_first_layer_adaptation_is_explicit_and_reported(card2, mode):
    net = build_segmenter({"name": "basicunet", "kwargs": {"in_channels": 3, **KW}}, num_classes=2, spatial_dims=3,
                          in_channels=3, img_size=(32, 32, 16))
    with pytest.raises(Exception, match="input channel"):
        load_encoder(card2, into=net)  # no silent adaptation
    report = load_encoder(card2, into=net, adapt_channels=mode)
    key = "conv_0.conv_0.conv.weight"
    from safetensors.torch import load_file

    w = load_file(str(card2.parent / "encoder.safetensors"))[key]
    got = net.state_dict()[key]
    expected = (w.mean(1, keepdim=True).expand(-1, 3, -1, -1, -1) if mode == "average" else w[:, [0, 1, 0]]) * 2 / 3
    assert torch.allclose(got, expected) and key in report.reshaped
    assert any("adapted from 2 ['FLAIR', 'T1c'] to 3" in n and mode in n for n in report.notes)
    assert report.card["in_channels"] == 2 and not report.missing


def test_finetuner_checks_channels_and_adapts_on_request(card2):
    common = dict(num_classes=5, init="pretrained", encoder=str(card2), roi_size=(32, 16, 16))
    module = SegmentationFinetuner(**common, channels=["FLAIR", "T1c"])
    assert module.hparams["channels"] == ["FLAIR", "T1c"] and module.hparams["adapt_channels"] is None
    with pytest.raises(SegmentationDataError, match=r"contradicts the card's 2 .*\['T2'\].*\['FLAIR', 'T1c'\]"):
        SegmentationFinetuner(**common, in_channels=1, channels=["T2"])
    with pytest.raises(ChannelMismatchError, match=r"\['T1c', 'FLAIR'\] differ"):
        SegmentationFinetuner(**common, channels=["T1c", "FLAIR"])
    adapted = SegmentationFinetuner(**common, in_channels=1, channels=["T2"], adapt_channels="average")
    assert adapted.hparams["in_channels"] == 1 and adapted.hparams["architecture"]["kwargs"]["in_channels"] == 1
    assert adapted.load_report.reshaped == ["conv_0.conv_0.conv.weight"]
    assert adapted.predict_volume(torch.zeros(1, 32, 16, 16)).shape == (32, 16, 16)


def test_msd_channels_masks_and_fit_checks_names_first(tmp_path, card2):
    root = write_msd(tmp_path / "msd", n=3)
    cases = cases_from_msd(root)
    assert msd_channel_names(root) == ["FLAIR", "T1c"] and len(cases[0].image) == 2
    assert cases[0].mask == root / "brainmasks" / "case_000.nii.gz"
    kwargs = dict(label_names=["bg", "n", "e", "ne", "et"], roi_size=(32, 16, 16), epochs=1, batch_size=2,
                  cache_dir=tmp_path / "cache", hu_check=False, regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]})
    with pytest.raises(ChannelMismatchError, match=r"\['T1c', 'FLAIR'\]"):
        fit_segmenter(card2, None, cases[:1], cases[1:2], cases[2:], channel_names=["T1c", "FLAIR"], **kwargs)
    assert not (tmp_path / "cache").exists()  # refused before anything was read or cached


def test_predict_finds_channel_files_and_writes_original_labels(tmp_path):
    root = write_msd(tmp_path / "msd", n=1, shape=(40, 24, 20))
    arch = {"name": "basicunet", "kwargs": {"in_channels": 2, **KW}}
    module = SegmentationFinetuner(num_classes=5, init="scratch", architecture=arch, roi_size=(32, 16, 16),
                                   plan=PLAN.to_dict(), regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]},
                                   channels=["FLAIR", "T1c"])
    with torch.no_grad():  # a fixed output: every voxel in WT and TC, none in ET -> label 1 (core) everywhere
        module.net.final_conv.weight.zero_()
        module.net.final_conv.bias.copy_(torch.tensor([5.0, 5.0, -5.0]))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, tmp_path / "seg.ckpt")
    first = root / "imagesTr" / "case_000_0000.nii.gz"
    assert [c.channels for c in find_inputs(first, in_channels=2).cases] == [
        (str(first.resolve()), str(first.with_name("case_000_0001.nii.gz").resolve()))]
    summary = run_predict(tmp_path / "seg.ckpt", first, tmp_path / "out", progress=False)
    seg = np.asarray(nib.load(tmp_path / "out" / "case_000_seg.nii.gz").dataobj)
    assert seg.shape == (40, 24, 20) and set(np.unique(seg)) == {1}
    assert summary["regions"]["ET"] == [4] and summary["region_labels"] == {"WT": 2, "TC": 1, "ET": 4}
    assert "painted" in summary["label_rule"] and summary["channels"] == ["FLAIR", "T1c"]
