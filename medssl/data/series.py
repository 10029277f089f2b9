"""Grouping DICOM files into stacks.

A SeriesInstanceUID is not a volume: real archives put several stacks under one UID (the same series saved in
several transfer syntaxes with different SeriesNumbers, multi-echo acquisitions, 3-plane localizers, enhanced
multi-frame objects). A *stack* is the unit that can become one (3D or 4D) volume; its key is
(SeriesInstanceUID, SeriesNumber, EchoNumber, localizer flag, multi-frame instance, orientation cluster), plus, for
an enhanced multi-frame file that holds several stacks, the split label of its frames (:mod:`medssl.data.dimensions`).
Acquisition number is deliberately not part of the key: time series (fMRI, perfusion, multi-phase) repeat the same
slice positions with increasing acquisition numbers, which :mod:`medssl.data.geometry` stacks as a 4th dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from medssl.data.deid import hash_identifier
from medssl.data.dicom_header import DicomHeader
from medssl.data.dimensions import FrameGroup, frame_groups

#: Positions of UIDs in :attr:`Stack.raw_key` (SeriesInstanceUID, the multi-frame object's SOPInstanceUID).
_UID_POSITIONS = (0, 4)
#: Two orientations closer than this (max abs difference of direction cosines) are the same plane.
ORIENTATION_TOL = 1e-3


@dataclass(frozen=True)
class Stack:
    """Files that form one volume candidate, plus the raw key used to build a salted public key."""

    raw_key: tuple
    headers: tuple[DicomHeader, ...]
    orientation_index: int  # which orientation cluster within its series (0 for the main one)
    n_orientations: int  # number of orientation clusters the series was split into
    frame_group: FrameGroup | None = None  # the frames of an enhanced file that form this stack (None: all frames)

    @property
    def split(self) -> str:
        """Split label of an enhanced file's stack (``echo2``, ``trigger3`` ...; "" when not split)."""
        return self.frame_group.label if self.frame_group is not None else ""

    def public_key(self, salt: str, *, uids_hashed: bool = False) -> str:
        """Salted, non-reversible key (never the raw UID). The archive index groups headers whose UIDs it already
        replaced by salted hashes (``uids_hashed=True``); headers read directly hold the raw UIDs, which are hashed
        here the same way first, so ``medssl convert --index DIR`` and the reader name a stack with the key
        series.csv gives it."""
        key = self.raw_key
        if not uids_hashed:  # raw_key = (SeriesInstanceUID, ..., multi-frame SOPInstanceUID, ...): as the index
            hashed = [hash_identifier(key[i], salt) if key[i] else "" for i in _UID_POSITIONS]
            key = (hashed[0], *key[1:4], hashed[1], *key[5:])
        return hash_identifier("|".join(map(str, key)), salt)

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]

    @property
    def files(self) -> list[str]:
        return [h.path for h in self.headers]


def _cluster_orientations(headers: Sequence[DicomHeader]) -> list[int]:
    """Assign each header an orientation cluster id (greedy, tolerance-based; None orientation -> own cluster)."""
    reps: list[np.ndarray | None] = []
    labels = []
    for h in headers:
        o = None if h.orientation is None else np.asarray(h.orientation)
        if o is not None and not np.all(np.isfinite(o)):
            o = None  # NaN orientations cluster with the missing ones; plan_stack refuses both (bad_geometry first)
        for idx, rep in enumerate(reps):
            if (o is None and rep is None) or (
                o is not None and rep is not None and np.max(np.abs(o - rep)) <= ORIENTATION_TOL
            ):
                labels.append(idx)
                break
        else:
            reps.append(o)
            labels.append(len(reps) - 1)
    return labels


def group_headers(headers: Iterable[DicomHeader]) -> list[Stack]:
    """Split headers into stacks; deterministic order (series number, then key)."""
    by_series: dict[tuple, list[DicomHeader]] = {}
    for h in headers:
        multiframe = h.sop_instance_uid if (h.number_of_frames > 1 and not h.is_mosaic) else ""
        base = (h.series_uid, h.series_number if h.series_number is not None else "", h.echo_number or "",
                "LOC" if h.is_localizer else "", multiframe)
        by_series.setdefault(base, []).append(h)
    stacks: list[Stack] = []
    for base, members in by_series.items():
        labels = _cluster_orientations(members)
        n_clusters = max(labels) + 1
        # the cluster with most files is the main one (index 0); ties broken by first appearance
        order = sorted(range(n_clusters), key=lambda c: (-labels.count(c), labels.index(c)))
        for rank, cluster in enumerate(order):
            chosen = tuple(sorted((m for m, lab in zip(members, labels) if lab == cluster), key=lambda h: h.path))
            groups = frame_groups(chosen[0]) if len(chosen) == 1 else None
            for group in groups or [None]:
                split = (group.label,) if group is not None and group.label else ()
                stacks.append(Stack(raw_key=base + (rank,) + split, headers=chosen, orientation_index=rank,
                                    n_orientations=n_clusters, frame_group=group))
    stacks.sort(key=lambda s: (s.first.series_number or 0, s.first.echo_number or 0, str(s.raw_key)))
    return stacks
