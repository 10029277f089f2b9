"""Enhanced multi-frame objects: which frames form one stack, and in which order their volumes go.

An enhanced object (Enhanced MR/CT/PET, Philips, Siemens XA, Canon) can hold a whole series in one file: several
echoes, magnitude and phase, inversion or trigger delays, diffusion volumes, several stacks. The standard says how
the frames are organised: the DimensionIndexSequence names the attributes that index the frames (its
DimensionIndexPointer tags) and each frame's DimensionIndexValues gives its index along each of them. The rule,
shared by the reader, ``medssl convert`` and the archive index (through :func:`medssl.data.series.group_headers`):

- *spatial* dimensions (in-stack position, image position) are not used: slices are placed by their per-frame
  ImagePositionPatient, as for classic series;
- *splitting* dimensions make separate stacks, one volume each: stack ID, echo (number or effective echo time),
  complex component (magnitude / phase / real / imaginary), cardiac trigger delay, inversion time;
- every other dimension -- temporal position, diffusion b-value and gradient direction, and private vendor
  dimensions (e.g. Philips ASL label/control) -- is the 4th axis of its stack, volumes ordered by those index
  values with the dimension the DimensionIndexSequence lists last varying slowest (dcm2niix's order: Philips
  ASL gives all label volumes, then all control volumes, each in temporal order).

A dimension splits only when its frames take more than one value along it, so a file holding one stack keeps the
key it always had. The split label (``echo2``, ``trigger3``, ``stack2_complex1`` ..., zero-padded so that they sort) names the position along the
splitting dimensions by index number only: no header text, which could carry patient data.
"""
from __future__ import annotations

from dataclasses import dataclass

from medssl.data.dicom_header import DicomHeader

#: DimensionIndexPointer tags whose index separates stacks -> the name used in split labels.
SPLITTING = {
    0x00209056: "stack",  # StackID
    0x00180086: "echo",  # EchoNumbers
    0x00189082: "echo",  # EffectiveEchoTime
    0x00089208: "complex",  # ComplexImageComponent
    0x00209153: "trigger",  # NominalCardiacTriggerDelayTime
    0x00181060: "trigger",  # TriggerTime
    0x00189079: "inversion",  # InversionTimes
    0x00180082: "inversion",  # InversionTime
}
#: DimensionIndexPointer tags that only say where a slice lies (its ImagePositionPatient decides).
SPATIAL = frozenset({
    0x00209057,  # InStackPositionNumber
    0x00200032,  # ImagePositionPatient
})


@dataclass(frozen=True)
class FrameGroup:
    """Frames of one enhanced file that form one stack. ``order``: per frame, its place along the 4th axis."""

    label: str  # "" when the file holds one stack
    frames: tuple[int, ...]
    order: tuple[tuple[int, ...], ...]


def _usable(header: DicomHeader) -> bool:
    pointers = header.dimension_pointers
    return bool(pointers and header.enhanced_frames) and all(
        len(frame[5]) == len(pointers) for frame in header.enhanced_frames)


def frame_groups(header: DicomHeader) -> list[FrameGroup] | None:
    """The stacks of an enhanced file by its dimension index, or None when it has none to use (not enhanced, no
    DimensionIndexSequence, or frames whose DimensionIndexValues do not match it: then all frames form one stack,
    as before, and geometry validation decides)."""
    if not _usable(header):
        return None
    pointers = header.dimension_pointers
    values = [frame[5] for frame in header.enhanced_frames]
    varying = [i for i in range(len(pointers)) if len({v[i] for v in values}) > 1]
    split = [i for i in varying if pointers[i] in SPLITTING]
    fourth = [i for i in range(len(pointers)) if pointers[i] not in SPLITTING and pointers[i] not in SPATIAL]
    groups: dict[tuple[int, ...], list[int]] = {}
    for f, v in enumerate(values):
        groups.setdefault(tuple(v[i] for i in split), []).append(f)
    # zero-padded to the widest index along each dimension, so labels sort as their numbers do (trigger02 < trigger10)
    width = {i: len(str(max(v[i] for v in values))) for i in split}
    out = []
    for key in sorted(groups):
        frames = tuple(groups[key])
        label = "_".join(f"{SPLITTING[pointers[i]]}{value:0{width[i]}d}" for i, value in zip(split, key))
        out.append(FrameGroup(label, frames, tuple(tuple(values[f][i] for i in reversed(fourth)) for f in frames)))
    return out
