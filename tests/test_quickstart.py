"""The quick start end to end with its smallest settings: every output exists, both arms have finite Dice, the report
links existing PNGs, and no identifier from the phantoms' DICOM headers reaches any output text file."""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from medssl.cli import main
from medssl.quickstart import QUICK, QuickstartError, QuickstartSettings, run_quickstart

TEXT_SUFFIXES = {".json", ".csv", ".md", ".yaml", ".yml", ".txt", ".log"}
#: header fields that identify a patient, a visit or an instance; the phantoms fill them with fake values on purpose
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "SeriesDate", "ContentDate",
               "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StationName", "StudyInstanceUID",
               "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train faster on one thread than on a contended pool
    try:
        folder = tmp_path_factory.mktemp("quickstart")
        assert main(["quickstart", "--out", str(folder), "--quick", "--quiet"]) == 0  # the README's command
    finally:
        torch.set_num_threads(before)
    return folder


def test_every_output_exists(out):
    for rel in ("metrics.json", "report.md", "index/files.csv", "index/series.csv", "index/index.json",
                "pretrain/encoder.json", "pretrain/encoder.safetensors", "pretrain/metrics.csv",
                "finetune/runs/whole_n2_seed0/checkpoints/best.ckpt", "finetune/runs/scratch_n2_seed0/checkpoints/best.ckpt",
                "finetune/split.json", "finetune/label_efficiency_phantoms.json", "finetune/label_efficiency_phantoms.md",
                "finetune/label_efficiency_phantoms.png",
                "figures/pretraining_curves.png", "figures/segmentation_overlays.png",
                "data/study/nifti/dataset.json"):
        assert (out / rel).is_file(), rel


def test_metrics_record(out):
    m = json.loads((out / "metrics.json").read_text())
    assert m["format"] == "medssl-quickstart" and m["quick"] is True
    idx = m["index"]
    assert idx["seen"] == idx["indexed"] + idx["skipped"] > 0
    assert sum(idx["skipped_by_reason"].values()) == idx["skipped"]
    assert idx["skipped_by_reason"].get("not_dicom", 0) > 0  # the archive's NIfTI copies and JSON files
    assert idx["series"] == QUICK.archive_cases
    assert m["pretraining"]["global_step"] > 0 and m["pretraining"]["encoder_card"] == "pretrain/encoder.json"
    ft = m["finetune"]
    for arm in ("pretrained", "scratch"):
        (run,) = ft["arms"][arm]["runs"]  # QUICK has one seed
        assert math.isfinite(run["metrics"]["mean_dice"])
        assert all(math.isfinite(v) for v in run["metrics"]["dice"].values())
        assert set(run["metrics"]["dice"]) == {"organ", "tumour"} and run["metrics"]["n_cases"] == QUICK.n_test
        assert math.isfinite(ft["arms"][arm]["summary"]["mean_dice"]["mean"])
    pretrained, scratch = ft["arms"]["pretrained"]["runs"][0], ft["arms"]["scratch"]["runs"][0]
    assert pretrained["load_report"]["matched"] > 0 and scratch["load_report"] is None
    assert pretrained["encoder_sha256"] == m["pretraining"]["weights_sha256"]
    assert math.isclose(ft["dice_gain"]["mean"], pretrained["metrics"]["mean_dice"] - scratch["metrics"]["mean_dice"])
    # one seed: a paired gain but no interval, so no claim ("tie")
    assert ft["dice_gain"]["ci_low"] is None and ft["dice_gain"]["verdict"] == "tie"
    assert {row["metric"] for row in ft["paired"]} == {"dice", "dice_organ", "dice_tumour"}
    assert ft["methods"] == {"pretrained": QUICK.transfer, "scratch": "scratch"}
    split = ft["split"]
    assert set(ft["labelled_cases"]["0"]) <= set(split["train"]) and len(ft["labelled_cases"]["0"]) == QUICK.n_labelled
    assert not set(split["train"]) & set(split["test"])
    for stage in ("data", "index", "pretrain", "finetune", "report", "total"):
        assert m["wall_s"][stage] >= 0


def test_report_links_existing_pngs(out):
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"figures/pretraining_curves.png", "figures/segmentation_overlays.png"} <= set(links)
    for link in links:
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert "| pretrained |" in text and "| scratch |" in text
    assert "| mean Dice | " in text and "[n/a: one seed]" in text  # the paired-gain table


def test_no_patient_data_in_any_text_output(out):
    values: set[str] = set()
    for f in sorted((out / "data").rglob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        values.update(str(ds.get(k, "")) for k in IDENTIFYING)
    values.discard("")
    assert any(v.startswith("PHANTOM^") for v in values) and len(values) > 20  # the fake identifiers are there
    texts = [p for p in out.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    assert len(texts) > 10
    for p in texts:
        content = p.read_text(errors="replace")
        leaked = sorted(v for v in values if v in content)
        assert not leaked, f"{p.relative_to(out)} holds {leaked[:3]}"


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(QuickstartError, match="not quick-start outputs"):
        run_quickstart(tmp_path, quick=True, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        QuickstartSettings(study_cases=4, n_labelled=2, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="seed"):
        QuickstartSettings(seeds=(0, 0))
    with pytest.raises(QuickstartError, match="nope.yaml"):  # refused before anything is written
        run_quickstart(tmp_path / "out", settings=replace(QUICK, pretrain_config="nope.yaml"), progress=False)
    assert not (tmp_path / "out").exists()
