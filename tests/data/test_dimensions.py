"""Enhanced multi-frame objects split by their dimension index (medssl/data/dimensions.py), checked against volumes
written into a synthetic enhanced file, and against dcm2niix's conversions of real Philips enhanced MR."""
from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as Seq
from pydicom.uid import generate_uid

from medssl.data.convert import convert_series
from medssl.data.dicom import find_series, read_dicom_volume
from medssl.data.index import build_index, series_files
from tests.conftest import require_shared
from tests.data.enhanced_objects import ENHANCED_MR, enhanced_dataset

# DimensionIndexPointer tags
STACK_ID, IN_STACK, TEMPORAL, ECHO_TIME = 0x00209056, 0x00209057, 0x00209128, 0x00189082


def _enhanced_mr(path: Path, volumes: dict[int, np.ndarray], spacing=(0.9, 0.8, 2.5), seed: int = 0,
                 pointers=(STACK_ID, IN_STACK, TEMPORAL, ECHO_TIME),
                 index=lambda e, z, t: [1, z + 1, t + 1, e]) -> None:
    """One Enhanced MR file holding one 4D volume (X, Y, Z, T) per echo (``volumes``: echo index -> array); frames
    stored in a shuffled order, indexed by (stack, in-stack position, temporal position, effective echo time), or
    by ``pointers`` with ``index(e, z, t)`` giving each frame's DimensionIndexValues."""
    ds = enhanced_dataset(ENHANCED_MR, "MR", 7)
    first = next(iter(volumes.values()))
    nx, ny, nz, nt = first.shape
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    dims = []
    for pointer in pointers:
        item = Dataset()
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
        dims.append(item)
    ds.DimensionIndexSequence = Seq(dims)
    shared = Dataset()
    pm, po = Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness = [spacing[1], spacing[0]], spacing[2]
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Seq([pm]), Seq([po])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    order = [(e, z, t) for e in volumes for z in range(nz) for t in range(nt)]
    np.random.default_rng(seed).shuffle(order)
    frames, planes = [], []
    for e, z, t in order:
        f = Dataset()
        pp, fc, pvt = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = [-10.0, 5.0, 30.0 + z * spacing[2]]
        fc.DimensionIndexValues = index(e, z, t)
        pvt.RescaleSlope, pvt.RescaleIntercept = 2, -7
        f.PlanePositionSequence, f.FrameContentSequence = Seq([pp]), Seq([fc])
        f.PixelValueTransformationSequence = Seq([pvt])
        frames.append(f)
        planes.append(volumes[e][:, :, z, t].T)  # (rows=Y, columns=X)
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack(planes).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _volumes() -> dict[int, np.ndarray]:
    shape = (6, 5, 4, 3)
    i, j, k, t = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    base = i + 10 * j + 100 * k + 1000 * t
    return {1: base, 2: base + 5000}


def test_echoes_split_into_stacks_and_time_is_the_4th_axis(tmp_path):
    vols = _volumes()
    _enhanced_mr(tmp_path / "enh.dcm", vols)
    stacks = find_series(tmp_path / "enh.dcm")
    assert [s.split for s in stacks] == ["echo1", "echo2"]
    for n, echo in ((1, 1), (2, 2)):
        volume, affine, meta = read_dicom_volume(tmp_path / "enh.dcm", series=n)
        np.testing.assert_array_equal(volume.values(), vols[echo] * 2 - 7)  # per-frame rescale applied
        assert meta["n_timepoints"] == 3 and meta["n_slices"] == 4
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.9, 0.8, 2.5), atol=1e-6)


def test_a_file_of_several_stacks_needs_a_choice(tmp_path):
    """Reading it without series= is ambiguous (never mixed_orientation): the error lists the split labels."""
    from medssl.data.dicom import read_dicom_series
    from medssl.errors import DicomSeriesError, Reason

    _enhanced_mr(tmp_path / "enh.dcm", _volumes())
    with pytest.raises(DicomSeriesError) as info:
        read_dicom_series(tmp_path / "enh.dcm")
    assert info.value.reason == Reason.AMBIGUOUS_SERIES and "split=echo2" in str(info.value)


COMPLEX, B_VALUE, GRADIENT = 0x00089208, 0x00189087, 0x00189089


def test_complex_components_split_and_diffusion_is_the_4th_axis_last_dimension_slowest(tmp_path):
    """Magnitude and phase (complex component) are two stacks; b-value and gradient direction both index the 4th
    axis, the dimension listed last (gradient direction) varying slowest."""
    vols = _volumes()  # 3 volumes per component, written with these (b-value, direction) index pairs
    pairs = [(2, 1), (1, 2), (1, 1)]
    order = sorted(range(3), key=lambda t: (pairs[t][1], pairs[t][0]))  # gradient slowest, then b-value
    assert order == [2, 0, 1]  # (b-value slowest would give [2, 1, 0]; file order [0, 1, 2])

    def index(e, z, t):
        return [1, z + 1, e, *pairs[t]]

    _enhanced_mr(tmp_path / "dwi.dcm", vols, pointers=(STACK_ID, IN_STACK, COMPLEX, B_VALUE, GRADIENT),
                 index=index)
    stacks = find_series(tmp_path / "dwi.dcm")
    assert [s.split for s in stacks] == ["complex1", "complex2"]
    for n, component in ((1, 1), (2, 2)):
        volume, _, meta = read_dicom_volume(tmp_path / "dwi.dcm", series=n)
        np.testing.assert_array_equal(volume.values(), (vols[component] * 2 - 7)[..., order])


def test_index_lists_one_row_per_stack_and_series_files_finds_the_file(tmp_path):
    (tmp_path / "archive").mkdir()
    _enhanced_mr(tmp_path / "archive" / "enh.dcm", _volumes())
    result = build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False)
    assert [s["shape"] for s in result.series] == ["6x5x4x3", "6x5x4x3"] and not result.rejected
    assert [s["split"] for s in result.series] == ["echo1", "echo2"]
    assert result.indexed == 1 and result.skipped == 0
    by_key = series_files(tmp_path / "index", tmp_path / "archive")
    assert set(by_key) == {s["series_key"] for s in result.series}
    assert all(files == [tmp_path / "archive" / "enh.dcm"] for files in by_key.values())
    again = build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False)
    assert (again.headers_read, again.stacks_assessed, again.stacks_reused) == (0, 0, 2)  # both caches reused
    assert again.series == result.series


def test_dedup_reads_each_stack_of_a_shared_file(tmp_path):
    """--dedup fingerprints every stack of a file that holds several (by key), and finds an exact copy of the file
    under new UIDs as duplicates of both stacks."""
    (tmp_path / "archive").mkdir()
    vols = {1: _volumes()[1], 2: np.random.default_rng(5).integers(0, 3000, _volumes()[1].shape)}  # unlike echoes
    _enhanced_mr(tmp_path / "archive" / "enh.dcm", vols)
    _enhanced_mr(tmp_path / "archive" / "copy.dcm", vols, seed=1)  # same pixels, new UIDs, other frame order
    result = build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False, dedup=True)
    assert len(result.series) == 4
    assert sorted(r["kind"] for r in result.duplicates) == ["series", "series"]
    assert sorted(s["status"] for s in result.series) == ["duplicate", "duplicate", "ok", "ok"]


def test_one_stack_file_keeps_its_unsplit_key(tmp_path):
    """A dimension along which all frames agree splits nothing: single-echo files keep the keys they had."""
    _enhanced_mr(tmp_path / "enh.dcm", {1: _volumes()[1]})
    [stack] = find_series(tmp_path / "enh.dcm")
    assert stack.split == "" and len(stack.raw_key) == 6


# ---------------------------------------------------------------------- real Philips enhanced MR vs dcm2niix
PHILIPS = ("dicom", "dcm_qa_philips_asl_enh")


@pytest.fixture(scope="module")
def philips(tmp_path_factory) -> Path:
    """The enhanced inputs, gunzipped (they are stored as .dcm.gz); non-image objects included."""
    src = require_shared(*PHILIPS, "In", "Enhanced")
    out = tmp_path_factory.mktemp("philips_enhanced")
    for f in sorted(src.glob("*.dcm.gz")):
        (out / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    return out


def _references() -> list[tuple[str, str, str]]:
    """(input file, split label, reference): every volume in Ref_regenerated. 301's eight phases are its
    trigger-delay stacks in order (dcm2niix names them by the delay in ms)."""
    ref = require_shared(*PHILIPS, "Ref_regenerated")
    phases = sorted(ref.glob("301_*_t*.nii.gz"), key=lambda p: int(re.search(r"_t(\d+)\.nii", p.name).group(1)))
    return ([("201_pCASL_real.dcm", "", "201_pCASL_enhanced_real.nii.gz"),
             ("401_3D_pCASL_6mm_real.dcm", "", "401_3D_pCASL_6mm_enhanced_real.nii.gz"),
             ("402_SOURCE_-_3D_pCASL_6mm.dcm", "", "402_SOURCE_-_3D_pCASL_6mm_enhanced.nii.gz")]
            + [("301_ASL_MultiPhase_real.dcm", f"trigger{k}", p.name) for k, p in enumerate(phases, 1)])


def _same():
    sys.path.insert(0, str(require_shared().parent / "tools"))
    from compare_nifti import same

    return same


@pytest.mark.realdata
def test_philips_enhanced_reproduces_every_reference_volume(philips, tmp_path):
    refs = _references()
    assert len(refs) == 11
    same = _same()
    for name, split, ref in refs:
        stacks = find_series(philips / name)
        [n] = [i for i, s in enumerate(stacks, 1) if s.split == split]
        out = tmp_path / f"{Path(ref).name}"
        convert_series(philips / name, out, series=n)
        ok, why = same(out, require_shared(*PHILIPS, "Ref_regenerated", ref))
        assert ok, f"{name} {split}: {why}"


@pytest.mark.realdata
def test_philips_folder_index_skips_non_image_objects_with_reason(philips, tmp_path):
    result = build_index(philips, tmp_path / "index", workers=1, progress=False)
    assert len(result.series) == 11 and not result.rejected
    assert result.indexed == 4 and result.reason_counts == {"no_pixel_data": 9}
    assert sorted(s["shape"] for s in result.series).count("80x80x6") == 8


def test_dataset_leaves_out_stacks_it_cannot_read_yet_and_says_so(tmp_path, caplog):
    """A file holding several stacks: ScanDataset.from_index keeps the other series and logs the ones it leaves
    out (the preprocessing cache keys volumes by file bytes, which those stacks share)."""
    from medssl.data.cache import PreprocessCache, PreprocessPlan
    from medssl.data.dataset import ScanDataset
    from tests.reliability.conftest import series

    (tmp_path / "archive").mkdir()
    _enhanced_mr(tmp_path / "archive" / "enh.dcm", _volumes())
    series(tmp_path / "archive" / "classic")
    build_index(tmp_path / "archive", tmp_path / "index", workers=1, progress=False)
    cache = PreprocessCache(tmp_path / "cache", PreprocessPlan(target_spacing=(1.0, 1.0, 2.5)))
    with caplog.at_level("WARNING"):
        ds = ScanDataset.from_index(tmp_path / "index", tmp_path / "archive", cache, spatial_dims=3,
                                    patch_size=(8, 8, 4))
    assert len(ds.series_keys) == 1 and "2 series are stacks of enhanced multi-frame files" in caplog.text


@pytest.mark.realdata
def test_legacy_converted_enhanced_from_classic_ge_4d_matches_the_classic_reference(tmp_path):
    """highdicom turns the classic GE fMRI series (150 files, 15 slices x 10 time points) into one Legacy Converted
    Enhanced MR object indexed by InstanceNumber alone: read as one 4D stack (positions place the slices, the
    instance number orders the time points), it equals dcm2niix's conversion of the classic files."""
    hd = pytest.importorskip("highdicom")
    src = require_shared("dicom", "dcm_qa_nih", "In", "20180918GE", "mr_0004")
    datasets = [pydicom.dcmread(f) for f in sorted(src.glob("*.dcm"))]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=generate_uid(),
                                                         series_number=99, sop_instance_uid=generate_uid(),
                                                         instance_number=1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    [stack] = find_series(tmp_path / "enhanced.dcm")
    assert stack.split == "" and len(stack.frame_group.frames) == 150
    convert_series(tmp_path / "enhanced.dcm", tmp_path / "out.nii.gz")
    ok, why = _same()(tmp_path / "out.nii.gz",
                      require_shared("dicom", "dcm_qa_nih", "Ref", "DCM2NIIX_regression_test_4.nii"))
    assert ok, why
