"""Cheap, header-only inspection of one DICOM file.

:func:`read_header` reads a file up to (not including) the pixel data and returns a :class:`DicomHeader` holding
exactly the fields that grouping, ordering and geometry need, or raises :class:`DicomFileError` with a stable
reason code. No patient identifiers are kept on the header object except the UIDs needed to group files; those
never leave the process unhashed (see :mod:`medssl.data.deid`). The PatientID is never kept: only its keyed hash
(``patient_hash``, with the caller's salt, or a random per-process salt when none is given), which the archive
index uses to keep all series of one patient on the same side of a train/val split.

Speed: the index reads every file's header and the reader reads them again, so this is the hot loop of ingestion.
Common files (Part-10, little endian, ASCII values) go through :func:`medssl.data.header_scan.scan_header`, a
struct-based walk that decodes only the elements needed (~5x faster than a pydicom dataset); everything else, damage
included, through pydicom.
"""
from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.uid import (
    UID,
)

from medssl.data.deid import hash_identifier, new_salt
from medssl.data.header_scan import PIXEL_TAGS as _PIXEL_TAGS
from medssl.data.header_scan import scan_header as _scan
from medssl.errors import DicomFileError, Reason

#: SOP classes whose pixel data is not an image of anatomy: refused with ``not_anatomy`` (a dose grid or a label
#: map in a pretraining set would be trained on as if it were a scan)
_NOT_ANATOMY = {
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT dose grid",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation labels",
}
#: SOP classes of DICOM objects that never hold an image (structured reports, presentation states, RT plans ...)
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure sets, plans (RT dose holds pixels: _NOT_ANATOMY)
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, segmentation surfaces ...
    "1.2.840.10008.5.1.4.1.1.104",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.9",  # waveforms
)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Upper bound on voxels a single series may declare before we refuse to allocate it (size-bomb guard).
DEFAULT_MAX_VOXELS = 2_000_000_000

#: Hashes PatientIDs when the caller gives no salt: the raw ID never reaches a header object, and such hashes are
#: comparable only within one process (callers that write them out pass the index's salt).
_PROCESS_SALT = new_salt()


def _magic(head: bytes) -> tuple[bool, bool]:
    """(is DICOM, has Part-10 preamble) from the first 132 bytes. Legacy files without preamble commonly start
    with a little-endian group-0008 element."""
    preamble = len(head) == 132 and head[128:132] == b"DICM"
    legacy = len(head) >= 8 and head[0:2] == b"\x08\x00" and head[3:4] == b"\x00"
    return preamble or legacy, preamble


def looks_like_dicom(path: str | Path) -> bool:
    """Cheap check reading at most 132 bytes (used by the crawler to skip non-DICOM files)."""
    with open(path, "rb") as fh:
        return _magic(fh.read(132))[0]


@dataclass(frozen=True)
class DicomHeader:
    """What medssl needs from one file's header. Geometry is in DICOM patient space (LPS, mm)."""

    path: str
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    echo_number: float | None
    temporal_position: int | None
    acquisition_time: float | None
    trigger_time: float | None
    image_type: tuple[str, ...]
    modality: str
    body_part: str
    manufacturer: str
    transfer_syntax: str
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6)
    position: tuple[float, float, float] | None  # ImagePositionPatient (3)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing)
    slice_thickness: float | None
    spacing_between_slices: float | None
    gantry_tilt: float | None
    slope: float
    intercept: float
    mosaic_images: int | None  # Siemens NumberOfImagesInMosaic
    has_pixels: bool
    # per-frame (position, orientation, spacing, slope, intercept, dimension index values) of enhanced multi-frame
    enhanced_frames: tuple = field(default=(), repr=False)
    mosaic_normal: tuple | None = None  # slice direction of a mosaic's tiles (CSA SliceNormalVector sign)
    pixel_offset: int | None = None  # file offset of native (unencapsulated) pixel bytes, for the fast path
    pixel_length: int | None = None
    patient_hash: str = ""  # keyed hash of PatientID ("" when absent); the raw ID is never stored
    dimension_pointers: tuple[int, ...] = ()  # DimensionIndexSequence's DimensionIndexPointer tags (enhanced)

    @property
    def is_mosaic(self) -> bool:
        return self.mosaic_images is not None and "MOSAIC" in self.image_type

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def declared_voxels(self) -> int:
        return int(self.rows) * int(self.columns) * max(1, self.number_of_frames) * max(1, self.samples_per_pixel)


def _num(ds, keyword, cast=float):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = value[0]
        return cast(value)
    except (TypeError, ValueError):
        return None


def _vec(value, n):
    """``n`` floats, or None when absent or malformed. Non-finite values (NaN, inf) are kept: they are degenerate
    geometry, which :func:`medssl.data.geometry.check_geometry_values` refuses as ``bad_geometry`` (dropping them
    here would report them as merely missing)."""
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(out) != n:
        return None
    return out


def _dicom_time_seconds(value) -> float | None:
    """HHMMSS.frac -> seconds since midnight (only used for ordering time points; never written out)."""
    if not value:
        return None
    s = str(value).strip().replace(":", "")
    try:
        hh, mm, ss = int(s[0:2]), int(s[2:4] or 0), float(s[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def _mosaic_count(ds) -> int | None:
    """Siemens NumberOfImagesInMosaic: private tag (0019,100A); falls back to the CSA image header."""
    elem = ds.get((0x0019, 0x100A))
    if elem is not None:
        try:
            value = elem.value
            if isinstance(value, bytes):
                return int.from_bytes(value[:2], "little")
            return int(value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value)
        except (TypeError, ValueError):
            pass
    # local import: mosaic depends on this module
    from medssl.data.mosaic import csa_value

    value = csa_value(ds, "NumberOfImagesInMosaic")
    return int(value) if value else None


#: Philips private per-frame scale slope (MR Image Scale Slope, "SS"), in the private (2005,140F) frame group.
_PHILIPS_FRAME_PRIVATE, _PHILIPS_SCALE_SLOPE = (0x2005, 0x140F), (0x2005, 0x100E)


def _philips_scale(frame, slope: float, intercept: float) -> tuple[float, float]:
    """Philips floating-point scaling of one frame, as dcm2niix applies it by default: FP = (SV * RS + RI) / (RS *
    SS), i.e. slope RS/(RS*SS) and intercept RI/(RS*SS); the display scaling (RS, RI) when SS is absent or
    unusable."""
    try:
        ss = float(frame[_PHILIPS_FRAME_PRIVATE][0][_PHILIPS_SCALE_SLOPE].value)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return slope, intercept
    if not (math.isfinite(ss) and ss > 0 and slope):
        return slope, intercept
    import numpy as np  # (local: the header reader is the hot loop and rarely meets a Philips frame)

    # in float32, as dcm2niix computes it: its scl_slope is then bit-identical, and so are the scaled values
    rs = np.float32(slope)
    denominator = rs * np.float32(ss)
    return float(rs / denominator), float(np.float32(intercept) / denominator)


def _index_values(value) -> tuple[int, ...]:
    """DimensionIndexValues as a tuple of ints (() when absent or malformed)."""
    if value is None:
        return ()
    try:
        return tuple(int(v) for v in value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) \
            else (int(value),)
    except (TypeError, ValueError):
        return ()


def _dimension_pointers(ds) -> tuple[int, ...]:
    try:
        return tuple(int(item.DimensionIndexPointer) for item in ds.get("DimensionIndexSequence") or ())
    except (AttributeError, TypeError, ValueError):
        return ()


def _enhanced_frames(ds) -> tuple:
    """Per-frame geometry, rescale and dimension index of an enhanced multi-frame object (Shared/PerFrame
    Functional Groups); Philips frames with a private scale slope get Philips floating-point scaling."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return ()
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None

    def pick(frame, seq_name, attr):
        for src in (frame, shared):
            seq = None if src is None else src.get(seq_name)
            if seq and attr in seq[0]:
                return seq[0].get(attr)
        return None

    philips = "PHILIPS" in str(ds.get("Manufacturer", "")).upper()
    frames = []
    for frame in per_frame:
        slope = float(pick(frame, "PixelValueTransformationSequence", "RescaleSlope") or 1.0)
        intercept = float(pick(frame, "PixelValueTransformationSequence", "RescaleIntercept") or 0.0)
        if philips:
            slope, intercept = _philips_scale(frame, slope, intercept)
        frames.append(
            (
                _vec(pick(frame, "PlanePositionSequence", "ImagePositionPatient"), 3),
                _vec(pick(frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                _vec(pick(frame, "PixelMeasuresSequence", "PixelSpacing"), 2),
                slope,
                intercept,
                _index_values(pick(frame, "FrameContentSequence", "DimensionIndexValues")),
            )
        )
    return tuple(frames)


def read_header(path: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS, salt: str | None = None) -> DicomHeader:
    """Read one file's header (no pixel data). Raises :class:`DicomFileError` with a reason code.

    ``salt`` keys the hash of the PatientID (:attr:`DicomHeader.patient_hash`); without one a per-process salt is
    used."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        reason = Reason.SYMLINK_LOOP if exc.errno == errno.ELOOP else Reason.UNREADABLE
        raise DicomFileError(reason, f"cannot stat: {exc.strerror}", [path]) from None
    if size == 0:
        raise DicomFileError(Reason.EMPTY_FILE, "file is empty", [path])
    if not os.access(path, os.R_OK):
        raise DicomFileError(Reason.PERMISSION_DENIED, "no read permission", [path])
    try:
        ds, has_pixels, pixel_at = _scan(path) or _parse(path)
    except DicomFileError:
        raise
    except PermissionError:
        raise DicomFileError(Reason.PERMISSION_DENIED, "no read permission", [path]) from None
    except InvalidDicomError as exc:
        raise DicomFileError(Reason.NOT_DICOM, f"pydicom: {exc}", [path]) from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise DicomFileError(Reason.TRUNCATED, f"header unreadable ({type(exc).__name__}: {exc})", [path]) from None

    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
    if sop_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise DicomFileError(Reason.DICOMDIR, "DICOMDIR (a directory index, not an image)", [path])
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if sop_class in _NOT_ANATOMY:
        raise DicomFileError(Reason.NOT_ANATOMY, f"{UID(sop_class).name} holds {_NOT_ANATOMY[sop_class]}, not an image "
                             "of anatomy", [path])
    if not has_pixels and not any(sop_class.startswith(p) for p in _NON_IMAGE_PREFIXES) and _is_image_class(sop_class):
        # an image object must hold pixel data: one that ends before it was cut short (a broken transfer)
        raise DicomFileError(Reason.TRUNCATED, f"{UID(sop_class).name} object ends before its pixel data", [path])
    if not has_pixels or any(sop_class.startswith(p) for p in _NON_IMAGE_PREFIXES):
        raise DicomFileError(Reason.NO_PIXEL_DATA, f"no pixel data (SOP class {UID(sop_class).name or sop_class})",
                             [path])
    rows, cols = _num(ds, "Rows", int), _num(ds, "Columns", int)
    if not rows or not cols:
        raise DicomFileError(Reason.NO_PIXEL_DATA, "pixel data without Rows/Columns", [path])
    header = DicomHeader(
        path=str(path),
        size=size,
        sop_class_uid=sop_class,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_number=_num(ds, "SeriesNumber", int),
        acquisition_number=_num(ds, "AcquisitionNumber", int),
        instance_number=_num(ds, "InstanceNumber", int),
        echo_number=_num(ds, "EchoNumbers", float),
        temporal_position=_num(ds, "TemporalPositionIdentifier", int),
        acquisition_time=_dicom_time_seconds(ds.get("AcquisitionTime")),
        trigger_time=_num(ds, "TriggerTime", float),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        modality=str(ds.get("Modality", "") or ""),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        transfer_syntax=ts,
        rows=rows,
        columns=cols,
        number_of_frames=_num(ds, "NumberOfFrames", int) or 1,
        samples_per_pixel=_num(ds, "SamplesPerPixel", int) or 1,
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2"),
        bits_allocated=_num(ds, "BitsAllocated", int) or 16,
        bits_stored=_num(ds, "BitsStored", int) or (_num(ds, "BitsAllocated", int) or 16),
        high_bit=_num(ds, "HighBit", int) or ((_num(ds, "BitsStored", int) or 16) - 1),
        pixel_representation=_num(ds, "PixelRepresentation", int) or 0,
        orientation=_vec(ds.get("ImageOrientationPatient"), 6),
        position=_vec(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_vec(ds.get("PixelSpacing"), 2),
        slice_thickness=_num(ds, "SliceThickness"),
        spacing_between_slices=_num(ds, "SpacingBetweenSlices"),
        gantry_tilt=_num(ds, "GantryDetectorTilt"),
        slope=_num(ds, "RescaleSlope") or 1.0,
        intercept=_num(ds, "RescaleIntercept") or 0.0,
        mosaic_images=None,
        has_pixels=True,
        enhanced_frames=_enhanced_frames(ds),
        dimension_pointers=_dimension_pointers(ds),
        pixel_offset=pixel_at[0] if pixel_at else None,
        pixel_length=pixel_at[1] if pixel_at else None,
        patient_hash=_patient_hash(ds, salt),
    )
    if "MOSAIC" in header.image_type:
        object.__setattr__(header, "mosaic_images", _mosaic_count(ds))
        if header.orientation is not None:
            from medssl.data.mosaic import mosaic_slice_normal

            object.__setattr__(header, "mosaic_normal", tuple(mosaic_slice_normal(ds, header.orientation)))
    if header.declared_voxels > max_voxels:
        raise DicomFileError(Reason.SIZE_LIMIT,
                             f"declares {header.declared_voxels} voxels (limit {max_voxels})", [path])
    if header.bits_allocated not in (1, 8, 16, 32, 64):
        raise DicomFileError(Reason.UNDECODABLE, f"BitsAllocated={header.bits_allocated}", [path])
    return header


def _patient_hash(ds, salt: str | None) -> str:
    """Keyed hash of PatientID, or "" when it is absent or blank (the raw value is dropped here)."""
    value = str(ds.get("PatientID", "") or "").strip()
    return hash_identifier("PatientID:" + value, salt or _PROCESS_SALT) if value else ""


def _is_image_class(sop_class: str) -> bool:
    """Whether a SOP class is an image storage class (pixel data mandatory), by its registered name."""
    return "Image Storage" in (UID(sop_class).name or "") if sop_class else False


@cache
def decoder_available(transfer_syntax: str) -> bool:
    """Whether pydicom has a working pixel decoder for ``transfer_syntax`` (native syntaxes always; compressed ones
    through the installed pylibjpeg / gdcm / pillow plugins)."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _parse(path: Path):
    """One pass over the header: parse up to the pixel data element, noting whether it exists and, for native
    (defined-length) pixel data, where its bytes start."""
    found: list[tuple] = []
    overrun: list[int] = []

    def stop(tag, vr, length):  # called for every top-level element while parsing, positioned at its value
        if length != 0xFFFFFFFF and fh.tell() + length > size:
            overrun.append(int(tag))  # pydicom silently keeps a partial value at EOF: that is truncation
        if int(tag) in _PIXEL_TAGS:
            found.append((int(tag), vr, length))
            return True
        return False

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        is_dicom, preamble = _magic(fh.read(132))
        if not is_dicom:
            raise DicomFileError(Reason.NOT_DICOM, "no DICM magic and no DICOM group-0008 start", [path])
        fh.seek(0)
        ds = read_partial(fh, stop_when=stop, defer_size=4096, force=not preamble)
        element_start = fh.tell()
    deflated = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99"
    if overrun and not deflated:  # (a deflated body is parsed from memory, so file offsets do not apply)
        raise DicomFileError(Reason.TRUNCATED, f"element ({overrun[0]:08X}) runs past the end of the file", [path])
    pixel_at = None
    meta = getattr(ds, "file_meta", None)
    deflated = str(getattr(meta, "TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99"  # offsets are post-inflate
    if found and found[0][0] == 0x7FE00010 and found[0][2] != 0xFFFFFFFF and not deflated:
        implicit = getattr(ds, "original_encoding", (False, True))[0]
        header_len = 8 if implicit or found[0][1] not in ("OB", "OW", "OF", "OD", "OL", "UN", "OV") else 12
        pixel_at = (element_start + header_len, int(found[0][2]))
    return ds, bool(found), pixel_at
