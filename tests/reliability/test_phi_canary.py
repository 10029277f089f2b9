"""PHI canary: patient data planted in an archive's headers and folder/file names must not appear in anything medssl
writes outside the archive.

The archive (phantom series from :func:`medssl.data.phantoms.write_dicom_series`, then the canaries set with pydicom)
goes through ``medssl index --dedup``, ``medssl convert`` (+ ``--list``, + a whole folder), and the preprocessing cache, and then a tiny
pretraining run reads the indexed archive (``ArchiveIndex``, the structure of ``configs/pretrain/mae3d_demo.yaml``:
checkpoints, config.yaml, TensorBoard events and hparams.yaml, metrics.csv, encoder card and weights, summary.json,
PNG plots). Every file written (CSV, JSON, YAML, NIfTI, .safetensors, .ckpt, event files, PNG and the salt, as bytes),
the console output and the log records are scanned for each canary in its common spellings (upper / lower / title case, DICOM ``^`` name parts and their space-joined forms,
several date formats, raw UIDs). Console text is scanned too, less the caller's own command-line paths that the CLI
echoes back (``convert --list`` titles its table with SOURCE). The one documented exception among files is the index's ``files.csv`` ``path`` column: "index
CSVs excepting relative paths" (issue 9), the archive's own relative paths, which carry a planted folder name exactly
as the archive's directory listing does. The header metadata copied into outputs is held to an allow-list of
technical tags, and every ``torch.load`` in the package passes ``weights_only=True``.
"""
from __future__ import annotations

import ast
import csv
import io
import logging
from dataclasses import fields
from pathlib import Path

import pydicom
import pytest
import yaml

from medssl.cli import main
from medssl.data.cache import PreprocessCache
from medssl.data.deid import SAFE_KEYS, safe_metadata
from medssl.data.dicom import read_dicom_series
from medssl.data.dicom_header import DicomHeader
from medssl.data.phantoms import make_phantom
from medssl.data.plan import PreprocessPlan
from tests.reliability.conftest import ramp, series

REPO = Path(__file__).resolve().parents[2]

FAMILY, GIVEN, MIDDLE = "Zqxcanary", "Wilhelmina", "Quenby"
CANARY = {
    "PatientName": f"{FAMILY}^{GIVEN}^{MIDDLE}",
    "PatientID": "PID7734219X",
    "PatientBirthDate": "19561123",
    "AccessionNumber": "ACCN88231744",
    "InstitutionName": "Saint Canaryvale Infirmary",
    "ReferringPhysicianName": "Drzqxref^Bartholomew",
    "StudyDate": "20230917",
    "OtherPatientIDs": "OPID5512093",
    "PatientAddress": "17 Canarywharf Lane",
}
DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
#: planted in folder and file names (allowed only in files.csv's relative path column)
PATIENT_FOLDER = f"{FAMILY}_{GIVEN}_{CANARY['PatientID']}"
STUDY_FOLDER = f"{CANARY['AccessionNumber']}_{CANARY['PatientBirthDate']}"

#: Header-derived keys that may leave the reader (PS3.15 basic profile in mind: technical, non-identifying).
TECHNICAL_KEYS = {
    "modality", "body_part", "manufacturer", "transfer_syntax", "rows", "columns", "n_files", "n_slices",
    "n_timepoints", "photometric", "bits_stored", "pixel_representation", "is_mosaic", "image_type",
    "slice_thickness", "spacing", "shape", "orientation", "series_key", "series_number", "echo_number",
    "gantry_tilt", "rescale_slope", "rescale_intercept", "space", "policy",
    "split",  # an enhanced file's stack label: medssl's own words and index numbers (echo2, trigger3), no header text
}
#: Attributes of the PS3.15 basic application-level confidentiality profile (as medssl would name them) that must
#: never be an output key.
IDENTIFYING_KEYS = {
    "patient_name", "patient_id", "patient_birth_date", "birth_date", "patient_sex", "patient_age", "patient_address",
    "other_patient_ids", "accession_number", "institution_name", "institution_address", "referring_physician_name",
    "performing_physician_name", "operators_name", "station_name", "study_date", "series_date", "acquisition_date",
    "content_date", "study_time", "series_time", "study_id", "study_description", "series_description",
    "device_serial_number", "study_uid", "series_uid", "sop_instance_uid", "frame_of_reference_uid",
    "study_instance_uid", "series_instance_uid", "requesting_physician", "request_attributes_sequence",
}


def _variants(value: str, date: bool = False, name: bool = False) -> set[str]:
    out = {value}
    if name:
        parts = [p for p in value.split("^") if p]
        out |= set(parts) | {" ".join(parts), " ".join(parts[::-1]), " ".join(parts[1:] + parts[:1]),
                             ", ".join([parts[0], " ".join(parts[1:])])}
    if date:
        y, m, d = value[:4], value[4:6], value[6:]
        out |= {f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{y}/{m}/{d}", f"{y}{m}{d}"}
    return {c for v in out for c in (v, v.upper(), v.lower(), v.title())}


def _canaries(uids: set[str]) -> dict[str, set[str]]:
    found = {tag: _variants(v, date=tag.endswith("Date"), name=tag.endswith("Name")) for tag, v in CANARY.items()}
    found["UIDs"] = set(uids)
    return found


def _plant(files: list[Path], uids: set[str]) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        for tag, value in CANARY.items():
            setattr(ds, tag, value)
        for tag in DATE_TAGS:
            setattr(ds, tag, CANARY["StudyDate"])
        ds.save_as(f)
        uids.update(str(ds.get(t)) for t in UID_TAGS if ds.get(t))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, set[str]]:
    """Two studies of one planted patient (a good CT, a series with a missing slice), a named non-DICOM file, and a
    second (unplanted) patient's CT, so that a patient-grouped train/val split has two sides."""
    root = tmp_path_factory.mktemp("canary") / "archive"
    study = root / PATIENT_FOLDER / STUDY_FOLDER
    uids: set[str] = set()
    good = series(study / "CT_abdomen", vol=ramp(), patient_name=CANARY["PatientName"],
                  patient_id=CANARY["PatientID"])
    gap = series(study / "CT_gap", n=4, number=2, slice_positions=[0, 2.5, 5, 10], patient_id=CANARY["PatientID"])
    _plant(good + gap, uids)
    for k, f in enumerate(good):  # file names carry the patient ID too
        f.rename(f.with_name(f"{CANARY['PatientID']}_{k:03d}.dcm"))
    (study / f"referral_{FAMILY}.txt").write_text("referral letter\n")
    series(root / "control" / "CT", vol=make_phantom((16, 16, 6), (1.0, 1.0, 2.5), seed=3)[0],
           patient_id="CONTROL-0002", number=3)
    return root, uids


def _scan(path: Path, canaries: dict[str, set[str]], skip_path_column: bool) -> list[tuple[str, str, str]]:
    """(file, tag, variant) hits in one file's bytes (files.csv: every column but ``path``)."""
    data = path.read_bytes()
    if skip_path_column:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        data = "\n".join(",".join(v for k, v in r.items() if k != "path") for r in rows).encode()
    hits = []
    for tag, variants in canaries.items():
        for v in variants:
            if v.encode() in data or v.encode("utf-16-le") in data:
                hits.append((path.name, tag, v))
    return hits


def _without_echo(text: str, echoed: list[str]) -> str:
    """Console text with whitespace and table rules removed (rich wraps long paths) and the caller's own
    command-line paths cut out: ``convert --list`` titles its table with the SOURCE argument. Every other
    occurrence still counts as a hit."""
    flat = "".join(ch for ch in text if not ch.isspace() and not 0x2500 <= ord(ch) <= 0x257F)
    for path in sorted(echoed, key=len, reverse=True):
        flat = flat.replace("".join(path.split()), "<arg>")
    return flat


def test_no_canary_in_any_output(archive, tmp_path, capsys, caplog):
    root, uids = archive
    out = tmp_path / "outputs"
    caplog.set_level(logging.DEBUG)
    patient = root / PATIENT_FOLDER
    ct = next(patient.rglob("CT_abdomen"))
    argv_paths = [str(ct), str(ct.parent)]  # the caller's own arguments, echoed back to the caller's console
    assert main(["index", str(root), "--out", str(out / "index"), "--workers", "1", "--quiet", "--dedup"]) == 0
    assert main(["convert", str(ct), str(out / "convert" / "ct.nii.gz"), "--index", str(out / "index")]) == 0
    assert main(["convert", str(ct.parent), "--list", "--index", str(out / "index")]) == 0
    # the whole archive into a folder: the gap series is refused (exit DATA_ERROR), everything else written
    assert main(["convert", str(root), str(out / "convert_all") + "/", "--index", str(out / "index")]) == 3
    assert len(list((out / "convert_all").glob("*.nii.gz"))) == 2
    cache = PreprocessCache(out / "cache", PreprocessPlan(intensity="ct_window"))
    assert cache.get(ct).shape == (16, 16, 6)
    console = capsys.readouterr()
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)

    written = sorted(p for p in out.rglob("*") if p.is_file())
    kinds = {p.name.split(".", 1)[-1] for p in written}
    assert {"csv", "json", "nii.gz", "safetensors", "txt"} <= kinds, kinds  # index, sidecar, image, cache, salt
    canaries = _canaries(uids)
    assert len(uids) >= 12 and sum(len(v) for v in canaries.values()) > 60
    hits = [h for p in written for h in _scan(p, canaries, skip_path_column=p.name == "files.csv")]
    for name, text in (("stdout", console.out), ("stderr", console.err), ("log", logs)):
        hits += [(name, tag, v) for tag, vs in canaries.items() for v in vs if v in _without_echo(text, argv_paths)]
    print(f"PHI canary: {len(written)} output files + console + {len(caplog.records)} log records scanned for "
          f"{sum(len(v) for v in canaries.values())} canary spellings: {len(hits)} hits")
    assert hits == [], hits

    # the exception, exactly: planted folder/file names occur only as relative paths in files.csv's path column
    with open(out / "index" / "files.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {r["path"] for r in rows} == on_disk
    assert all(not r["path"].startswith("/") and str(root) not in r["path"] for r in rows)
    assert any(PATIENT_FOLDER in r["path"] for r in rows)  # the exception is real, and documented here
    assert {r["reason"] for r in rows} == {"", "missing_slice", "not_dicom"}


def _tiny_pretrain_config(index: Path, archive: Path, cache: Path, path: Path) -> Path:
    """configs/pretrain/mae3d_demo.yaml with tiny sizes: one epoch of one step on the indexed canary archive."""
    cfg = yaml.safe_load((REPO / "configs" / "pretrain" / "mae3d_demo.yaml").read_text())
    assert cfg["data"]["source"]["class_path"] == "medssl.data.sources.ArchiveIndex"
    cfg["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False)
    cfg["model"]["init_args"].update(img_size=[16, 16, 8], patch_size=4, hidden_size=24, num_layers=1, num_heads=2,
                                     mlp_dim=32, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    cfg["data"]["source"]["init_args"].update(index_dir=str(index), archive_root=str(archive), cache_dir=str(cache),
                                              val_fraction=0.5)
    cfg["data"].update(patch_size=[16, 16, 8], batch_size=1, num_workers=0)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_no_canary_in_a_pretraining_run(archive, tmp_path, capsys, caplog):
    """Index the canary archive, pretrain on it through ArchiveIndex, and scan everything the run wrote."""
    from medssl.training.cli import PretrainCLI

    root, uids = archive
    out = tmp_path / "outputs"
    caplog.set_level(logging.DEBUG)
    assert main(["index", str(root), "--out", str(out / "index"), "--workers", "1", "--quiet", "--dedup"]) == 0
    config = _tiny_pretrain_config(out / "index", root, out / "cache", tmp_path / "tiny.yaml")
    cli = PretrainCLI(args=["--config", str(config), "--run_dir", str(out / "run")])
    assert cli.summary["global_step"] >= 1 and cli.summary["epochs_completed"] == 1
    data = cli.datamodule.source.summary()
    assert (data["patients"], data["train_patients"], data["val_patients"]) == (2, 1, 1)  # split by patient
    console = capsys.readouterr()
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)

    run = out / "run"
    written = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.relative_to(run).as_posix() for p in written if run in p.parents}
    for required in ("config.yaml", "checkpoints/last.ckpt", "encoder.json", "encoder.safetensors", "summary.json",
                     "metrics.csv", "tensorboard/hparams.yaml", "loss_curves.png"):
        assert required in names, (required, sorted(names))
    assert any("tfevents" in n for n in names) and any(n.endswith(".png") and "/" in n for n in names)
    canaries = _canaries(uids)
    hits = [h for p in written for h in _scan(p, canaries, skip_path_column=p.name == "files.csv")]
    for name, text in (("stdout", console.out), ("stderr", console.err), ("log", logs)):
        hits += [(name, tag, v) for tag, vs in canaries.items() for v in vs if v in _without_echo(text, [])]
    print(f"PHI canary (pretraining): {len(written)} files ({len(names)} in the run folder) + console + "
          f"{len(caplog.records)} log records scanned for {sum(len(v) for v in canaries.values())} canary spellings: "
          f"{len(hits)} hits")
    assert hits == [], hits


def test_scanner_finds_planted_strings(tmp_path):
    """The scan is not vacuous: a leaked spelling in any column but files.csv's path, or in binary, is a hit."""
    canaries = _canaries({"1.2.3.4.5.6.7.8.9"})
    (tmp_path / "files.csv").write_text("path,size,status,reason,series_key\n"
                                        f"{PATIENT_FOLDER}/a.dcm,1,skipped,not_dicom,\n")
    assert _scan(tmp_path / "files.csv", canaries, skip_path_column=True) == []
    (tmp_path / "series.csv").write_text(f"series_key,modality\nk,{FAMILY.upper()}\n")
    (tmp_path / "w.safetensors").write_bytes(b"\0\1" + "1956-11-23".encode("utf-16-le") + b"1.2.3.4.5.6.7.8.9")
    assert {h[1] for h in _scan(tmp_path / "series.csv", canaries, False)} == {"PatientName"}
    assert {h[1] for h in _scan(tmp_path / "w.safetensors", canaries, False)} == {"PatientBirthDate", "UIDs"}


def test_output_metadata_is_allow_listed(archive, tmp_path):
    root, uids = archive
    ct = next((root / PATIENT_FOLDER).rglob("CT_abdomen"))
    img = read_dicom_series(ct, salt="s")
    assert not (SAFE_KEYS & IDENTIFYING_KEYS)
    assert SAFE_KEYS == TECHNICAL_KEYS, "a key added to deid.SAFE_KEYS must be reviewed here (PS3.15) first"
    # what the reader returns: allow-listed header values plus geometry the reader computes itself
    computed = {"warnings", "spacing", "space", "original_affine", "spatial_shape", "filename_or_obj", "affine"}
    header_keys = set(img.meta) - computed
    assert header_keys <= SAFE_KEYS | {"n_files"}, header_keys - SAFE_KEYS
    assert not (set(img.meta) & IDENTIFYING_KEYS)
    assert set(safe_metadata(dict(img.meta))) <= SAFE_KEYS
    text = repr({k: v for k, v in img.meta.items() if k != "filename_or_obj"})  # the caller's own path
    canaries = _canaries(uids)
    assert not [v for vs in canaries.values() for v in vs if v in text]
    # the parsed header object keeps no patient field; its UIDs (grouping only) are hashed before any output
    header_fields = {f.name for f in fields(DicomHeader)}
    assert not (header_fields & IDENTIFYING_KEYS - {"study_uid", "series_uid", "sop_instance_uid"})
    from medssl.data.index import _UID_FIELDS

    assert set(_UID_FIELDS) == header_fields & {"study_uid", "series_uid", "sop_instance_uid"}
    # the PatientID is hashed as the header is read (for patient-grouped splits): no field holds it or any canary
    from medssl.data.dicom_header import read_header

    header = read_header(next(ct.iterdir()))
    values = repr({f.name: getattr(header, f.name) for f in fields(header) if f.name not in {"path", *_UID_FIELDS}})
    assert header.patient_hash and not [v for tag, vs in canaries.items() for v in vs if v in values]


# ------------------------------------------------------------------------------------------------ torch.load
def _torch_load_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted((REPO / "medssl").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                calls.append((path.relative_to(REPO).as_posix(), node.lineno, node))
    return calls


CALLS = _torch_load_calls()


def test_torch_load_calls_found():
    assert len(CALLS) >= 3, "the AST scan finds the package's torch.load calls"


@pytest.mark.parametrize("site", [f"{p}:{n}" for p, n, _ in CALLS])
def test_torch_load_passes_weights_only_true(site):
    path, line = site.rsplit(":", 1)
    call = next(c for p, n, c in CALLS if p == path and n == int(line))
    kw = {k.arg: k.value for k in call.keywords}
    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
    assert ok, f"{site} must call torch.load(..., weights_only=True)"
