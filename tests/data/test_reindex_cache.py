"""Re-index with the assessment cache: an unchanged archive reuses every stack's assessment and leaves the manifests
alone, and whatever changes (a file's content, a removed file, the policy, the salt, a damaged cache) re-assesses
exactly the series it affects — the manifests always equal those of an index built from scratch."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from medssl.data.assess_cache import ASSESS_CACHE_FILE
from medssl.data.deid import SALT_FILE
from medssl.data.index import build_index
from tests.data.test_index import OUTPUTS, PATIENT, _make_archive

N_STACKS = 5  # the messy archive's p1/ct, p1/mr, p2/gap (rejected), p2/scout (localizer), p2/video (rejected)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def _from_scratch(root: Path, out: Path, tmp: Path, **policy) -> dict[str, bytes]:
    """The manifests of a reuse=False index of ``root`` in a new folder with ``out``'s salt (so keys compare)."""
    fresh = tmp / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    shutil.copy(out / SALT_FILE, fresh / SALT_FILE)
    result = build_index(root, fresh, workers=1, progress=False, reuse=False, **policy)
    assert result.stacks_assessed == N_STACKS and result.stacks_reused == 0
    return _outputs(fresh)


@pytest.fixture
def indexed(tmp_path) -> tuple[Path, Path]:
    root, out = tmp_path / "archive", tmp_path / "index"
    _make_archive(root)
    first = build_index(root, out, workers=1, progress=False)
    assert first.stacks_assessed == N_STACKS and first.stacks_reused == 0
    return root, out


def test_unchanged_archive_reuses_every_assessment_and_rewrites_nothing(indexed, tmp_path):
    root, out = indexed
    before = _outputs(out)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in (*OUTPUTS, ASSESS_CACHE_FILE)}
    again = build_index(root, out, workers=1, progress=False)
    assert again.stacks_assessed == 0 and again.stacks_reused == N_STACKS
    assert _outputs(out) == before == _from_scratch(root, out, tmp_path)
    assert {name: (out / name).stat().st_mtime_ns for name in mtimes} == mtimes
    assert set(again.unchanged_outputs) == {*OUTPUTS, ".headers.json", ASSESS_CACHE_FILE}
    summary = json.loads((out / "index.json").read_text())
    assert summary["counts"]["stacks_reused"] == N_STACKS and summary["counts"]["stacks_assessed"] == 0
    assert summary["unchanged_outputs"] == again.unchanged_outputs and summary["timings"]["total_s"] > 0
    text = (out / ASSESS_CACHE_FILE).read_bytes()  # salted keys and published rows only: no paths, no identifiers
    for secret in (*PATIENT, str(root.resolve()), "p1/ct", "scout"):
        assert secret.encode() not in text, secret


def test_changed_content_reassesses_only_its_series(indexed, tmp_path):
    root, out = indexed
    before = _outputs(out)
    touched = sorted((root / "p1" / "ct").iterdir())[2]
    data = bytearray(touched.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte: same size, new content, new mtime
    stat = touched.stat()
    touched.write_bytes(bytes(data))
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = build_index(root, out, workers=1, progress=False)
    assert again.headers_read >= 1 and again.stacks_assessed == 1 and again.stacks_reused == N_STACKS - 1
    assert _outputs(out) == before == _from_scratch(root, out, tmp_path)


def test_removed_file_reassesses_its_series_and_updates_the_manifests(indexed, tmp_path):
    root, out = indexed
    ct_key = next(r["series_key"] for r in build_index(root, out, workers=1, progress=False).series
                  if r["n_files"] == 6)
    sorted((root / "p1" / "ct").iterdir())[3].unlink()  # a slice from the middle: the series now has a gap
    again = build_index(root, out, workers=1, progress=False)
    assert again.stacks_assessed == 1 and again.stacks_reused == N_STACKS - 1
    assert ct_key not in {s["series_key"] for s in again.series}
    assert {r["series_key"]: r["reason"] for r in again.rejected}[ct_key] == "missing_slice"
    assert _outputs(out) == _from_scratch(root, out, tmp_path)


def test_policy_or_salt_change_reassesses_everything(indexed, tmp_path):
    root, out = indexed
    relaxed = build_index(root, out, workers=1, progress=False, uneven="resample")
    assert relaxed.stacks_assessed == N_STACKS and relaxed.stacks_reused == 0
    assert "missing_slice" not in {r["reason"] for r in relaxed.rejected}  # the gap series is resampled now
    assert _outputs(out) == _from_scratch(root, out, tmp_path, uneven="resample")
    assert build_index(root, out, workers=1, progress=False, uneven="resample").stacks_reused == N_STACKS
    (out / SALT_FILE).unlink()  # a new salt: every key changes, nothing cached may be served
    salted = build_index(root, out, workers=1, progress=False)
    assert salted.stacks_assessed == N_STACKS and salted.stacks_reused == 0
    assert _outputs(out) == _from_scratch(root, out, tmp_path)


def test_corrupt_cache_is_rebuilt_with_a_warning(indexed, tmp_path, caplog):
    root, out = indexed
    before = _outputs(out)
    (out / ASSESS_CACHE_FILE).write_text('{"format": 1, "groups": {"abc": [trunc')
    with caplog.at_level(logging.WARNING, logger="medssl.data.assess_cache"):
        rebuilt = build_index(root, out, workers=1, progress=False)
    assert "unreadable assessment cache" in caplog.text
    assert rebuilt.stacks_assessed == N_STACKS and _outputs(out) == before
    assert build_index(root, out, workers=1, progress=False).stacks_reused == N_STACKS  # the rebuilt file is good

    cache = json.loads((out / ASSESS_CACHE_FILE).read_text())
    key = next(iter(cache["groups"]))
    cache["groups"][key][0]["members"] = [0, 0]  # one entry that no longer partitions its group
    (out / ASSESS_CACHE_FILE).write_text(json.dumps(cache))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medssl.data.assess_cache"):
        partly = build_index(root, out, workers=1, progress=False)
    assert "invalid assessment cache entry" in caplog.text
    assert partly.stacks_assessed == 1 and partly.stacks_reused == N_STACKS - 1 and _outputs(out) == before
