"""Archive crawler: every file accounted for exactly once with a reason code, only good volumes listed, nothing
identifying written, re-runs reuse the header cache, and process-parallel reading changes nothing."""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from medssl.data.deid import SALT_FILE
from medssl.data.index import build_index, load_index, series_files
from medssl.data.phantoms import write_dicom_series
from medssl.data.sources import ArchiveIndex, DatasetRequest, split_scans

PATIENT = ("PHANTOM^TEST", "MEDSSL-PHANTOM-0001", "19700101", "20240102")
OUTPUTS = ("files.csv", "series.csv", "rejected_series.csv")


def _series(out: Path, n: int, number: int, **kw) -> list[Path]:
    """A 16x16xN series (1 x 1 x 2.5 mm) with fake patient identifiers in its headers."""
    vol = np.arange(16 * 16 * n, dtype=np.float32).reshape(16, 16, n) % 200
    return write_dicom_series(vol, np.diag([1.0, 1.0, 2.5, 1.0]), out, series_number=number, **kw)


def _mpeg2(ds: pydicom.Dataset, k: int) -> None:
    """Pretend the pixel data is MPEG2 video: a transfer syntax no installed plugin decodes."""
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([ds.PixelData])


def _make_archive(root: Path) -> dict[str, str]:
    """Write a messy archive; return the expected reason per relative path ("" = indexed). Permission cases differ
    for root, who reads everything."""
    expected: dict[str, str] = {}

    def add(paths, reason):
        expected.update({p.relative_to(root).as_posix(): reason for p in paths})

    good1 = _series(root / "p1" / "ct", 6, 1)
    add(good1, "")
    add(_series(root / "p1" / "mr", 5, 2, modality="MR"), "")
    add(_series(root / "p2" / "gap", 4, 3, slice_positions=[0, 2.5, 5, 10]), "missing_slice")
    add(_series(root / "p2" / "scout", 3, 4, extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}),
        "localizer")
    add(_series(root / "p2" / "video", 3, 5, extra=_mpeg2), "unsupported_transfer_syntax")
    junk = root / "junk"
    junk.mkdir()
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "notes.dcm").write_text("not an image\n")
    (root / "README.txt").write_text("archive readme\n")
    data = good1[0].read_bytes()
    (junk / "half.dcm").write_bytes(data[: len(data) // 2])
    shutil.copy(get_testdata_file("test-SR.dcm"), junk / "report.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), junk / "DICOMDIR")
    (junk / "secret.dcm").write_text("locked\n")
    os.chmod(junk / "secret.dcm", 0)
    (junk / "locked").mkdir()
    (junk / "locked" / "inside.txt").write_text("hidden\n")
    os.chmod(junk / "locked", 0)
    os.symlink("..", junk / "loop")
    os.symlink("missing.dcm", junk / "broken.dcm")
    reasons = {"empty.dcm": "empty_file", "notes.dcm": "not_dicom", "half.dcm": "truncated",
               "report.dcm": "no_pixel_data", "DICOMDIR": "dicomdir", "loop": "symlink_loop",
               "broken.dcm": "unreadable", "secret.dcm": "not_dicom" if os.geteuid() == 0 else "permission_denied"}
    reasons.update({"locked/inside.txt": "not_dicom"} if os.geteuid() == 0 else {"locked": "permission_denied"})
    expected.update({f"junk/{name}": reason for name, reason in reasons.items()})
    expected["README.txt"] = "not_dicom"
    return expected


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("archive")
    return root, _make_archive(root)


def _identifiers(root: Path) -> set[str]:
    """Every UID and fake patient datum in the archive's DICOM files."""
    found = set(PATIENT)
    for path in root.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - junk files
            continue
        found.update(str(ds.get(k, "")) for k in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID",
                                                    "FrameOfReferenceUID", "AccessionNumber"))
    return {f for f in found if len(f) > 8}  # (the truncated file's partial UID "1.2.8" is no identifier)


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_file_once_with_reason(archive, tmp_path):
    root, expected = archive
    result = build_index(root, tmp_path, workers=1, progress=False)
    assert result.seen == result.indexed + result.skipped == len(expected)
    rows = _read(result.files_csv)
    got = {r["path"]: r["reason"] for r in rows}
    assert len(rows) == len(got) and got == expected
    assert all((r["status"] == "indexed") == (r["reason"] == "") for r in rows)
    # grouped files (indexed, localizers, rejected stacks) carry a key; files skipped while reading do not
    grouped = {"", "missing_slice", "localizer", "unsupported_transfer_syntax"}
    assert all(bool(r["series_key"]) == (r["reason"] in grouped) for r in rows)

    files, series = load_index(tmp_path)
    assert [s["shape"] for s in series] == ["16x16x6", "16x16x5"] and [s["modality"] for s in series] == ["CT", "MR"]
    assert {s["spacing"] for s in series} == {"1x1x2.5"} and {s["status"] for s in series} == {"ok"}
    assert series[0]["n_files"] == 6 and series[0]["n_timepoints"] == 1 and series[0]["is_mosaic"] is False
    rejected = {r["reason"]: r for r in _read(result.rejected_csv)}
    assert set(rejected) == {"missing_slice", "unsupported_transfer_syntax"}
    assert str(root) not in "".join(r["message"] for r in rejected.values())
    assert result.reason_counts["not_dicom"] == 2 + 2 * (os.geteuid() == 0)
    assert (tmp_path / SALT_FILE).exists() and result.index_json.exists()

    by_key = series_files(tmp_path, root)
    assert [len(v) for v in by_key.values()] == [6, 5] and all(p.is_file() for v in by_key.values() for p in v)


def test_outputs_hold_no_identifiers(archive, tmp_path):
    root, _ = archive
    build_index(root, tmp_path, workers=1, progress=False)
    secrets = _identifiers(root)
    assert len(secrets) > 20  # UIDs of every good file were collected
    for path in tmp_path.iterdir():
        text = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in text]
        assert not leaked, f"{path.name} leaks {leaked[:3]}"
        # nor the archive's location: folder names can hold patient names (index.json and the header cache keep a
        # salted key of it)
        assert str(root.resolve()).encode() not in text, f"{path.name} holds the archive path"


def test_rerun_reuses_cache_and_sees_changes(tmp_path):
    root = tmp_path / "archive"
    _make_archive(root)
    out = tmp_path / "index"
    first = build_index(root, out, workers=1, progress=False)
    crawl_skips = 2 if os.geteuid() == 0 else 3  # the loop, the broken link (and the locked folder) are not opened
    assert first.headers_read == first.seen - crawl_skips
    snapshot = {name: (out / name).read_bytes() for name in OUTPUTS}
    again = build_index(root, out, workers=1, progress=False)
    permission_retries = 0 if os.geteuid() == 0 else 1  # permission_denied is never cached
    assert again.headers_read == permission_retries and again.headers_reused == first.headers_read - permission_retries
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == snapshot

    touched = next((root / "p1" / "ct").iterdir())
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (root / "README.txt").unlink()
    third = build_index(root, out, workers=1, progress=False)
    assert third.headers_read == 1 + permission_retries and third.seen == first.seen - 1
    assert "README.txt" not in (out / "files.csv").read_text() and "README.txt" not in (out / ".headers.json").read_text()
    assert [s["series_key"] for s in third.series] == [s["series_key"] for s in first.series]

    (out / ".headers.json").write_text("{not json")  # a corrupt cache is ignored, never trusted
    assert build_index(root, out, workers=1, progress=False).headers_read == third.seen - crawl_skips
    inside = build_index(root, root / "index", workers=1, progress=False)  # its own output is not crawled
    assert inside.seen == third.seen and not any(r["path"].startswith("index") for r in _read(inside.files_csv))


def test_process_pool_matches_in_process(archive, tmp_path):
    root, _ = archive
    one = build_index(root, tmp_path, workers=1, progress=False, reuse=False)
    snapshot = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}
    two = build_index(root, tmp_path, workers=2, progress=False, reuse=False)
    assert two.headers_read == one.headers_read > 0
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUTS} == snapshot


def test_policy_and_argument_errors(archive, tmp_path):
    root, _ = archive
    with pytest.raises(ValueError, match="tilt"):
        build_index(root, tmp_path, tilt="ignore")
    with pytest.raises(NotADirectoryError):
        build_index(root / "README.txt", tmp_path)
    result = build_index(root, tmp_path, workers=1, progress=False, uneven="resample")
    statuses = {s["n_files"]: s["status"] for s in result.series}
    assert statuses == {6: "ok", 5: "ok", 4: "ok_with_warnings"}  # the gapped series, resampled


def test_permission_denied_rows(archive, tmp_path, monkeypatch):
    """Unreadable folders and files become rows (simulated, so that the check also runs as root)."""
    root, _ = archive
    scandir, access = os.scandir, os.access

    def locked_scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", locked_scandir)
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).endswith("secret.dcm") and access(p, mode))
    build_index(root, tmp_path, workers=1, progress=False)
    reasons = {r["path"]: (r["status"], r["reason"]) for r in _read(tmp_path / "files.csv")}
    assert reasons["junk/locked"] == reasons["junk/secret.dcm"] == ("skipped", "permission_denied")
    assert "junk/locked/inside.txt" not in reasons


@pytest.mark.realdata
def test_real_archive(shared_data, tmp_path):
    archive = shared_data / "dicom"
    result = build_index(archive, tmp_path, workers=2, progress=False)
    assert result.seen == result.indexed + result.skipped
    files, series = load_index(tmp_path)
    assert len(files) == result.seen
    key = {r["path"]: r["series_key"] for r in files}
    reason = {r["path"]: r["reason"] for r in files}
    ts = [p for p in key if p.startswith("dcm_qa_ts/In/")]
    assert len(ts) == 9 and len({key[p] for p in ts}) == 9 and all(reason[p] == "" for p in ts)
    readmes = [p for p in key if p.startswith("dcm_qa_nih/In/") and p.endswith(".txt")]
    assert readmes and all(reason[p] == "not_dicom" for p in readmes)
    ct = [p for p in key if p.startswith("dcm_qa_ct/In/GE/")]
    assert len(ct) == 28 and {reason[p] for p in ct} == {"gantry_tilt"}
    assert key[ct[0]] not in {s["series_key"] for s in series}
    uid = str(pydicom.dcmread(archive / ts[0], stop_before_pixels=True).SeriesInstanceUID)
    assert all(uid.encode() not in p.read_bytes() for p in tmp_path.iterdir())

    relaxed = build_index(archive, tmp_path, workers=2, progress=False, tilt="correct", uneven="resample")
    assert relaxed.headers_read == 0  # the policy changed, the headers did not
    assert relaxed.seen == relaxed.indexed + relaxed.skipped and "gantry_tilt" not in relaxed.reason_counts
    ct_rows = [s for s in relaxed.series if s["series_key"] == key[ct[0]]]
    assert len(ct_rows) == 1 and ct_rows[0]["status"] == "ok_with_warnings" and ct_rows[0]["n_files"] == 28


# ------------------------------------------------------------------------------------------- patient grouping
def _patient_archive(root: Path) -> dict[str, str]:
    """Six patients with 1-3 series each (several studies), one series without PatientID, one without PatientID and
    StudyInstanceUID; returns the folder -> patient (or fallback) label of each series."""
    label = {}
    number = 0
    for p, n_series in enumerate((3, 1, 2, 3, 1, 2)):
        for s in range(n_series):
            number += 1
            folder = f"P{p}/s{s}"
            _series(root / folder, 3, number, patient_id=f"PID-{p:03d}-SECRET", seed=number,
                    study_uid=f"1.2.826.0.1.3680043.8.498.{p + 1}{s % 2 + 1}")  # two studies for multi-series patients
            label[folder] = f"P{p}"
    _series(root / "anon/s0", 3, 90, seed=90, extra={"PatientID": None})
    label["anon/s0"] = "study"
    _series(root / "bare/s0", 3, 91, seed=91, extra={"PatientID": "", "StudyInstanceUID": None})
    label["bare/s0"] = "series"
    return label


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("patients")
    label = _patient_archive(root / "archive")
    build_index(root / "archive", root / "index", workers=1, progress=False)
    return root / "archive", root / "index", label


def test_patient_key_groups_series_and_stores_no_patient_id(patients):
    archive, index, label = patients
    files, series = _read(index / "files.csv"), _read(index / "series.csv")
    folder_of = {r["series_key"]: r["path"].rsplit("/", 1)[0] for r in files if r["status"] == "indexed"}
    patient_of = {folder_of[s["series_key"]]: s["patient_key"] for s in series}
    source_of = {folder_of[s["series_key"]]: s["patient_key_source"] for s in series}
    assert len(series) == len(label) == 14
    for a, b in itertools.combinations(label, 2):  # same patient <=> same key
        assert (patient_of[a] == patient_of[b]) == (label[a] == label[b]), (a, b)
    assert source_of["anon/s0"] == "study_uid" and source_of["bare/s0"] == "series"
    assert all(re.fullmatch(r"[0-9a-f]{16}", k) for k in patient_of.values())
    summary = json.loads((index / "index.json").read_text())
    assert summary["patient_key_sources"] == {"patient_id": 12, "series": 1, "study_uid": 1}
    assert summary["counts"]["n_patients"] == 8
    # the raw PatientID is in no output, the header cache included, which holds only its keyed hash
    for path in index.iterdir():
        assert b"SECRET" not in path.read_bytes() and b"PID-0" not in path.read_bytes(), path.name
    cache = json.loads((index / ".headers.json").read_text())["files"]
    hashes = {e["header"]["patient_hash"] for e in cache.values()}
    assert len(hashes) == 6 + 1 and all(re.fullmatch(r"[0-9a-f]{16}", h) for h in hashes - {""})


def test_archive_split_never_divides_a_patient(patients, tmp_path):
    archive, index, _ = patients
    source = ArchiveIndex(str(index), str(archive), cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    patient = {s["series_key"]: s["patient_key"] for s in _read(index / "series.csv")}
    sizes = set()
    for seed in range(60):
        train, val = source.datasets(DatasetRequest(3, None, 2, seed, None, None))
        tr, va = {patient[k] for k in train.series_keys}, {patient[k] for k in val.series_keys}
        assert not tr & va, f"seed {seed}: a patient is on both sides"
        assert len(train.series_keys) + len(val.series_keys) == 14 and len(va) == round(8 * 0.3)
        sizes.add(len(val.series_keys))
    assert len(sizes) > 1  # whole patients move: the number of held-out series varies with the seed
    assert source.summary()["patients"] == 8 and source.summary()["val_patients"] == 2


def test_split_scans_grouped_and_ungrouped():
    rng = np.random.default_rng(0)
    for seed in range(200):
        groups = [f"g{int(g)}" for g in rng.integers(0, 7, size=int(rng.integers(2, 30)))]
        train, val = split_scans(len(groups), 0.25, seed, groups)
        assert sorted(train + val) == list(range(len(groups)))
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert train  # at least one training group
        # ungrouped: the seeded per-scan split it always was
        order = np.random.default_rng(seed).permutation(len(groups)).tolist()
        n_val = min(len(groups) - 1, max(1, round(len(groups) * 0.25)))
        assert split_scans(len(groups), 0.25, seed) == (sorted(order[n_val:]), sorted(order[:n_val]))
    assert split_scans(3, 0.5, 0, ["a", "a", "a"]) == ([0, 1, 2], [])  # one patient: nothing to hold out
    with pytest.raises(ValueError, match="group keys"):
        split_scans(3, 0.5, 0, ["a"])
