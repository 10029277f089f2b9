"""Typed errors with stable reason codes.

Every failure at the data boundary raises a subclass of :class:`MedsslError` that carries a ``reason`` (a stable,
machine-readable code from :class:`Reason`, written verbatim into manifests) and the offending ``files``. The
archive crawler turns these into reason-coded skips; the readers raise them in strict mode.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Iterable


class Reason(str, Enum):
    """Stable reason codes. Values are part of the on-disk manifest format: never rename, only add."""

    # file level
    EMPTY_FILE = "empty_file"
    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    PERMISSION_DENIED = "permission_denied"
    SYMLINK_LOOP = "symlink_loop"
    DICOMDIR = "dicomdir"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNDECODABLE = "undecodable"
    SIZE_LIMIT = "size_limit"
    MISSING_GEOMETRY = "missing_geometry"
    UNSUPPORTED_PHOTOMETRIC = "unsupported_photometric"
    NOT_ANATOMY = "not_anatomy"  # pixel data that is not an image of anatomy: RT dose grids, segmentation labels
    # series level
    MISSING_SLICE = "missing_slice"
    UNEVEN_SPACING = "uneven_spacing"
    GANTRY_TILT = "gantry_tilt"
    MIXED_ORIENTATION = "mixed_orientation"
    INCONSISTENT_SHAPE = "inconsistent_shape"
    DUPLICATE_POSITION = "duplicate_position"
    INCONSISTENT_TIMEPOINTS = "inconsistent_timepoints"
    AMBIGUOUS_SERIES = "ambiguous_series"
    EMPTY_SERIES = "empty_series"
    LOCALIZER = "localizer"  # a scout/localizer stack: valid DICOM, but not a training volume
    BAD_GEOMETRY = "bad_geometry"  # zero/negative/NaN pixel spacing, zero or non-orthonormal orientation vectors
    DAMAGED_MEMBER = "damaged_member"  # intact file of a series left incomplete by a damaged (truncated) member
    # NIfTI
    BAD_NIFTI_HEADER = "bad_nifti_header"
    NON_ORTHONORMAL_AFFINE = "non_orthonormal_affine"
    SHAPE_MISMATCH = "shape_mismatch"
    # cache
    CACHE_CORRUPT = "cache_corrupt"
    # training and transfer
    NONFINITE_LOSS = "nonfinite_loss"
    BAD_CONFIG = "bad_config"  # a config contradicts the data or the model (e.g. image size vs ViT img_size)
    BAD_ENCODER_CARD = "bad_encoder_card"  # an encoder card/weights file that is missing, altered or inconsistent
    NO_DECODER = "no_decoder"  # whole-network transfer asked of an encoder card that holds no pretrained decoder
    WRITE_FAILED = "write_failed"  # an output (checkpoint, cache entry) could not be written: disk full, quota, I/O
    # index quality and concurrency
    DUPLICATE_FILE = "duplicate_file"  # byte-identical to a file kept earlier (medssl index --dedup)
    INDEX_LOCKED = "index_locked"  # another medssl index run held the output folder past the timeout

    def __str__(self) -> str:  # so f"{reason}" prints the code
        return self.value


class MedsslError(Exception):
    """Base class: ``reason`` is a :class:`Reason`, ``files`` the offending paths (possibly empty)."""

    def __init__(self, reason: Reason | str, message: str = "", files: Iterable[str | Path] = ()):
        self.reason = Reason(reason)
        self.files = [str(f) for f in files]
        self.detail = message
        shown = ", ".join(self.files[:5]) + (f" (+{len(self.files) - 5} more)" if len(self.files) > 5 else "")
        text = f"[{self.reason.value}] {message}"
        if shown:
            text += f" (files: {shown})"
        super().__init__(text)

    def __reduce__(self) -> tuple:
        """Pickle as what it is (type, message, reason, files and any subclass fields), whatever the subclass's
        ``__init__`` takes: an error raised in a worker process reaches the caller with its type and reason."""
        return _rebuild_error, (type(self), self.args, dict(self.__dict__))


def _rebuild_error(cls: type, args: tuple, state: dict) -> MedsslError:
    error = Exception.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class DicomFileError(MedsslError):
    """One file cannot be used (not DICOM, truncated, no pixel data, undecodable, ...)."""


class DicomSeriesError(MedsslError):
    """A series cannot be assembled into a geometry-correct volume under the current policy."""


class NiftiError(MedsslError):
    """A NIfTI file is unreadable or geometrically invalid."""


class CacheError(MedsslError):
    """A cache entry is corrupt or inconsistent with its key."""
