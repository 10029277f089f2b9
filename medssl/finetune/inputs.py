"""What ``medssl predict`` runs on: cases found in a NIfTI file or folder, a DICOM series or archive, or an ``.npz``.

:func:`find_inputs` walks the input once (:func:`medssl.data.crawl.crawl`), reads only headers, and returns
:class:`Inputs`: the cases to predict and every file it will not use, each with a reason code (never dropped
silently). DICOM files are grouped into stacks exactly as the archive index does (:func:`group_headers`,
:func:`plan_stack` under the same strict policy), one case per stack. NIfTI files named with the MSD channel suffix
(``case_0000.nii.gz``, ``case_0001.nii.gz`` ...) form one multi-channel case (a single ``_0000`` file given as the
input brings its sibling channel files); a case whose channel count differs
from the model's ``in_channels`` raises :class:`PredictInputError` naming it, before anything is predicted.

Privacy: a DICOM case is named ``series_<key>`` with ``key`` a salted hash of its stack key (never a UID, a name or
a folder name); a NIfTI case by its path relative to the input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medssl.data.crawl import Found, crawl
from medssl.data.deid import new_salt
from medssl.data.dicom_header import read_header
from medssl.data.geometry import plan_stack
from medssl.data.loading import is_nifti, load_volume
from medssl.data.series import group_headers
from medssl.errors import DicomFileError, DicomSeriesError, MedsslError, Reason

__all__ = ["Case", "Skip", "Inputs", "PredictInputError", "find_inputs", "load_case"]

#: MSD / nnU-Net channel suffix: ``<case>_<4 digits>.nii[.gz]``
MSD_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class PredictInputError(MedsslError):
    """The prediction input cannot be used as a whole (empty, no image, channel count, grids of a case differ)."""


@dataclass(frozen=True)
class Case:
    """One volume to predict: ``channels`` holds a NIfTI path or a tuple of DICOM files per channel file."""

    name: str  # output stem: relative NIfTI path without suffix ('/' -> '__'), or 'series_<key>' for DICOM
    source: str  # relative NIfTI path(s) joined by ';', or the salted series key
    kind: str  # "nifti" | "dicom"
    channels: tuple[Any, ...]


@dataclass(frozen=True)
class Skip:
    """An input file (or DICOM stack) not used, with a :class:`~medssl.errors.Reason` code."""

    path: str  # relative to the input root, or 'series_<key>' for a rejected stack
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass
class Inputs:
    """Cases to predict, files skipped with reasons, and the reader options (or a MedMNIST ``npz``)."""

    root: Path
    cases: list[Case] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    npz: Path | None = None
    dicom_options: dict[str, Any] = field(default_factory=dict)

    def scrub(self, text: str) -> str:
        """An error message with the input's absolute location replaced by ``<input>``."""
        return text.replace(str(self.root), "<input>")


def _stem(rel: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if rel.lower().endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def _nifti_channels(path: str) -> int:
    """Channels a NIfTI file holds (header only): 1 for 3D, T for (X, Y, Z, T)."""
    shape = nib.load(path).shape
    return int(shape[3]) if len(shape) == 4 else 1


def _mismatch(case: str, found: int, expected: int, files: list[str]) -> PredictInputError:
    return PredictInputError(Reason.SHAPE_MISMATCH, f"case {case!r} has {found} channel(s), the model expects "
                             f"{expected} (MSD naming: <case>_0000.nii.gz, <case>_0001.nii.gz ...)", files)


def _nifti_cases(files: list[Found], in_channels: int, skipped: list[Skip]) -> list[Case]:
    """Group NIfTI files into cases by MSD channel suffix and check each case's channel count.

    ``x_0000``, ``x_0001`` ... are channels of case ``x``; a suffixed file without a ``_0000`` sibling (``scan_2019``)
    is a case of its own under its full name, and so is a file without suffix.
    """
    stems = {_stem(f.rel) for f in files}
    groups: dict[str, dict[int, tuple[Found, int]]] = {}
    for f in files:
        try:
            n = _nifti_channels(f.path)
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types on a broken header
            skipped.append(Skip(f.rel, Reason.BAD_NIFTI_HEADER.value, f"{type(exc).__name__}: {exc}"))
            continue
        stem = _stem(f.rel)
        m = MSD_CHANNEL.match(stem)
        key, channel = (m["case"], int(m["channel"])) if m and f"{m['case']}_0000" in stems else (stem, -1)
        members = groups.setdefault(key, {})
        if channel in members or (members and (channel == -1 or -1 in members)):
            other = members.get(channel, next(iter(members.values())))[0]
            raise PredictInputError(Reason.AMBIGUOUS_SERIES, f"case {key.replace('/', '__')!r} is named by "
                                    "more than one file", [other.path, f.path])
        members[channel] = (f, n)
    cases = []
    for key, members in sorted(groups.items()):
        order = [members[k] for k in sorted(members)]
        name, paths = key.replace("/", "__"), [f.path for f, _ in order]
        total = sum(n for _, n in order)
        gaps = -1 not in members and sorted(members) != list(range(len(members)))
        if total != in_channels or gaps or (len(order) > 1 and any(n > 1 for _, n in order)):
            raise _mismatch(name, total, in_channels, paths)
        cases.append(Case(name, ";".join(f.rel for f, _ in order), "nifti", tuple(paths)))
    return cases


def _dicom_cases(files: list[Found], in_channels: int, salt: str, options: dict[str, Any],
                 skipped: list[Skip]) -> list[Case]:
    """One case per stack that passes the strict geometry checks; other files and stacks become skips."""
    headers = []
    for f in files:
        try:
            headers.append(read_header(f.path))
        except DicomFileError as exc:
            skipped.append(Skip(f.rel, exc.reason.value, exc.detail))
        except Exception as exc:  # noqa: BLE001 - a malformed file costs one skip, not the run
            skipped.append(Skip(f.rel, Reason.UNREADABLE.value, f"{type(exc).__name__}: {exc}"))
    cases = []
    for stack in group_headers(headers):
        name = f"series_{stack.public_key(salt)}"
        if stack.first.is_localizer:
            skipped.append(Skip(name, Reason.LOCALIZER.value, f"{len(stack.headers)} file(s)"))
            continue
        try:
            geom = plan_stack(stack.headers, frames=stack.frame_group, **options)
        except DicomSeriesError as exc:
            skipped.append(Skip(name, exc.reason.value, f"{len(stack.headers)} file(s): {exc.detail}"))
            continue
        if geom.n_timepoints != in_channels:
            raise _mismatch(name, geom.n_timepoints, in_channels, stack.files[:1])
        cases.append(Case(name, name[len("series_"):], "dicom", (tuple(stack.files),)))
    return cases


def find_inputs(path: str | Path, *, in_channels: int = 1, salt: str | None = None, tilt: str = "error",
                uneven: str = "error") -> Inputs:
    """Cases under ``path``: a NIfTI file, a folder of NIfTI files, a DICOM series or archive, or an ``.npz``.

    ``salt`` keys DICOM case names (a random one when None: names then differ between runs); ``tilt`` and
    ``uneven`` are the DICOM reader policies of ``medssl index``. Raises :class:`PredictInputError` when nothing
    usable is found (the skips are listed) or a case's channel count differs from ``in_channels``.
    """
    path = Path(path)
    if not path.exists():
        raise PredictInputError(Reason.UNREADABLE, "input not found", [path])
    if path.is_file() and path.suffix.lower() == ".npz":
        return Inputs(root=path.parent.resolve(), npz=path)
    root = path.resolve() if path.is_dir() else path.resolve().parent
    if path.is_dir():
        found = crawl(root)
    else:
        found = [Found(f.name, str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in _with_channel_siblings(path, in_channels)]
    salt = salt or new_salt()
    options = {"tilt": tilt, "uneven": uneven, "fourd": "stack"}
    # the reader picks each case's stack by its salted key (one enhanced file may hold several stacks)
    inputs = Inputs(root=root, dicom_options={**options, "salt": salt})
    if not found:
        raise PredictInputError(Reason.EMPTY_SERIES, "the input folder holds no files", [path])
    usable = []
    for f in found:
        if f.reason:
            inputs.skipped.append(Skip(f.rel, f.reason, "not readable while walking the input"))
        else:
            usable.append(f)
    nifti = [f for f in usable if is_nifti(f.path)]
    others = [f for f in usable if not is_nifti(f.path)]
    inputs.cases = _nifti_cases(nifti, in_channels, inputs.skipped)
    inputs.cases += _dicom_cases(others, in_channels, salt, options, inputs.skipped)
    inputs.skipped = [Skip(s.path, s.reason, inputs.scrub(s.detail)) for s in inputs.skipped]
    if not inputs.cases:
        reasons = sorted({s.reason for s in inputs.skipped})
        raise PredictInputError(Reason.EMPTY_SERIES, f"no NIfTI image or DICOM series found; {len(inputs.skipped)} "
                                f"file(s)/stack(s) skipped ({', '.join(reasons) or 'none'})", [path])
    return inputs


def _with_channel_siblings(path: Path, in_channels: int) -> list[Path]:
    """``path``, plus ``<case>_0001 ...`` beside it when ``path`` is the ``_0000`` channel of a multi-channel case."""
    m = MSD_CHANNEL.match(_stem(path.name))
    if in_channels <= 1 or m is None or int(m["channel"]) != 0:
        return [path]
    suffix = path.name[len(_stem(path.name)):]
    siblings = [path.with_name(f"{m['case']}_{c:04d}{suffix}") for c in range(1, in_channels)]
    return [path, *(f for f in siblings if f.is_file())]  # a missing channel fails the count check, named


def load_case(case: Case, dicom_options: dict[str, Any] | None = None) -> MetaTensor:
    """The case on its original grid: (X, Y, Z) for one channel, (X, Y, Z, C) for several; RAS affine.

    Channel files must share one grid (shape and affine to 1e-4), else :class:`PredictInputError` naming the case.
    """
    options = dict(dicom_options or {})
    if case.kind == "dicom" and "salt" in options:  # the stack this case is, among those its files hold
        options["series"] = case.source
    vols = [load_volume(src if case.kind == "nifti" else list(src), **({} if case.kind == "nifti" else options))
            for src in case.channels]
    if len(vols) == 1:
        return vols[0]
    ref_shape, ref_affine = tuple(vols[0].shape[:3]), np.asarray(vols[0].affine, dtype=np.float64)
    for v, src in zip(vols[1:], case.channels[1:]):
        if tuple(v.shape) != tuple(vols[0].shape) or not np.allclose(np.asarray(v.affine), ref_affine, atol=1e-4):
            raise PredictInputError(Reason.SHAPE_MISMATCH, f"case {case.name!r}: channel grids differ "
                                    f"({tuple(v.shape)} vs {tuple(vols[0].shape)} or affines)",
                                    [case.channels[0], src])
    data = torch.stack([torch.as_tensor(v.as_tensor(), dtype=torch.float32) for v in vols], dim=-1)
    return MetaTensor(data, affine=torch.as_tensor(ref_affine), meta={"spatial_shape": ref_shape})
