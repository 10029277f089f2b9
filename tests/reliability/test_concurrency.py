"""Concurrency: two ``medssl index`` processes on one output folder, and the preprocessing cache under DataLoader
worker processes.

The index folder is locked (``medssl.data.lock``): a second run waits for the first and then finishes on its own,
so the folder always holds one run's complete, mutually consistent manifests; past the timeout the waiting run
raises ``index_locked`` and writes nothing; a holder killed with SIGKILL releases the lock; readers of the
manifests hold the lock shared, so they wait for an index run but not for each other. The cache's entries are
written to a temp file and renamed, so workers that compute one entry at the same time from a cold cache leave one
valid entry and return identical arrays.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medssl.data.cache import PreprocessCache
from medssl.data.dataset import ScanDataset
from medssl.data.index import build_index
from medssl.data.loading import load_volume
from medssl.data.lock import LOCK_FILE, IndexLockedError, folder_lock
from medssl.data.plan import PreprocessPlan
from medssl.errors import Reason
from tests.conftest import REPO
from tests.reliability.conftest import ramp, series


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """12 series of 8 slices, plus a junk file: enough that two index runs overlap."""
    root = tmp_path_factory.mktemp("concurrent") / "archive"
    for k in range(12):
        series(root / f"p{k}" / "ct", n=8, number=k + 1, vol=ramp((16, 16, 8)) + 7 * k, seed=k,
               patient_id=f"CONC-{k}", file_order="shuffled")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _index_proc(archive: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medssl.cli", "index", str(archive), "--out", str(out),
                             "--workers", "1", "--quiet", "--no-reuse", *extra],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_consistent(archive: Path, out: Path) -> None:
    """files.csv / series.csv / index.json / salt.txt describe one and the same complete run."""
    files, series_rows = _read(out / "files.csv"), _read(out / "series.csv")
    summary = json.loads((out / "index.json").read_text())
    on_disk = {p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file()}
    assert {r["path"] for r in files} == on_disk and len(files) == len(on_disk)
    counts = summary["counts"]
    assert counts["seen"] == len(files) == counts["indexed"] + counts["skipped"]
    assert counts["indexed"] == sum(r["status"] == "indexed" for r in files) == 12 * 8
    assert counts["n_series"] == len(series_rows) == 12
    assert {r["series_key"] for r in files if r["status"] == "indexed"} == {s["series_key"] for s in series_rows}
    # the keys were made with the salt that is on disk: an in-process re-run with that salt gives the same keys
    again = build_index(archive, out, workers=1, progress=False)
    assert sorted(s["series_key"] for s in again.series) == sorted(s["series_key"] for s in series_rows)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_two_index_runs_on_one_folder(archive, tmp_path):
    out = tmp_path / "index"
    for round_ in range(2):  # a fresh folder (both race to create the salt), then an existing one
        procs = [_index_proc(archive, out) for _ in range(2)]
        results = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
        _assert_consistent(archive, out)
    assert (out / LOCK_FILE).is_file()


def test_second_run_waits_for_the_lock_holder(archive, tmp_path):
    out = tmp_path / "index"
    with folder_lock(out):
        proc = _index_proc(archive, out)
        time.sleep(2.0)  # far longer than the run needs when the folder is free
        assert proc.poll() is None, "the second run did not wait for the lock"
        assert not (out / "files.csv").exists() and not (out / "salt.txt").exists()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    _assert_consistent(archive, out)


def test_timeout_raises_typed_error_naming_the_folder(archive, tmp_path):
    out = tmp_path / "index"
    with folder_lock(out):
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError) as info:
            build_index(archive, out, workers=1, progress=False, lock_timeout_s=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
    assert info.value.reason is Reason.INDEX_LOCKED and str(out) in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # it wrote nothing


def _lock_holder(out: Path, seconds: float) -> subprocess.Popen:
    """Another process holding ``out``'s index lock (exclusively) for ``seconds``; returns once it holds it."""
    code = ("import sys, time\nfrom medssl.data.lock import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out), str(seconds)], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_killed_holder_releases_the_lock(archive, tmp_path):
    out = tmp_path / "index"
    holder = _lock_holder(out, 600)
    try:
        with pytest.raises(IndexLockedError):
            build_index(archive, out, workers=1, progress=False, lock_timeout_s=0.2)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    build_index(archive, out, workers=1, progress=False, lock_timeout_s=10)  # the stale lock file blocks nothing
    _assert_consistent(archive, out)


def test_readers_wait_for_an_index_run_and_share_with_each_other(archive, tmp_path):
    """from_index reads the manifests under the folder's shared lock: it waits for an index run (the exclusive
    holder) and gives up past its timeout with index_locked; readers do not block each other."""
    out = tmp_path / "index"
    build_index(archive, out, workers=1, progress=False)
    cache = PreprocessCache(tmp_path / "cache", PreprocessPlan())
    with folder_lock(out):  # an index run in progress
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError) as info:
            ScanDataset.from_index(out, archive, cache, lock_timeout_s=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
    assert info.value.reason is Reason.INDEX_LOCKED and str(out) in str(info.value)
    with folder_lock(out, shared=True), folder_lock(out, shared=True, timeout_s=0):  # two readers at once
        assert len(ScanDataset.from_index(out, archive, cache, lock_timeout_s=0)) == 12
        with pytest.raises(IndexLockedError):
            with folder_lock(out, timeout_s=0):  # an index run waits for the readers
                pass
    holder = _lock_holder(out, 1.5)
    try:
        t0 = time.monotonic()
        assert len(ScanDataset.from_index(out, archive, cache, lock_timeout_s=60)) == 12  # waited, then read
        assert time.monotonic() - t0 > 0.5
    finally:
        holder.wait(timeout=30)
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        ScanDataset.from_index(tmp_path / "empty", archive, cache)


# ------------------------------------------------------------------------------------------------------- cache
def _slow_load(source, delay: float):
    """The default loader, slowed so that workers computing one entry overlap."""
    time.sleep(delay)
    return load_volume(source)


def test_cache_under_dataloader_workers(archive, tmp_path):
    plan = PreprocessPlan(intensity="ct_window", window=(-200.0, 300.0))
    shared = sorted((archive / "p0" / "ct").iterdir())
    other = sorted((archive / "p1" / "ct").iterdir())
    sources = [shared] * 6 + [other] * 2  # several items per entry, the cache cold
    cache = PreprocessCache(tmp_path / "cache", plan, loader=partial(_slow_load, delay=0.3))
    ds = ScanDataset(sources, cache, spatial_dims=3)
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    images = [batch["image"][0].as_tensor() for batch in loader]
    expected = {id(s): plan.apply(load_volume(s)).as_tensor() for s in (shared, other)}
    for img, src in zip(images, sources):
        assert torch.equal(img[0], expected[id(src)].to(torch.float32))
    entries = sorted((tmp_path / "cache" / "entries").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert len(files) == 2 and all(p.suffix == ".safetensors" for p in files), [p.name for p in files]
    fresh = PreprocessCache(tmp_path / "cache", plan)  # every entry valid: hits, nothing recomputed
    for src in (shared, other):
        assert torch.equal(fresh.get(src).as_tensor(), expected[id(src)])
    assert (fresh.stats.hits, fresh.stats.misses, fresh.stats.recomputed_corrupt) == (2, 0, 0)


def _hammer(args) -> list[str]:
    root, plan, sources, rounds = args
    cache = PreprocessCache(root, plan)
    out = []
    for r in range(rounds):
        for src in (sources if r % 2 == 0 else sources[::-1]):
            out.append(hashlib.sha256(np.asarray(cache.get(src).as_tensor()).tobytes()).hexdigest())
    return out


def test_cache_with_concurrent_processes_and_evictions(archive, tmp_path):
    """Four processes read and write three entries from a cold cache while the main process deletes the entries
    twice (as a user clearing space would)."""
    import multiprocessing as mp

    plan = PreprocessPlan()
    sources = [sorted((archive / f"p{k}" / "ct").iterdir()) for k in range(3)]
    root = tmp_path / "cache"
    with mp.get_context("fork").Pool(4) as pool:
        pending = pool.map_async(_hammer, [(root, plan, sources, 6)] * 4)
        for _ in range(2):
            time.sleep(0.3)
            for entry in (root / "entries").rglob("*.safetensors"):
                entry.unlink(missing_ok=True)
        results = pending.get(timeout=300)
    assert all(r == results[0] for r in results)  # every process saw the same arrays
    fresh = PreprocessCache(root, plan)
    for src in sources:
        assert torch.equal(fresh.get(src).as_tensor(), plan.apply(load_volume(src)).as_tensor())
    assert fresh.stats.recomputed_corrupt == 0
