"""Damaged members: a truncated file never takes the intact files of its series with it.

A file cut short by a broken transfer cannot be read, but its header usually can be read up to the damage: its
SeriesInstanceUID, SOPInstanceUID, EchoNumbers and ImagePositionPatient (:func:`identify_damaged`, a forced,
tolerant read). The rule, shared by the reader (:func:`medssl.data.dicom.read_dicom_volume`) and the archive index
(:func:`medssl.data.index.build_index`):

- the damaged file is skipped with its own reason (``truncated``);
- its series is built from its intact files when an intact file takes the damaged one's place: the same
  SOPInstanceUID (an intact copy of the same image), or a slice at the same position (:func:`uncovered`);
- otherwise (the damaged file's place is empty, or unknown because the damage reaches its position) the series
  is refused as ``damaged_member``, naming the damaged files; the index marks the intact files of that series
  ``damaged_member`` too, never ``truncated``: they are not damaged, their series is incomplete.

Covering by position is sound for 4D series too: a damaged time point leaves its position with one slice fewer than
the others, which :func:`medssl.data.geometry.plan_stack` refuses as ``inconsistent_timepoints``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom

from medssl.data.deid import hash_identifier
from medssl.data.dicom_header import DicomHeader
from medssl.data.series import ORIENTATION_TOL

#: Two positions closer than this (mm, every coordinate) are the same place.
POSITION_TOL_MM = 1e-3


@dataclass(frozen=True)
class Damaged:
    """What the readable part of a damaged file says about its place in a series."""

    path: str
    series_uid: str
    sop_instance_uid: str = ""
    echo_number: float | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    is_localizer: bool | None = None  # None: ImageType unreadable

    def hashed(self, salt: str) -> Damaged:
        """The same with UIDs as the index's header records hold them (salted hashes)."""
        return replace(self, series_uid=hash_identifier(self.series_uid, salt),
                       sop_instance_uid=hash_identifier(self.sop_instance_uid, salt) if self.sop_instance_uid else "")

    def material(self) -> list:
        """JSON-able identity (no path, hashed UIDs expected) for the index's assessment-cache key."""
        return [self.sop_instance_uid, self.echo_number, list(self.position) if self.position else None,
                list(self.orientation) if self.orientation else None, self.is_localizer]


def _uid(value) -> str:
    uid = str(value or "")
    return uid if len(uid) > 8 and all(c in "0123456789." for c in uid) else ""


def identify_damaged(path: str | Path) -> Damaged | None:
    """The series identity of a file whose header could not be fully read, or None when not even its
    SeriesInstanceUID survives (then it cannot have belonged to any series we could tell)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=[
            "SeriesInstanceUID", "SOPInstanceUID", "EchoNumbers", "ImagePositionPatient", "ImageOrientationPatient",
            "ImageType"])
    except Exception:  # noqa: BLE001 - best effort on a broken file
        return None
    series = _uid(ds.get("SeriesInstanceUID"))
    if not series:
        return None
    position, orientation = _floats(ds.get("ImagePositionPatient"), 3), _floats(ds.get("ImageOrientationPatient"), 6)
    try:
        image_type = [str(v).upper() for v in ds["ImageType"].value] if "ImageType" in ds else None
    except (TypeError, ValueError, KeyError):
        image_type = None
    try:
        echo = float(ds.get("EchoNumbers")) if ds.get("EchoNumbers") not in (None, "") else None
    except (TypeError, ValueError):
        echo = None
    return Damaged(str(path), series, _uid(ds.get("SOPInstanceUID")), echo, position, orientation,
                   None if image_type is None else "LOCALIZER" in image_type)


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value or ())
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(map(math.isfinite, out)) else None


def belongs_to(d: Damaged, headers: Sequence[DicomHeader]) -> bool:
    """Whether the damaged file claims the stack of ``headers``: same series, and -- where the damaged header still
    says -- the same echo, localizer or not, and the same slice orientation (a cut-off scout slice of the series
    does not take its main stack with it)."""
    h = headers[0]
    if d.series_uid != h.series_uid:
        return False
    if d.echo_number is not None and h.echo_number is not None and d.echo_number != h.echo_number:
        return False
    if d.is_localizer is not None and d.is_localizer != h.is_localizer:
        return False
    if d.orientation is not None and h.orientation is not None:
        return max(abs(a - b) for a, b in zip(d.orientation, h.orientation)) <= ORIENTATION_TOL
    return True


def uncovered(damaged: Sequence[Damaged], headers: Sequence[DicomHeader]) -> list[Damaged]:
    """The damaged members of the stack of ``headers`` whose place no intact file takes."""
    if not headers:
        return list(damaged)
    sops = {h.sop_instance_uid for h in headers if h.sop_instance_uid}
    positions = [h.position for h in headers if h.position is not None]
    out = []
    for d in damaged:
        if not belongs_to(d, headers):
            continue
        if d.sop_instance_uid and d.sop_instance_uid in sops:
            continue
        if d.position is not None and any(max(abs(a - b) for a, b in zip(d.position, p)) <= POSITION_TOL_MM
                                          for p in positions):
            continue
        out.append(d)
    return out
