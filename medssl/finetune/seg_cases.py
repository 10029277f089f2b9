"""Which cases a segmentation task has, and which of them train, validate, test and carry labels.

A :class:`SegmentationCase` is one labelled scan: one NIfTI file per image channel (a 4-D file contributes its 4th
axis as channels), one label map, and a ``case_id``. Cases come from a Medical Segmentation Decathlon folder
(:func:`cases_from_msd`) or from glob patterns (:func:`cases_from_glob`). Image files named with the MSD / nnU-Net
channel suffix (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` ...) are grouped into one multi-channel case. A case
may name a ``mask`` (e.g. a brain mask: MSD entries' ``"brainmask"`` or ``"mask"``) that training crops are drawn
inside. :func:`msd_channel_names` reads the channel names (``channel_names`` of nnU-Net v2, else ``modality``).

Splits are by case (never by patch or slice) and recorded: :func:`split_cases` returns the sorted case ids of
train / val / test with the seed, a JSON-serialisable dict to write beside the results; :func:`select_cases`
turns it back into cases. :func:`labelled_subset` draws the labelled training cases from one seeded permutation of
the sorted ids, so for the same seed a smaller subset is contained in a larger one (nested label budgets). Both
use their own :class:`numpy.random.Generator`, never the global random state. Case ids are file-name stems that
the dataset's authors chose (e.g. ``hippocampus_001``); rename files that carry patient names before use.
"""
from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medssl.errors import MedsslError, Reason

__all__ = ["SegmentationCase", "SegmentationDataError", "cases_from_glob", "cases_from_msd", "labelled_subset",
           "msd_channel_names", "msd_label_names", "num_channels", "select_cases", "split_cases"]

#: MSD / nnU-Net channel suffix: ``<case>_<4 digits>.nii[.gz]``
MSD_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class SegmentationDataError(MedsslError):
    """Segmentation cases, their files or their preprocessing contradict each other or the encoder card."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_CONFIG, message, files)


@dataclass(frozen=True)
class SegmentationCase:
    """One labelled scan: ``image`` holds one NIfTI path per channel file, ``label`` the label map, ``mask`` an
    optional region (brain mask) that training crops are centred in."""

    image: tuple[Path, ...]
    label: Path
    case_id: str
    mask: Path | None = None


def _stem(path: str | Path) -> str:
    name = Path(path).name
    return name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else Path(name).stem


def _channel_files(path: Path, n_modalities: int) -> tuple[Path, ...]:
    """``path`` itself, or ``<case>_0000 ... _000k`` when ``path`` is the first channel of a multi-channel case."""
    match = MSD_CHANNEL.match(_stem(path))
    if match is None or int(match["channel"]) != 0 or n_modalities <= 1:
        return (path,)
    suffix = path.name[len(_stem(path)):]
    return tuple(path.with_name(f"{match['case']}_{c:04d}{suffix}") for c in range(n_modalities))


def cases_from_msd(root: str | Path, section: str = "training") -> list[SegmentationCase]:
    """Cases of an MSD folder: ``root/dataset.json``'s ``section`` list of ``{"image", "label"}``.

    ``image`` is a file (3-D, or 4-D with channels last), a list of files (one per channel), or the ``_0000`` file
    of a case whose channels are ``_0000`` ... ``_000k`` (k + 1 = the number of ``modality`` entries).
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise SegmentationDataError("no dataset.json in the MSD folder", [meta_path])
    meta = json.loads(meta_path.read_text())
    n_modalities = len(meta.get("modality", {})) or 1
    cases = []
    for entry in meta.get(section, []):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise SegmentationDataError(f"dataset.json {section!r} entries need 'image' and 'label', got {entry!r}",
                                        [meta_path])
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        files = [root / f for f in images]
        if len(files) == 1:
            files = list(_channel_files(files[0], n_modalities))
        label = root / entry["label"]
        mask_name = entry.get("brainmask") or entry.get("mask")
        mask = root / mask_name if mask_name else None
        missing = [f for f in (*files, label, *([mask] if mask else [])) if not f.is_file()]
        if missing:
            raise SegmentationDataError("dataset.json names files that do not exist", missing)
        cases.append(SegmentationCase(tuple(files), label, _stem(label), mask))
    if not cases:
        raise SegmentationDataError(f"dataset.json has no {section!r} cases", [meta_path])
    return cases


def msd_label_names(root: str | Path) -> list[str]:
    """Class names from ``dataset.json``'s ``labels`` (``{"0": "background", ...}``), ordered by label value."""
    path = Path(root) / "dataset.json"
    labels = json.loads(path.read_text()).get("labels", {})
    values = sorted(int(k) for k in labels)
    if values != list(range(len(values))) or len(values) < 2:
        raise SegmentationDataError(f"dataset.json 'labels' must name 0..K-1 with K >= 2, got {sorted(labels)}",
                                    [path])
    return [str(labels[str(v)]) for v in values]


def msd_channel_names(root: str | Path) -> list[str] | None:
    """Channel names from ``dataset.json`` (``channel_names`` or ``modality``: ``{"0": "FLAIR", ...}``), ordered by
    channel index; None when it names none."""
    meta = json.loads((Path(root) / "dataset.json").read_text())
    names = meta.get("channel_names") or meta.get("modality") or {}
    if not names:
        return None
    order = sorted(int(k) for k in names)
    if order != list(range(len(order))):
        raise SegmentationDataError(f"dataset.json channel names must be keyed 0..C-1, got {sorted(names)}",
                                    [Path(root) / "dataset.json"])
    return [str(names[str(i)]) for i in order]


def cases_from_glob(images: str | Sequence[str], labels: str, masks: str | None = None) -> list[SegmentationCase]:
    """Cases from glob patterns, matched by case id (file stem, channel suffix ``_0000`` removed).

    ``images`` is one pattern (files with a channel suffix are grouped per case, channels in suffix order) or one
    pattern per channel. Every case needs every channel and a label (and a mask when ``masks`` is given, matched by
    file stem like the labels); unmatched files raise, named.
    """
    patterns = [images] if isinstance(images, str) else list(images)
    per_case: dict[str, dict[int, Path]] = {}
    for c, pattern in enumerate(patterns):
        for f in sorted(glob.glob(pattern)):
            match = MSD_CHANNEL.match(_stem(f))
            case = match["case"] if match else _stem(f)
            channel = int(match["channel"]) if match and len(patterns) == 1 else c
            per_case.setdefault(case, {})[channel] = Path(f)
    label_files = {_stem(f): Path(f) for f in sorted(glob.glob(labels))}
    if not per_case or not label_files:
        raise SegmentationDataError(f"no files match images={patterns} / labels={labels!r}")
    n_channels = max(len(chans) for chans in per_case.values())
    unmatched = [p for case, chans in per_case.items() for p in chans.values()
                 if case not in label_files or sorted(chans) != list(range(n_channels))]
    unmatched += [p for case, p in label_files.items() if case not in per_case]
    if unmatched:
        raise SegmentationDataError(f"files without a full case ({n_channels} channel(s) + one label, matched by "
                                    "case id)", unmatched)
    mask_files = {_stem(f): Path(f) for f in sorted(glob.glob(masks))} if masks else {}
    if masks and set(mask_files) != set(per_case):
        raise SegmentationDataError(f"masks={masks!r} must hold one mask per case (matched by file stem)",
                                    sorted(p for c, p in mask_files.items() if c not in per_case)
                                    or [label_files[c] for c in sorted(set(per_case) - set(mask_files))])
    return [SegmentationCase(tuple(chans[c] for c in range(n_channels)), label_files[case], case,
                             mask_files.get(case)) for case, chans in sorted(per_case.items())]


def num_channels(case: SegmentationCase) -> int:
    """Image channels of ``case`` from the NIfTI headers (a 4-D file counts its 4th axis)."""
    total = 0
    for f in case.image:
        try:
            shape = nib.load(str(f)).shape
        except Exception as exc:  # nibabel raises many types; the file is what matters
            raise SegmentationDataError(f"cannot read the NIfTI header ({exc})", [f]) from exc
        total += int(shape[3]) if len(shape) == 4 else 1
    return total


def split_cases(cases: Sequence[SegmentationCase], n_val: int, n_test: int, seed: int = 0) -> dict[str, Any]:
    """A recorded split by case: ``{"seed", "n_cases", "train", "val", "test"}`` (sorted case ids, disjoint).

    The case ids are sorted, permuted by ``numpy.random.default_rng(seed)``; test takes the first ``n_test``,
    validation the next ``n_val``, training the rest. Depends on the ids and the seed only.
    """
    ids = sorted(c.case_id for c in cases)
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise SegmentationDataError(f"case ids must be unique; repeated: {repeated}")
    if n_val < 0 or n_test < 0 or n_val + n_test >= len(ids):
        raise ValueError(f"n_val={n_val} + n_test={n_test} must leave at least one of {len(ids)} cases to train")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return {"seed": int(seed), "n_cases": len(ids), "train": sorted(order[n_test + n_val:]),
            "val": sorted(order[n_test:n_test + n_val]), "test": sorted(order[:n_test])}


def select_cases(cases: Sequence[SegmentationCase], ids: Sequence[str]) -> list[SegmentationCase]:
    """The cases named by ``ids`` (e.g. ``split["train"]``), in the order of ``ids``; unknown ids raise."""
    by_id = {c.case_id: c for c in cases}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise SegmentationDataError(f"recorded case ids not among the cases: {unknown[:8]}")
    return [by_id[i] for i in ids]


def labelled_subset(train_cases: Sequence[SegmentationCase], count: int, seed: int = 0) -> list[SegmentationCase]:
    """``count`` labelled training cases: the first ``count`` of a seeded permutation of the sorted ids (nested
    for growing ``count``), returned sorted by case id."""
    ids = sorted(c.case_id for c in train_cases)
    if isinstance(count, bool) or int(count) != count or not 1 <= count <= len(ids):
        raise ValueError(f"count must be an integer in 1..{len(ids)} (the training cases), got {count!r}")
    order = [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]
    return select_cases(train_cases, sorted(order[:int(count)]))
