"""Tests for medssl.data.cache: content keys, invalidation, corrupt-entry recovery, safe format, preprocessing."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from safetensors import safe_open

import medssl.storage.hashing as hashing_mod
from medssl.data.cache import CACHE_FORMAT_VERSION, PreprocessCache, PreprocessPlan, content_hash
from medssl.data.loading import load_volume


def write(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


class CountingLoader:
    """The real loader, counting calls (picklable, so it also works in DataLoader workers)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source: object) -> MetaTensor:
        self.calls += 1
        return load_volume(source)


def entries(root: Path) -> list[Path]:
    return sorted((root / "entries").rglob("*.safetensors"))


@pytest.fixture
def vol(tmp_path: Path) -> Path:
    return write(tmp_path / "a.nii", np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))


def test_hit_miss_counts_and_persistence(tmp_path: Path, vol: Path) -> None:
    loader = CountingLoader()
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan(), loader=loader)
    assert not cache.contains(vol)
    first = cache.get(vol)
    second = cache.get(vol)
    assert (cache.stats.hits, cache.stats.misses, loader.calls) == (1, 1, 1)
    assert cache.contains(vol)
    assert torch.equal(first, second) and torch.equal(first.affine, second.affine)
    assert first.meta["spacing"] == (1.0, 1.0, 1.0)
    again = PreprocessCache(tmp_path / "c", PreprocessPlan(), loader=loader)  # another process, same root
    assert torch.equal(again.get(vol), first) and again.stats.hits == 1 and loader.calls == 1
    cache.clear()
    assert not cache.contains(vol) and entries(tmp_path / "c") == []


def test_content_change_with_restored_mtime_and_size_is_not_reused(tmp_path: Path, vol: Path) -> None:
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan())
    old = cache.get(vol)
    st = vol.stat()
    hash_before = content_hash(vol)
    write(vol, np.full((4, 5, 6), 7.0, dtype=np.float32))  # same dtype and shape: same byte size (.nii)
    os.utime(vol, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert vol.stat().st_size == st.st_size and vol.stat().st_mtime_ns == st.st_mtime_ns
    assert content_hash(vol) != hash_before
    new = cache.get(vol)
    assert cache.stats.misses == 2 and cache.stats.hits == 0
    assert torch.all(new == 7.0) and not torch.equal(new, old)


def test_memo_skips_rehash_but_stat_change_forces_it(tmp_path: Path, vol: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With the racy window off the memo is used; size/mtime/ctime changes force a re-hash of the bytes."""
    monkeypatch.setattr(hashing_mod, "RACY_WINDOW_NS", 0)
    hashed: list[Path] = []
    real = hashing_mod._hash_file
    monkeypatch.setattr(hashing_mod, "_hash_file", lambda p: hashed.append(p) or real(p))
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan())
    cache.get(vol)
    cache.get(vol)
    assert len(hashed) == 1 and cache.stats.hits == 1  # second access trusted the memo
    memo = list((tmp_path / "c" / "hashes").glob("*.json"))
    assert len(memo) == 1 and str(tmp_path) not in memo[0].read_text()  # no paths on disk
    st = vol.stat()
    os.utime(vol, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: re-hash, same content -> still a hit
    cache.get(vol)
    assert len(hashed) == 2 and cache.stats.hits == 2
    # rewrite with a restored mtime: ctime (which user space cannot set) still changes
    st = vol.stat()
    time.sleep(0.05)
    write(vol, np.full((4, 5, 6), 3.0, dtype=np.float32))
    os.utime(vol, ns=(st.st_atime_ns, st.st_mtime_ns))
    if vol.stat().st_ctime_ns == st.st_ctime_ns:
        pytest.skip("filesystem ctime granularity too coarse for this check")
    assert torch.all(cache.get(vol) == 3.0) and len(hashed) == 3 and cache.stats.misses == 2


def test_trust_stat_false_always_hashes(tmp_path: Path, vol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing_mod, "RACY_WINDOW_NS", 0)
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan(), trust_stat=False)
    cache.get(vol)
    cache.get(vol)
    assert not (tmp_path / "c" / "hashes").exists() and cache.stats.hits == 1


def test_content_hash_of_file_lists_and_folders(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    a = tmp_path / "s" / "1.dcm"
    b = tmp_path / "s" / "2.dcm"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert content_hash([a, b]) == content_hash([b, a]) == content_hash(tmp_path / "s")
    assert content_hash([a, b]) != content_hash([a])
    b.write_bytes(b"twO")
    assert content_hash([a, b]) != content_hash([a, a])


def test_plan_change_gives_new_key(tmp_path: Path) -> None:
    path = write(tmp_path / "a.nii", np.ones((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    p1, p2 = PreprocessPlan(target_spacing=(1, 1, 1)), PreprocessPlan(target_spacing=(2, 2, 2))
    assert p1.fingerprint() != p2.fingerprint()
    assert PreprocessPlan(target_spacing=(1.0, 1.0, 1.0)).fingerprint() == p1.fingerprint()
    c1, c2 = PreprocessCache(tmp_path / "c", p1), PreprocessCache(tmp_path / "c", p2)
    assert c1.key(path)[0] != c2.key(path)[0] and c1.key(path)[1] == c2.key(path)[1]
    assert c1.get(path).shape == (8, 8, 8) and c2.get(path).shape == (4, 4, 4)
    assert c2.stats.misses == 1 and len(entries(tmp_path / "c")) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_key"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, vol: Path, damage: str) -> None:
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan())
    good = cache.get(vol)
    (entry,) = entries(tmp_path / "c")
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x80\x04not a safetensors file" * 10)
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # a valid file that belongs to another key (e.g. copied by hand)
        other = write(tmp_path / "b.nii", np.zeros((4, 5, 6), np.float32))
        cache.get(other)
        os.replace(cache._path(cache.key(other)[0]), entry)
    assert torch.equal(cache.get(vol), good)  # nothing raised
    assert cache.stats.recomputed_corrupt == 1
    assert torch.equal(cache.get(vol), good) and cache.stats.recomputed_corrupt == 1  # repaired on disk


def test_entries_are_safetensors_without_paths(tmp_path: Path, vol: Path) -> None:
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan(target_spacing=(0.5, 1, 1), intensity="zscore"))
    cache.get(vol)
    cache.get([vol])  # a file list: same bytes, same entry
    (entry,) = entries(tmp_path / "c")
    assert entry.read_bytes()[:1] != b"\x80"  # no pickle protocol header
    with safe_open(str(entry), framework="pt") as f:
        assert set(f.keys()) == {"image", "affine"}
        meta = f.metadata()
        assert f.get_tensor("affine").dtype == torch.float64
    assert meta["format"] == str(CACHE_FORMAT_VERSION) and meta["source_count"] == "1"
    assert json.loads(meta["shape"]) == [8, 5, 6] and json.loads(meta["spacing"]) == [0.5, 1.0, 1.0]
    assert PreprocessPlan.from_dict(json.loads(meta["plan_json"])) == cache.plan
    assert not any(str(tmp_path) in v or "a.nii" in v for v in meta.values())
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.suffix not in (".safetensors", ".json")] == []


def test_resample_2mm_to_1mm(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    path = write(tmp_path / "a.nii", np.full((4, 4, 4), 5.0, np.float32), affine)
    out = PreprocessCache(tmp_path / "c", PreprocessPlan(target_spacing=(1.0, 1.0, 1.0))).get(path)
    assert out.shape == (8, 8, 8) and out.dtype == torch.float32  # same field of view: 4 x 2 mm = 8 x 1 mm
    assert out.meta["spacing"] == (1.0, 1.0, 1.0)
    expected = np.diag([1.0, 1.0, 1.0, 1.0])
    expected[:3, 3] = [9.5, 19.5, 29.5]  # first voxel centre half a new voxel inside the old corner (9, 19, 29)
    np.testing.assert_allclose(out.affine.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), 5.0, atol=1e-5)


def test_orientation_lps_to_ras(tmp_path: Path) -> None:
    lps = np.diag([-2.0, -3.0, 4.0, 1.0])
    lps[:3, 3] = [50.0, 60.0, -10.0]
    arr = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    out = PreprocessCache(tmp_path / "c", PreprocessPlan()).get(write(tmp_path / "a.nii", arr, lps))
    assert out.shape == (5, 6, 7)
    aff = out.affine.numpy()
    np.testing.assert_allclose(np.diag(aff)[:3], [2.0, 3.0, 4.0])  # axes now point to R, A, S
    ijk = np.array([[0, 0, 0], [4, 1, 6], [2, 5, 3]])
    world = nib.affines.apply_affine(lps, ijk)
    new_ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(aff), world)).astype(int)
    for (i, j, k), (a, b, c) in zip(ijk, new_ijk):  # same voxel at the same world position
        assert out[a, b, c].item() == arr[i, j, k]


def test_ct_window(tmp_path: Path) -> None:
    hu = np.array([-3000, -1000, 0, 500, 1000, 3000], np.float32).reshape(6, 1, 1)
    path = write(tmp_path / "ct.nii", np.broadcast_to(hu, (6, 2, 2)).copy())
    out = PreprocessCache(tmp_path / "c", PreprocessPlan(intensity="ct_window", window=(-1000, 1000))).get(path)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0], atol=1e-6)


def test_percentile_normalisation(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).gamma(2.0, 100.0, size=(20, 20, 20)).astype(np.float32)
    out = PreprocessCache(tmp_path / "c", PreprocessPlan(intensity="percentile")).get(
        write(tmp_path / "mr.nii", arr)).numpy()
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.003 < (out == 0).mean() < 0.007 and 0.003 < (out == 1).mean() < 0.007
    lo, hi = np.percentile(arr, [0.5, 99.5])
    np.testing.assert_allclose(out, np.clip((arr - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_plan_round_trip_labels_and_validation() -> None:
    plan = PreprocessPlan(target_spacing=(1, 1, 2), intensity="ct_window", window=(-100, 300))
    assert PreprocessPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    labels = plan.for_labels()
    assert (labels.intensity, labels.interpolation, labels.dtype) == ("none", "nearest", "int16")
    assert labels.target_spacing == plan.target_spacing and labels.fingerprint() != plan.fingerprint()
    with pytest.raises(ValueError):
        PreprocessPlan(intensity="minmax")
    with pytest.raises(ValueError, match="do not fit"):
        PreprocessPlan(dtype="uint8").apply(MetaTensor(torch.full((2, 2, 2), 300.0)))


def test_4d_volume_keeps_time_last(tmp_path: Path) -> None:
    path = write(tmp_path / "f.nii", np.ones((4, 4, 4, 3), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    out = PreprocessCache(tmp_path / "c", PreprocessPlan(target_spacing=(1, 1, 1))).get(path)
    assert out.shape == (8, 8, 8, 3)


def test_concurrent_writers_same_key(tmp_path: Path, vol: Path) -> None:
    caches = [PreprocessCache(tmp_path / "c", PreprocessPlan()) for _ in range(4)]
    results: list[torch.Tensor] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.get(vol))) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(torch.equal(r, results[0]) for r in results)
    assert len(entries(tmp_path / "c")) == 1 and not list((tmp_path / "c").rglob("*.tmp"))
    assert caches[0].get(vol) is not None and caches[0].stats.recomputed_corrupt == 0


def test_dicom_series_folder_and_file_list_share_an_entry(tmp_path: Path) -> None:
    from medssl.data.phantoms import write_dicom_series

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    hu = np.random.default_rng(0).integers(-1000, 1000, size=(8, 6, 4)).astype(np.float32)
    files = write_dicom_series(hu, affine, tmp_path / "series")
    cache = PreprocessCache(tmp_path / "c", PreprocessPlan(intensity="ct_window"))
    from_folder = cache.get(tmp_path / "series")
    from_list = cache.get(list(reversed(files)))
    assert (cache.stats.misses, cache.stats.hits) == (1, 1) and torch.equal(from_folder, from_list)
    assert from_folder.shape == (8, 6, 4) and from_folder.meta["spacing"] == pytest.approx((0.8, 0.8, 2.5))
    np.testing.assert_allclose(from_folder.numpy(), np.clip((hu + 1000) / 2000, 0, 1), atol=1e-6)
    with safe_open(str(entries(tmp_path / "c")[0]), framework="pt") as f:
        meta = f.metadata()
    assert meta["source_count"] == "4" and not any("PHANTOM" in v or "series" in v for v in meta.values())
