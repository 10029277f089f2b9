"""medssl predict: label maps back on the input grid (NIfTI and DICOM), volumes, inputs with reasons, classifiers."""
from __future__ import annotations

import csv
import gzip
import json
import runpy
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from scipy.ndimage import binary_dilation, binary_erosion

from medssl.cli import main
from medssl.data.loading import load_volume
from medssl.data.medmnist import MedMNISTDataset
from medssl.data.nifti import write_nifti
from medssl.data.phantoms import generate_phantoms, phantom_affine
from medssl.data.plan import PreprocessPlan
from medssl.errors import Reason
from medssl.finetune.classification import ClassificationFinetuner, predict_proba, train_classifier
from medssl.finetune.inputs import PredictInputError, find_inputs
from medssl.finetune.predict import CheckpointError, load_checkpoint, predict_segmentation, run_predict
from medssl.models.hub import export_encoder
from medssl.models.resnet import ResNetEncoder

LPS = np.array([[-0.8, 0, 0, 10.0], [0, -0.9, 0, 12.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])
PLAN = PreprocessPlan(orientation="RAS", target_spacing=(1.0, 1.0, 1.0))


class FakeSegmenter(torch.nn.Module):
    """Thresholds the preprocessed intensity: channel c > thresholds[c] -> label c + 1 (later channels win)."""

    def __init__(self, hparams: dict):
        super().__init__()
        self.hparams = hparams

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[0] == self.hparams["in_channels"]
        out = torch.zeros(image.shape[1:], dtype=torch.int64)
        for value, t in enumerate(self.hparams["thresholds"], 1):
            out[image[min(value - 1, image.shape[0] - 1)] > t] = value
        return out


def seg_hparams(plan=PLAN, thresholds=(100.0,), in_channels=1, names=("background", "blob")) -> dict:
    return {"task": "segmentation", "plan": plan.to_dict(), "num_classes": len(thresholds) + 1,
            "label_names": list(names), "in_channels": in_channels, "spatial_dims": 3, "thresholds": list(thresholds)}


def blob(affine: np.ndarray, shape=(40, 36, 20), radius=9.0) -> np.ndarray:
    """A ball (200) placed in world coordinates, so it is the same object whatever the voxel grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    r = np.linalg.norm(xyz - xyz.mean(0) - [3.0, -2.0, 1.0], axis=1).reshape(shape)
    return np.where(r < radius, 200.0, 0.0).astype(np.float32)


def only_boundary_differs(expected: np.ndarray, got: np.ndarray) -> bool:
    """Disagreements lie only on the expected mask's one-voxel boundary, and there are few of them."""
    boundary = binary_dilation(expected) & ~binary_erosion(expected)
    wrong = expected != got
    return not (wrong & ~boundary).any() and wrong.sum() <= 0.5 * boundary.sum()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, n=2, shape=(28, 24, 12))
    (root / "dicom" / "README.txt").write_text("not an image\n")
    return root


@pytest.fixture
def fake_segmentation_module(monkeypatch):
    """``medssl.finetune.segmentation`` stand-in: its SegmentationFinetuner loads a FakeSegmenter from hparams."""
    class SegmentationFinetuner:
        @staticmethod
        def load_from_checkpoint(path, map_location=None, weights_only=None, **overrides):
            assert weights_only is True
            return FakeSegmenter(torch.load(path, map_location=map_location, weights_only=True)["hyper_parameters"])

    module = types.ModuleType("medssl.finetune.segmentation")
    module.SegmentationFinetuner = SegmentationFinetuner
    monkeypatch.setitem(sys.modules, "medssl.finetune.segmentation", module)


def test_nifti_label_maps_are_on_the_input_grid(tmp_path):
    src = tmp_path / "in"
    oblique = phantom_affine((30, 28, 14), (0.7, 0.7, 1.5), angle_deg=15, axis="y")
    write_nifti(blob(LPS), src / "lps.nii.gz", LPS)
    write_nifti(blob(oblique, (30, 28, 14), 7.0), src / "sub" / "oblique.nii.gz", oblique)
    (src / "notes.txt").write_text("hello")
    inputs = find_inputs(src)
    assert [c.name for c in inputs.cases] == ["lps", "sub__oblique"]
    assert [(s.path, s.reason) for s in inputs.skipped] == [("notes.txt", "not_dicom")]
    summary = predict_segmentation(FakeSegmenter(seg_hparams()), inputs, tmp_path / "out", progress=False)

    rows = read_csv(tmp_path / "out" / "volumes.csv")
    assert [r["case"] for r in rows] == ["lps", "sub__oblique"] and rows[1]["source"] == "sub/oblique.nii.gz"
    for row, rel in zip(rows, ("lps.nii.gz", "sub/oblique.nii.gz")):
        original = nib.load(src / rel)
        seg = nib.load(tmp_path / "out" / f"{row['case']}_seg.nii.gz")
        assert seg.shape == original.shape and np.issubdtype(seg.get_data_dtype(), np.integer)
        np.testing.assert_allclose(seg.affine, original.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        assert only_boundary_differs(np.asarray(original.dataobj) > 100, labels == 1)
        voxel = abs(np.linalg.det(original.affine[:3, :3]))
        assert int(row["voxels"]) == int((labels == 1).sum()) > 0 and row["label_name"] == "blob"
        assert float(row["volume_mm3"]) == pytest.approx(int(row["voxels"]) * voxel, rel=1e-6)
    assert summary["counts"] == {"cases": 2, "written": 2, "skipped": 1}
    saved = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert saved["skipped"][0]["reason"] == "not_dicom" and saved["plan"] == PLAN.to_dict()


def test_orientation_only_plan_maps_back_exactly(tmp_path):
    write_nifti(blob(LPS), tmp_path / "lps.nii.gz", LPS)
    hp = seg_hparams(plan=PreprocessPlan(orientation="RAS"))
    predict_segmentation(FakeSegmenter(hp), find_inputs(tmp_path / "lps.nii.gz"), tmp_path / "out", progress=False)
    labels = np.asarray(nib.load(tmp_path / "out" / "lps_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(labels == 1, blob(LPS) > 100)  # a flip back: voxel for voxel


def test_dicom_archive_round_trip_without_identifiers(phantoms, tmp_path):
    plan = PreprocessPlan(orientation="RAS", target_spacing=(1.0, 1.0, 1.0), intensity="ct_window")
    hp = seg_hparams(plan, thresholds=(0.25, 0.7), names=("background", "body", "bone"))  # -500 HU, 400 HU
    inputs = find_inputs(phantoms / "dicom", salt="s3cret")
    assert len(inputs.cases) == 2 and all(c.name.startswith("series_") for c in inputs.cases)
    assert [(s.path, s.reason) for s in inputs.skipped] == [("README.txt", "not_dicom")]
    out = tmp_path / "out"
    predict_segmentation(FakeSegmenter(hp), inputs, out, checkpoint=None, progress=False)
    for case in inputs.cases:
        original = load_volume(list(case.channels[0]))
        seg = nib.load(out / f"{case.name}_seg.nii.gz")
        assert seg.shape == tuple(original.shape)
        np.testing.assert_allclose(seg.affine, original.affine.numpy(), atol=1e-4)
        hu = original.numpy()
        assert only_boundary_differs(hu > -500, np.asarray(seg.dataobj) >= 1)
    # the DICOM grid is the phantom's own grid (its NIfTI twin)
    twin = nib.load(phantoms / "nifti" / "imagesTr" / "phantom_000_0000.nii.gz")
    assert any(np.allclose(nib.load(p).affine, twin.affine, atol=1e-4) for p in out.glob("*_seg.nii.gz"))
    rows = read_csv(out / "volumes.csv")
    assert {r["label_name"] for r in rows} == {"body", "bone"} and all(len(r["source"]) == 16 for r in rows)

    identifiers = set()
    for f in sorted((phantoms / "dicom").rglob("*.dcm"))[:40]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        identifiers |= {str(ds.PatientName), ds.PatientID, ds.StudyDate, ds.PatientBirthDate, ds.AccessionNumber,
                        ds.InstitutionName, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    for path in out.rglob("*"):
        blob_bytes = path.read_bytes()
        text = (gzip.decompress(blob_bytes) if path.suffix == ".gz" else blob_bytes).decode("latin-1")
        assert not [i for i in identifiers if i and i in text], path.name


def test_multichannel_cases_group_by_msd_suffix(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    for case, shift in (("case_a", 0), ("case_b", 3)):
        write_nifti(np.roll(blob(aff, (20, 18, 10), 6.0), shift, 0), tmp_path / f"{case}_0000.nii.gz", aff)
        write_nifti(np.roll(blob(aff, (20, 18, 10), 3.0), shift, 1), tmp_path / f"{case}_0001.nii.gz", aff)
    inputs = find_inputs(tmp_path, in_channels=2)
    assert [(c.name, c.source) for c in inputs.cases] == [
        ("case_a", "case_a_0000.nii.gz;case_a_0001.nii.gz"), ("case_b", "case_b_0000.nii.gz;case_b_0001.nii.gz")]
    hp = seg_hparams(PreprocessPlan(orientation="RAS"), thresholds=(100.0, 100.0), in_channels=2,
                     names=("background", "outer", "inner"))
    predict_segmentation(FakeSegmenter(hp), inputs, tmp_path / "out", progress=False)
    labels = np.asarray(nib.load(tmp_path / "out" / "case_b_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(labels == 2, np.roll(blob(aff, (20, 18, 10), 3.0), 3, 1) > 100)

    with pytest.raises(PredictInputError, match="case_a") as err:  # two channels, a one-channel model
        find_inputs(tmp_path, in_channels=1)
    assert err.value.reason is Reason.SHAPE_MISMATCH
    write_nifti(blob(aff, (20, 18, 10)), tmp_path / "case_c_0000.nii.gz", aff)
    with pytest.raises(PredictInputError, match="'case_c' has 1 channel"):
        find_inputs(tmp_path, in_channels=2)


def test_real_segmenter_checkpoint(tmp_path):
    """The real SegmentationFinetuner through load_checkpoint (rebuilt without its card) and predict."""
    import lightning

    segmentation = pytest.importorskip("medssl.finetune.segmentation")
    arch = {"name": "segresnet", "kwargs": {"spatial_dims": 3, "in_channels": 1, "init_filters": 8,
                                            "blocks_down": [1, 1]}}
    module = segmentation.SegmentationFinetuner(num_classes=3, label_names=["background", "a", "b"], init="scratch",
                                                architecture=arch, roi_size=(16, 16, 16), plan=PLAN.to_dict())
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, tmp_path / "seg.ckpt")
    write_nifti(blob(LPS, (24, 20, 10)), tmp_path / "in" / "x.nii.gz", LPS)
    summary = run_predict(tmp_path / "seg.ckpt", tmp_path / "in", tmp_path / "out", progress=False)
    seg = nib.load(tmp_path / "out" / "x_seg.nii.gz")
    assert seg.shape == (24, 20, 10) and np.allclose(seg.affine, LPS, atol=1e-4)
    rows = read_csv(tmp_path / "out" / "volumes.csv")
    assert [r["label_name"] for r in rows] == ["a", "b"] and summary["plan"] == PLAN.to_dict()
    assert sum(int(r["voxels"]) for r in rows) == int((np.asarray(seg.dataobj) > 0).sum())


def test_bad_inputs_and_checkpoints_raise_with_reasons(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictInputError) as err:
        find_inputs(tmp_path / "empty")
    assert err.value.reason is Reason.EMPTY_SERIES
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(PredictInputError, match="not_dicom"):
        find_inputs(tmp_path / "junk")
    with pytest.raises(PredictInputError, match="not found"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "junk" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    write_nifti(blob(LPS), tmp_path / "junk" / "ok.nii.gz", LPS)
    assert {(s.path, s.reason) for s in find_inputs(tmp_path / "junk").skipped} == {
        ("a.txt", "not_dicom"), ("broken.nii.gz", "bad_nifti_header")}

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    for path in (bad, tmp_path / "none.ckpt"):
        with pytest.raises(CheckpointError, match=path.name) as err:
            load_checkpoint(path)
        assert err.value.reason is Reason.UNREADABLE
    torch.save({"hyper_parameters": {"lr": 1.0}, "state_dict": {}}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="no known task"):
        load_checkpoint(tmp_path / "odd.ckpt")


@pytest.fixture(scope="module")
def classifier_ckpt(fake_npz, tiny_card, tmp_path_factory) -> Path:
    """A real ClassificationFinetuner checkpoint after one epoch on the fake MedMNIST file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), optim={"lr": 1e-2})
        info = train_classifier(module, MedMNISTDataset(fake_npz, "train"), MedMNISTDataset(fake_npz, "val"),
                                epochs=1, batch_size=32, seed=0, run_dir=tmp_path_factory.mktemp("clf"))
    finally:
        torch.set_num_threads(threads)
    return Path(info["checkpoint"])


def test_classifier_probabilities_from_npz(classifier_ckpt, fake_npz, tmp_path):
    model = load_checkpoint(classifier_ckpt)
    assert isinstance(model, ClassificationFinetuner) and model.hparams["task"] == "classification"
    assert model.hparams["init"] == "pretrained"  # the record as trained
    summary = run_predict(classifier_ckpt, fake_npz, tmp_path / "out", progress=False)
    rows = read_csv(tmp_path / "out" / "probabilities.csv")
    assert list(rows[0]) == ["case", "source", "prob_0", "prob_1", "predicted"] and len(rows) == 30
    expected, _ = predict_proba(model.model, MedMNISTDataset(fake_npz, "test"))
    got = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [int(r["predicted"]) for r in rows] == expected.argmax(1).tolist()
    assert summary["checkpoint"]["sha256"] and summary["split"] == "test"

    # a checkpoint written before hparams recorded the task is still a classifier
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    del ckpt["hyper_parameters"]["task"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    assert isinstance(load_checkpoint(tmp_path / "old.ckpt"), ClassificationFinetuner)
    # no plan recorded (the card says "medmnist"): volumes are refused with a reason
    write_nifti(blob(LPS), tmp_path / "vol" / "x.nii.gz", LPS)
    with pytest.raises(PredictInputError, match="only read a MedMNIST"):
        run_predict(classifier_ckpt, tmp_path / "vol", tmp_path / "out2", progress=False)


def test_classifier_on_volumes_uses_the_card_plan(tmp_path):
    arch = {"in_channels": 1, "spatial_dims": 3, "layers": [1, 1, 1, 1], "block_inplanes": [4, 4, 8, 8],
            "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}
    plan = PreprocessPlan(orientation="RAS", target_spacing=(2.0, 2.0, 2.0), intensity="percentile")
    export_encoder(ResNetEncoder(**arch), tmp_path / "card", method="test",
                   preprocessing={"kind": "plan", "plan": plan.to_dict(), "fingerprint": plan.fingerprint()})
    module = ClassificationFinetuner(num_classes=3, encoder=str(tmp_path / "card"))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "c.ckpt")
    for name in ("a", "b"):
        write_nifti(blob(LPS), tmp_path / "vol" / f"{name}.nii.gz", LPS)
    summary = run_predict(tmp_path / "c.ckpt", tmp_path / "vol", tmp_path / "out", progress=False)
    rows = read_csv(tmp_path / "out" / "probabilities.csv")
    assert [r["case"] for r in rows] == ["a", "b"] and summary["plan"] == plan.to_dict()
    assert sum(float(rows[0][f"prob_{c}"]) for c in range(3)) == pytest.approx(1.0, abs=1e-5)


def test_cli_end_to_end(phantoms, classifier_ckpt, fake_npz, fake_segmentation_module, tmp_path, capsys,
                        monkeypatch):
    ckpt = tmp_path / "seg.ckpt"
    torch.save({"hyper_parameters": seg_hparams(thresholds=(-500.0,)), "state_dict": {}}, ckpt)
    out = tmp_path / "seg"
    assert main(["predict", "--checkpoint", str(ckpt), str(phantoms / "dicom"), str(out), "--quiet"]) == 0
    assert "2 of 2 case(s) predicted" in capsys.readouterr().out
    assert len(list(out.glob("series_*_seg.nii.gz"))) == 2 and (out / "volumes.csv").exists()
    assert json.loads((out / "predict.json").read_text())["checkpoint"]["file"] == "seg.ckpt"
    # rerun into the same folder: the same salted case names
    names = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert main(["predict", "--checkpoint", str(ckpt), str(phantoms / "dicom"), str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == names

    assert main(["predict", "--checkpoint", str(classifier_ckpt), str(fake_npz), str(tmp_path / "c"),
                 "--split", "val", "--quiet"]) == 0
    assert len(read_csv(tmp_path / "c" / "probabilities.csv")) == 24
    assert main(["predict", "--checkpoint", str(ckpt), str(phantoms / "dicom"), str(out), "--split", "val"]) == 2
    (tmp_path / "bad.ckpt").write_bytes(b"x")
    assert main(["predict", "--checkpoint", str(tmp_path / "bad.ckpt"), str(fake_npz), str(out)]) == 3
    assert "unreadable" in capsys.readouterr().out

    argv = ["pipelines/predict.py", "--checkpoint", str(ckpt), str(phantoms / "nifti" / "imagesTr"),
            str(tmp_path / "pipe"), "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(Path(__file__).resolve().parents[2] / "pipelines" / "predict.py"), run_name="__main__")
    assert exit_.value.code == 0 and (tmp_path / "pipe" / "phantom_001_seg.nii.gz").exists()


def test_each_stack_of_an_enhanced_file_is_its_own_case(tmp_path):
    """One Enhanced MR file with two echoes: two cases, each loading its own echo (not an ambiguous-series error)."""
    import numpy as np

    from medssl.finetune.inputs import find_inputs, load_case
    from tests.data.test_dimensions import _enhanced_mr

    shape = (6, 5, 4, 1)
    i, j, k, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volumes = {1: i + 10 * j + 100 * k, 2: i + 10 * j + 100 * k + 5000}
    (tmp_path / "in").mkdir()
    _enhanced_mr(tmp_path / "in" / "enh.dcm", volumes)
    inputs = find_inputs(tmp_path / "in", in_channels=1, salt="s" * 32)
    assert len(inputs.cases) == 2 and not inputs.skipped
    loaded = sorted((np.asarray(load_case(c, inputs.dicom_options)) for c in inputs.cases), key=lambda v: v.mean())
    for volume, echo in zip(loaded, (1, 2)):
        np.testing.assert_array_equal(volume.reshape(6, 5, 4), volumes[echo][..., 0] * 2 - 7)
    assert all("s" * 32 not in str(c) for c in inputs.cases)  # the salt keys the names, it is not in them
