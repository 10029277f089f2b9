"""``medssl index --dedup``: byte copies of files, the same pixels under new UIDs and slightly altered copies are
reported and kept out of datasets; different scans are not; the file accounting still adds up."""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medssl.cli import main
from medssl.data.cache import PreprocessCache
from medssl.data.dataset import ScanDataset
from medssl.data.dedup import (
    NEAR_MAX_DISTANCE,
    canonical,
    exact_hash,
    file_key,
    perceptual_hash,
)
from medssl.data.deid import load_or_create_salt
from medssl.data.index import build_index
from medssl.data.phantoms import make_phantom, write_dicom_series
from medssl.data.plan import PreprocessPlan
from medssl.data.sources import ArchiveIndex, DatasetRequest

SHAPE = (48, 48, 24)
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _write(vol: np.ndarray, out: Path, seed: int, **kw) -> list[Path]:
    return write_dicom_series(vol, AFFINE, out, seed=seed, patient_id=f"DEDUP-{seed}", **kw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """a: the original (plus a byte copy of one of its files under another name); b: a byte copy of the folder;
    c: the same voxels re-written with new UIDs, another rescale, sorted file names; d: noise (10 HU) and a 20 HU
    shift; e, f: different phantoms."""
    root = tmp_path_factory.mktemp("dedup") / "archive"
    vol = make_phantom(SHAPE, (0.8, 0.8, 2.0), seed=0)[0]
    files = _write(vol, root / "a", seed=0)
    shutil.copy(files[3], root / "a" / "copy_of_slice_3.dcm")
    shutil.copytree(root / "a", root / "b")
    _write(vol, root / "c", seed=99, rescale=(0.5, -1024.0), file_order="sorted")
    noisy = np.round(vol + np.random.default_rng(1).normal(0, 10, SHAPE) + 20)
    _write(noisy, root / "d", seed=1)
    for name, seed in (("e", 2), ("f", 3)):
        _write(make_phantom(SHAPE, (0.8, 0.8, 2.0), seed=seed)[0], root / name, seed=seed)
    return root


@pytest.fixture(scope="module")
def indexed(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup_index")
    return build_index(archive, out, workers=1, progress=False, dedup=True), out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _key_of(files: list[dict], folder: str) -> str:
    keys = {r["series_key"] for r in files if r["path"].startswith(folder + "/") and r["status"] == "indexed"}
    assert len(keys) == 1, (folder, keys)
    return keys.pop()


def test_every_kind_is_found_and_nothing_else(indexed, archive):
    result, out = indexed
    files, series, dups = _rows(out / "files.csv"), _rows(out / "series.csv"), _rows(out / "duplicates.csv")
    salt = load_or_create_salt(out)
    # byte copies: one of the two identical files in a/ and all of b/ are skipped before grouping, keeping a/ whole
    copy = archive / "a" / "copy_of_slice_3.dcm"
    twin = next(p for p in (archive / "a").iterdir() if p != copy and p.read_bytes() == copy.read_bytes())
    same = sorted(f"{d}/{n}" for d in "ab" for n in (copy.name, twin.name))  # four identical files: keep the first
    expected = {rel: same[0] for rel in same[1:]}
    expected.update({f"b/{p.name}": f"a/{p.name}" for p in (archive / "a").iterdir() if p not in (copy, twin)})
    copies = {r["path"] for r in files if r["reason"] == "duplicate_file"}
    assert copies == set(expected) and len(copies) == SHAPE[2] + 2
    assert all(r["status"] == "skipped" for r in files if r["path"] in copies)
    key = {folder: _key_of(files, folder) for folder in "acdef"}
    assert {r["series_key"] for r in files if r["path"] in copies} == {key["a"]}  # the series of the original
    assert {(r["series_key"], r["duplicate_of"]) for r in dups if r["kind"] == "file"} == {
        (file_key(c, salt), file_key(o, salt)) for c, o in expected.items()}
    # series level: c has a's voxels under new UIDs; d is a's scan plus noise and a shift; e, f are other scans
    by_key = {r["series_key"]: r for r in dups if r["kind"] != "file"}
    assert set(by_key) == {key["c"], key["d"]}
    assert by_key[key["c"]]["kind"] == "series" and by_key[key["c"]]["duplicate_of"] == key["a"]
    assert by_key[key["d"]]["kind"] == "near" and by_key[key["d"]]["duplicate_of"] == key["a"]
    assert 0 < int(by_key[key["d"]]["distance"]) <= NEAR_MAX_DISTANCE
    status = {r["series_key"]: r["status"] for r in series}
    assert status == {key["a"]: "ok", key["c"]: "duplicate", key["d"]: "near_duplicate", key["e"]: "ok",
                      key["f"]: "ok"}
    assert all(HEX16.match(r[c]) for r in dups for c in ("series_key", "duplicate_of"))
    # accounting: every file once, copies among the skipped
    summary = json.loads((out / "index.json").read_text())
    counts = summary["counts"]
    assert counts["seen"] == len(files) == counts["indexed"] + counts["skipped"]
    assert summary["reason_counts"] == {"duplicate_file": len(copies)}
    assert summary["dedup"] == {"duplicate_files": len(copies), "duplicate_series": 1, "near_duplicate_series": 1,
                                "not_compared": 0, "near_max_distance": NEAR_MAX_DISTANCE, "near_bits": 511}
    assert counts["n_series"] == 5 and counts["n_usable_series"] == 3
    assert len(result.duplicates) == len(dups)


def test_without_dedup_nothing_is_decoded_or_excluded(archive, indexed, tmp_path):
    _, dedup_out = indexed
    result = build_index(archive, tmp_path, workers=1, progress=False)
    assert not (tmp_path / "duplicates.csv").exists() and "dedup" not in json.loads(
        (tmp_path / "index.json").read_text())
    # a byte copy of a slice puts two files at one position, so a/ + b/ are refused: dedup rescues them
    assert {r["status"] for r in result.series} == {"ok"} and len(result.series) == 4  # c d e f
    assert [r["n_files"] for r in result.rejected] == [2 * (SHAPE[2] + 1)]  # a/ and b/ share their UIDs
    # a re-run without --dedup on a dedup'ed folder drops the stale report
    build_index(archive, dedup_out / "again", workers=1, progress=False, dedup=True)
    build_index(archive, dedup_out / "again", workers=1, progress=False)
    assert not (dedup_out / "again" / "duplicates.csv").exists()


def test_excluded_duplicates_never_reach_a_dataset(indexed, archive, tmp_path):
    _, out = indexed
    series = _rows(out / "series.csv")
    excluded = {r["series_key"] for r in series if r["status"] != "ok"}
    ds = ScanDataset.from_index(out, archive, PreprocessCache(tmp_path / "cache", PreprocessPlan()))
    assert len(ds) == 3 and not set(ds.series_keys) & excluded
    used = {Path(p).relative_to(archive).parts[0] for src in ds.sources for p in src}
    assert used == {"a", "e", "f"}
    source = ArchiveIndex(str(out), str(archive), cache_dir=str(tmp_path / "cache"), val_fraction=0.34)
    for seed in range(5):
        train, val = source.datasets(DatasetRequest(3, None, 2, seed, None, None))
        keys = set(train.series_keys) | set(val.series_keys if val is not None else ())
        assert keys == set(ds.series_keys) and not keys & excluded
    assert source.summary()["scans"] == 3


def test_workers_and_cli_agree(indexed, archive, tmp_path, capsys):
    result, _ = indexed
    assert main(["index", str(archive), "--out", str(tmp_path / "cli"), "--dedup", "--workers", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert (f"duplicates: {SHAPE[2] + 2} file copies (skipped), 1 series with the same pixels, 1 near-duplicate"
            in " ".join(printed.split()))
    pooled = _rows(tmp_path / "cli" / "duplicates.csv")  # its own salt, so other keys: compare the structure
    assert [(r["kind"], r["distance"]) for r in pooled] == [(r["kind"], str(r["distance"])) for r in result.duplicates]
    assert sorted(r["status"] for r in _rows(tmp_path / "cli" / "series.csv")) == sorted(
        r["status"] for r in result.series)  # (series.csv order follows the salted keys)


# ------------------------------------------------------------------------------------------------ the hashes
def test_exact_hash_is_about_voxels_not_storage():
    vol = make_phantom((20, 18, 8), seed=4)[0]
    aff = np.diag([0.7, 0.7, 3.0, 1.0])
    flipped = np.diag([0.7, 0.7, -3.0, 1.0])  # the same grid stored with the slices in reverse order
    flipped[2, 3] = 3.0 * 7
    a = exact_hash(*canonical(vol, aff))
    assert a == exact_hash(*canonical(vol.astype(np.int16), aff))
    assert a == exact_hash(*canonical(vol[:, :, ::-1].copy(), flipped))
    changed = vol.copy()
    changed[3, 4, 5] += 1
    assert exact_hash(*canonical(changed, aff)) != a
    assert exact_hash(*canonical(vol, np.diag([0.7, 0.7, 2.5, 1.0]))) != a  # spacing is part of it


def test_perceptual_hash_separates_copies_from_other_scans():
    rng = np.random.default_rng(0)
    scans = [make_phantom(SHAPE, (0.8, 0.8, 2.0), seed=s)[0] for s in range(8)]
    bits = [perceptual_hash(v) for v in scans]
    different = [int((x != y).sum()) for x, y in itertools.combinations(bits, 2)]
    altered = [int((perceptual_hash(v + rng.normal(0, sd, SHAPE) + shift) != b).sum())
               for v, b in zip(scans, bits) for sd, shift in ((0, 50), (0, -300), (5, 0), (10, 20))]
    altered += [int((perceptual_hash(1.2 * v + 7) != b).sum()) for v, b in zip(scans, bits)]
    print(f"near-duplicate hash: altered copies <= {max(altered)} bits, different scans >= {min(different)} bits, "
          f"threshold {NEAR_MAX_DISTANCE}")
    assert max(altered) <= NEAR_MAX_DISTANCE < min(different)
    assert perceptual_hash(np.full(SHAPE, 40.0)) is None  # a blank volume matches nothing


class _NaiveKept:
    """Reference for the kept-hash search of find_duplicates (``dedup._KeptBits``): unpacked hashes, compared one
    pair at a time; the earliest of the closest wins."""

    def __init__(self):
        self.keys, self.bits = [], []

    def nearest(self, bits):
        dists = [int(np.count_nonzero(kept != bits)) for kept in self.bits]
        if not dists:
            return -1, len(bits) + 1
        best = dists.index(min(dists))
        return best, dists[best]

    def add(self, key, bits):
        self.keys.append(key)
        self.bits.append(bits)


@pytest.mark.parametrize("popcount", ["numpy", "table"])
def test_find_duplicates_matches_a_naive_pairwise_scan(popcount, monkeypatch):
    """The packed XOR/popcount search gives exactly the rows of a bit-by-bit scan over all kept hashes: exact
    copies, planted near copies at and beyond the threshold, ties (the earliest kept wins), constant volumes, and
    more kept hashes than the first allocation holds."""
    from medssl.data import dedup

    if popcount == "table":  # numpy < 2 has no bitwise_count
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    prints, order = {}, []
    originals = [rng.random(dedup.NEAR_BITS) < 0.5 for _ in range(150)]
    for i, bits in enumerate(originals):
        prints[f"s{i:03d}"] = dedup.Fingerprint(f"e{i}", bits)
    for j, (src, flips) in enumerate([(3, 5), (7, NEAR_MAX_DISTANCE), (9, NEAR_MAX_DISTANCE + 1), (140, 40)]):
        bits = originals[src].copy()
        bits[rng.choice(dedup.NEAR_BITS, flips, replace=False)] ^= True
        prints[f"n{j}"] = dedup.Fingerprint(f"near{j}", bits)
    prints["tie"] = dedup.Fingerprint("tie", originals[20].copy())  # distance 0 to s020 and to its exact twin below
    prints["s020b"] = dedup.Fingerprint("twin", originals[20].copy())
    prints["copy"] = dedup.Fingerprint("e5", originals[5])          # same pixels as s005
    prints["flat"] = dedup.Fingerprint("flat", None)                 # constant volume: no perceptual hash
    order = ["s020b"] + sorted(k for k in prints if k.startswith("s0") or k.startswith("s1")) \
        + ["n0", "n1", "n2", "n3", "tie", "copy", "flat"]
    order = list(dict.fromkeys(order))
    got = dedup.find_duplicates(order, prints)
    with monkeypatch.context() as m:
        m.setattr(dedup, "_KeptBits", _NaiveKept)
        assert got == dedup.find_duplicates(order, prints)
    kinds = {r["series_key"]: (r["kind"], r["duplicate_of"], r["distance"]) for r in got}
    assert kinds["n0"] == ("near", "s003", 5) and kinds["n1"] == ("near", "s007", NEAR_MAX_DISTANCE)
    assert kinds["s020"] == ("near", "s020b", 0) and kinds["tie"] == ("near", "s020b", 0)
    assert kinds["copy"] == ("series", "s005", 0) and "n2" not in kinds and "flat" not in kinds


def test_rerun_reads_only_changed_files_for_byte_copies(archive, tmp_path, monkeypatch):
    """The salted content digests of --dedup are cached with the headers: an unchanged archive is not read again
    for file copies (also after a run without --dedup in between), a file rewritten in place is, and the cache
    holds no plain sha256 of any file."""
    from medssl.data import dedup
    from medssl.storage.hashing import file_sha256

    work = tmp_path / "archive"
    shutil.copytree(archive, work)
    out = tmp_path / "index"
    first = build_index(work, out, workers=1, progress=False, dedup=True)
    hashed: list[str] = []
    original = dedup.file_sha256

    def counting(path):
        hashed.append(Path(path).relative_to(work).as_posix())
        return original(path)

    monkeypatch.setattr(dedup, "file_sha256", counting)
    build_index(work, out, workers=1, progress=False)  # without --dedup: the digests stay in the cache
    again = build_index(work, out, workers=1, progress=False, dedup=True)
    assert hashed == [] and again.duplicates == first.duplicates
    cache = (out / ".headers.json").read_text()
    assert not any(file_sha256(p) in cache for p in list((work / "a").iterdir())[:3])
    # one file of e/ rewritten with other bytes of the same size: it alone is read again, and it is no copy
    victim = sorted((work / "e").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    third = build_index(work, out, workers=1, progress=False, dedup=True)
    assert hashed == [victim.relative_to(work).as_posix()]
    assert third.duplicates == first.duplicates
