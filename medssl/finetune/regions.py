"""Evaluation regions made of label values (BraTS: whole tumour, tumour core, enhancing tumour), and back.

A :class:`RegionMap` names regions as sets of label values, e.g. for BraTS 2015 (labels 1 necrosis, 2 edema,
3 non-enhancing tumour, 4 enhancing tumour)::

    regions: {WT: [1, 2, 3, 4], TC: [1, 3, 4], ET: [4]}

Regions may overlap, so a segmenter trained on them has one sigmoid channel per region (:meth:`RegionMap.masks`
gives the ``(R, *spatial)`` targets). Its prediction is turned back into one label map with the original label
values (:meth:`RegionMap.to_labels`), which ``medssl predict`` writes and on which the metrics are computed, so
that the evaluated regions are those of the written file:

* the regions must be *nested or disjoint* (any two are either subset/superset or share no label), which is what
  makes one label map able to hold them;
* regions are painted from the largest to the smallest: a voxel inside region ``r`` and none of ``r``'s
  sub-regions gets ``r``'s *paint label*; by default the smallest label of ``r`` that no sub-region of ``r``
  holds (BraTS 2015: WT -> 2 (edema), TC -> 1 (necrosis), ET -> 4), overridable per region (``region_labels``);
* a voxel predicted in a sub-region but not in its parent (ET but not WT) still gets the sub-region's label, so
  the painted map is consistent: its regions are nested as the reference's.

Regions lose distinctions no region draws: BraTS' labels 1 (necrosis) and 3 (non-enhancing tumour) are both "TC
but not ET", so a prediction writes them all as the core label (1 by default). Labels 2 and 3 inside WT stay apart
only because TC separates them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medssl.errors import MedsslError, Reason

__all__ = ["BRATS_REGIONS", "RegionError", "RegionMap", "settings_error"]

#: BraTS 2015 / 2013 convention (labels 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing tumour)
BRATS_REGIONS = {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}


class RegionError(MedsslError):
    """A region mapping that is empty, names label 0, or cannot be written back as one label map."""

    def __init__(self, message: str):
        super().__init__(Reason.BAD_CONFIG, message)


@dataclass(frozen=True)
class RegionMap:
    """Named regions, each a set of positive label values; ``paint`` is the label written for each region."""

    names: tuple[str, ...]
    labels: tuple[frozenset[int], ...]
    paint: tuple[int, ...]

    @classmethod
    def from_config(cls, regions: Mapping[str, Sequence[int]],
                    region_labels: Mapping[str, int] | None = None) -> RegionMap:
        """From ``{name: [label, ...]}`` (config order kept) and optional ``{name: label written}``."""
        if not regions:
            raise RegionError("regions must name at least one region")
        names = tuple(str(n) for n in regions)
        sets = []
        for name, values in regions.items():
            vals = [int(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
            if not vals or any(v <= 0 for v in vals):
                raise RegionError(f"region {name!r} must list positive label values (0 is background), got {values}")
            sets.append(frozenset(vals))
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                a, b = sets[i], sets[j]
                if a == b:
                    raise RegionError(f"regions {names[i]!r} and {names[j]!r} hold the same labels {sorted(a)}")
                if a & b and not (a <= b or b <= a):
                    raise RegionError(f"regions {names[i]!r} {sorted(a)} and {names[j]!r} {sorted(b)} overlap without "
                                      "one containing the other: one label map cannot hold them")
        given = dict(region_labels or {})
        unknown = set(given) - set(names)
        if unknown:
            raise RegionError(f"region_labels names unknown regions {sorted(unknown)}; regions: {list(names)}")
        paint = []
        for name, own in zip(names, sets):
            inner = set().union(*(s for s in sets if s < own))
            if name in given:
                value = int(given[name])
                if value not in own - inner:
                    raise RegionError(f"region_labels[{name!r}]={value} must be a label of {name!r} that none of its "
                                      f"sub-regions holds: {sorted(own - inner)}")
            elif own - inner:
                value = min(own - inner)
            else:
                raise RegionError(f"every label of region {name!r} {sorted(own)} belongs to a sub-region, so no label "
                                  "value can stand for it alone")
            paint.append(value)
        return cls(names, tuple(sets), tuple(paint))

    def to_config(self) -> dict[str, list[int]]:
        """``{name: sorted labels}``, the inverse of :meth:`from_config` (with :meth:`paint_labels`)."""
        return {n: sorted(s) for n, s in zip(self.names, self.labels)}

    def paint_labels(self) -> dict[str, int]:
        """``{name: label value written for the region}``."""
        return dict(zip(self.names, self.paint))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def max_label(self) -> int:
        return max(max(s) for s in self.labels)

    def masks(self, labels: Any) -> torch.Tensor:
        """``(R, *spatial)`` bool masks of a label map ``(*spatial)`` (label values as ints or whole floats)."""
        lab = torch.as_tensor(labels.as_tensor() if hasattr(labels, "as_tensor") else labels)
        if lab.is_floating_point():
            lab = lab.round()
        lab = lab.to(torch.int64)
        return torch.stack([torch.isin(lab, torch.tensor(sorted(s), device=lab.device)) for s in self.labels])

    def batch_masks(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, R, *spatial)`` float targets of a ``(B, 1, *spatial)`` label batch."""
        return self.masks(labels[:, 0]).movedim(0, 1).float()

    def to_labels(self, masks: torch.Tensor) -> torch.Tensor:
        """``(*spatial)`` int64 label map of ``(R, *spatial)`` region masks (bool, or probabilities thresholded at
        0.5), painted largest region first (see module docstring)."""
        m = masks if masks.dtype == torch.bool else masks > 0.5
        if m.shape[0] != len(self):
            raise ValueError(f"expected {len(self)} region masks ({list(self.names)}), got {m.shape[0]}")
        out = torch.zeros(m.shape[1:], dtype=torch.int64, device=m.device)
        for r in sorted(range(len(self)), key=lambda i: -len(self.labels[i])):
            out[m[r]] = self.paint[r]
        return out


def settings_error(regions: Any, region_labels: Any, region_training: Any, adapt_channels: Any
                   ) -> tuple[str, str] | None:
    """``(field, problem)`` of the first invalid region/channel setting of a fine-tuning config, or None; shared by
    the ``medssl finetune`` and protocol configs, which raise it with their own error type."""
    if regions is not None:
        try:
            RegionMap.from_config(regions, region_labels)
        except (RegionError, TypeError, ValueError, AttributeError) as exc:
            return "regions", f"must map region names to label lists ({exc})"
    if region_training not in ("sigmoid", "classes"):
        return "region_training", "must be 'sigmoid' or 'classes'"
    if adapt_channels not in (None, "average", "repeat"):
        return "adapt_channels", "must be null, 'average' or 'repeat'"
    return None
