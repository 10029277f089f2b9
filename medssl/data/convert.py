"""DICOM -> NIfTI conversion (``medssl convert``): one stack to a file, or every stack of a folder to a folder.

Voxel data and affine follow the reader's geometry; when every slice shares RescaleSlope/Intercept the stored
integers are written with ``scl_slope``/``scl_inter`` (as dcm2niix does) so scaled values are bit-identical to the
DICOM's; otherwise rescaled values are written as float32 (int16/int32 when slopes and intercepts are whole). A
de-identified JSON sidecar (modality, series key, geometry warnings; no names, IDs, dates or UIDs) is written beside
the image.

Whole folders (:func:`convert_folder`): every stack the reader finds (classic series, each stack of an enhanced
multi-frame file) is converted on its own; one that cannot be is reported with its reason code and the others are
still written. Output names hold only the series number, the split label of an enhanced file's stack (``echo2``,
``trigger3`` ...), disambiguators of our own (``echo2``, ``orient1``) and the salted series key -- never header text,
which could carry patient data. ``conversion.csv`` in the output folder lists every stack with its outcome.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.data.deid import load_or_create_salt, safe_metadata
from medssl.data.dicom import DicomVolume, damaged_files, list_files, read_dicom_volume, read_stack, scan_headers
from medssl.data.nifti import write_nifti
from medssl.data.series import Stack, group_headers
from medssl.errors import DicomSeriesError, MedsslError, Reason

CONVERSION_COLUMNS = ("name", "series_number", "split", "series_key", "status", "reason")


def _sidecar_path(out: Path) -> Path:
    name = out.name[:-7] if out.name.endswith(".nii.gz") else out.stem
    return out.with_name(name + ".json")


def _write(volume: DicomVolume, affine: np.ndarray, meta: dict, out: Path, split: bool) -> list[Path]:
    """Write one read stack to ``out`` (+ sidecar); ``split``: a 4D volume as ``<name>_t0000`` ... files."""
    scl = volume.uniform_rescale
    if scl is not None and np.issubdtype(volume.raw.dtype, np.integer):
        data = volume.raw
        if data.dtype == np.uint16 and data.max() <= np.iinfo(np.int16).max:
            data = data.astype(np.int16)  # dcm2niix stores such data as int16 too

        def writer(arr: np.ndarray, path: Path) -> Path:
            if scl == (1.0, 0.0):
                return write_nifti(arr, path, affine)
            # stored integers + scl_slope/scl_inter: readers recover exactly raw * slope + inter
            return write_nifti(arr.astype(np.float64) * scl[0] + scl[1], path, affine, dtype=arr.dtype, scl=scl)
    else:
        data = volume.values()

        def writer(arr: np.ndarray, path: Path) -> Path:
            return write_nifti(arr, path, affine)

    written: list[Path] = []
    if split and data.ndim == 4:
        base = out.name[:-7] if out.name.endswith(".nii.gz") else out.stem
        suffix = ".nii.gz" if out.name.endswith(".nii.gz") else ".nii"
        for t in range(data.shape[3]):
            written.append(writer(data[..., t], out.with_name(f"{base}_t{t:04d}{suffix}")))
    else:
        written.append(writer(data, out))
    sidecar = safe_metadata(meta) | {"warnings": meta.get("warnings", []), "shape": list(data.shape),
                                     "spacing": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]}
    _sidecar_path(out).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    return written


def convert_series(source, out: str | Path, *, series=None, tilt="error", uneven="error", fourd="stack",
                   salt: str | None = None) -> list[Path]:
    """Convert one stack of ``source`` to ``out`` (.nii or .nii.gz). Returns the written image paths
    (several when ``fourd="split"``: ``<name>_t0000.nii.gz`` ...)."""
    split = fourd == "split"
    volume, affine, meta = read_dicom_volume(source, series=series, tilt=tilt, uneven=uneven,
                                             fourd="stack" if split else fourd, salt=salt)
    return _write(volume, affine, meta, Path(out), split)


def is_folder_target(out: str | Path) -> bool:
    """Whether ``medssl convert SOURCE OUT`` means a folder: OUT ends with a separator, is an existing folder, or
    names no NIfTI file."""
    text = str(out)
    return text.endswith(("/", "\\")) or Path(text).is_dir() or not text.endswith((".nii", ".nii.gz"))


@dataclass
class StackOutcome:
    """One stack of a folder conversion: its output name (without suffix), key, and what happened."""

    name: str
    series_number: int | None
    split: str
    series_key: str
    status: str  # "written" | "skipped"
    reason: str = ""
    message: str = ""
    written: list[Path] = field(default_factory=list)


@dataclass
class FolderConversion:
    """What :func:`convert_folder` did: one outcome per stack, and the files skipped before grouping by reason."""

    stacks: list[StackOutcome]
    skipped_files: dict[str, int]
    table: Path


def output_name(stack: Stack, salt: str, stacks: list[Stack]) -> str:
    """``<series number>[_<split>][_echo<n>][_orient<k>]_<salted key>``: no header text (see module docstring)."""
    number = stack.first.series_number
    parts = [str(number if number is not None else 0)]
    if stack.split:
        parts.append(stack.split)
    twins = [s for s in stacks if s.first.series_number == number and s.split == stack.split]
    echo = stack.first.echo_number
    if not stack.split and echo is not None and len({s.first.echo_number for s in twins}) > 1:
        parts.append(f"echo{int(echo) if float(echo).is_integer() else echo}")
    if stack.orientation_index:
        parts.append(f"orient{stack.orientation_index}")
    parts.append(stack.public_key(salt))
    return "_".join(parts)


def convert_folder(source, out_dir: str | Path, *, tilt="error", uneven="error", fourd="stack",
                   salt: str | None = None, gzip: bool = True) -> FolderConversion:
    """Convert every stack under ``source`` into ``out_dir`` (created), named by :func:`output_name`; the salt is
    ``out_dir``'s own (``salt.txt``, so a re-run gives the same names) unless one is given (``--index``'s). A stack
    that cannot be read is reported with its reason and the rest are still converted; nothing raises for one bad
    stack. Localizers are skipped (``localizer``); a series split by orientation is refused as the index refuses it
    (``mixed_orientation``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    salt = salt or load_or_create_salt(out_dir)
    headers, skipped = scan_headers(list_files(source))
    stacks = group_headers(headers)
    damaged = damaged_files(skipped)
    split = fourd == "split"
    outcomes: list[StackOutcome] = []
    for stack in stacks:
        name = output_name(stack, salt, stacks)
        outcome = StackOutcome(name, stack.first.series_number, stack.split, stack.public_key(salt), "skipped")
        outcomes.append(outcome)
        if stack.first.is_localizer:
            outcome.reason = Reason.LOCALIZER.value
            continue
        try:
            if stack.n_orientations > 1:
                raise DicomSeriesError(Reason.MIXED_ORIENTATION,
                                       f"the series holds {stack.n_orientations} slice orientations")
            volume, affine, meta = read_stack(stack, damaged=damaged, tilt=tilt, uneven=uneven,
                                              fourd="stack" if split else fourd, salt=salt)
            target = out_dir / (name + (".nii.gz" if gzip else ".nii"))
            outcome.written = _write(volume, affine, meta, target, split)
            outcome.status = "written"
        except MedsslError as exc:
            outcome.reason, outcome.message = exc.reason.value, exc.detail
    table = out_dir / "conversion.csv"
    with open(table, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CONVERSION_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: getattr(o, k) if getattr(o, k) is not None else "" for k in CONVERSION_COLUMNS}
                         for o in outcomes)
    counts = dict(sorted(Counter(exc.reason.value for _, exc in skipped).items()))
    return FolderConversion(outcomes, counts, table)
