"""Preprocessing plan: what is done to a volume before it is cached (orientation, spacing, intensity, dtype).

A plan is a frozen, JSON-serialisable dataclass; its :meth:`PreprocessPlan.fingerprint` is part of every cache key
and is recorded in encoder cards, so fine-tuning data can be prepared exactly as pretraining data was.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, ScaleIntensityRange, ScaleIntensityRangePercentiles
from monai.transforms import Spacing

#: Bump when the entry layout or the meaning of a plan field changes: every old cache entry becomes a miss.
CACHE_FORMAT_VERSION = 1

INTENSITY_MODES = ("none", "ct_window", "percentile", "zscore")
INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": 3}  # bicubic: spline order 3 (scipy)
DTYPES = {n: getattr(torch, n) for n in ("float32", "float16", "float64", "uint8", "int16", "int32", "int64")}
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel convention: letters name where the axis points to


@dataclass(frozen=True)
class PreprocessPlan:
    """What is done to a volume before it is cached; its :meth:`fingerprint` is part of every cache key."""

    target_spacing: tuple[float, ...] | None = None  # mm; None keeps the native grid
    orientation: str | None = "RAS"
    intensity: str = "none"  # "none" | "ct_window" | "percentile" | "zscore"
    window: tuple[float, float] = (-1000.0, 1000.0)  # HU, ct_window -> [0, 1], clipped
    percentiles: tuple[float, float] = (0.5, 99.5)  # percentile -> [0, 1], clipped
    interpolation: str = "bilinear"  # "nearest" | "bilinear" | "bicubic"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # canonical types, so (1, 1, 1) and (1.0, 1.0, 1.0) give the same fingerprint
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", tuple(float(s) for s in self.target_spacing))
        object.__setattr__(self, "window", tuple(float(w) for w in self.window))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        w, p, ts = self.window, self.percentiles, self.target_spacing
        problems = [
            (self.intensity not in INTENSITY_MODES, f"intensity must be one of {INTENSITY_MODES}"),
            (self.interpolation not in INTERPOLATIONS, f"interpolation must be one of {tuple(INTERPOLATIONS)}"),
            (self.dtype not in DTYPES, f"dtype must be one of {tuple(DTYPES)}"),
            (len(w) != 2 or w[0] >= w[1], "window must be (low, high) with low < high"),
            (len(p) != 2 or not 0 <= p[0] < p[1] <= 100, "percentiles must be (low, high), 0 <= low < high <= 100"),
            (ts is not None and any(s <= 0 for s in ts), "target_spacing must be positive"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(f"{message}; got {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessPlan:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        d = dict(d)
        for k in ("target_spacing", "window", "percentiles"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def for_labels(self, dtype: str = "int16") -> PreprocessPlan:
        """Same geometry for label maps: no intensity change, nearest-neighbour resampling, integer dtype."""
        return replace(self, intensity="none", interpolation="nearest", dtype=dtype)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the plan and :data:`CACHE_FORMAT_VERSION`."""
        blob = json.dumps({"format": CACHE_FORMAT_VERSION, "plan": self.to_dict()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def apply(self, volume: MetaTensor) -> MetaTensor:
        """Reorient, resample and normalise a (X, Y, Z) or (X, Y, Z, T) volume; returns the same layout.

        MONAI transforms work on a leading channel dim: a 3D volume gets one, a 4D volume's time axis becomes it
        (all time points share one resampling and one intensity mapping).
        """
        vol = volume if isinstance(volume, MetaTensor) else MetaTensor(torch.as_tensor(volume))
        if vol.ndim not in (3, 4):
            raise ValueError(f"expected a (X, Y, Z) or (X, Y, Z, T) volume, got shape {tuple(vol.shape)}")
        img = vol.float().unsqueeze(0) if vol.ndim == 3 else vol.float().movedim(-1, 0)
        if self.orientation:
            img = Orientation(axcodes=self.orientation, labels=RAS_LABELS)(img)
        if self.target_spacing is not None:
            # scale_extent: the output covers the input field of view (4 x 2 mm -> 8 x 1 mm, not 7)
            img = Spacing(pixdim=self.target_spacing, mode=INTERPOLATIONS[self.interpolation],
                          padding_mode="border", scale_extent=True)(img)
        if self.intensity == "ct_window":
            img = ScaleIntensityRange(*self.window, b_min=0.0, b_max=1.0, clip=True)(img)
        elif self.intensity == "percentile":
            img = ScaleIntensityRangePercentiles(*self.percentiles, b_min=0.0, b_max=1.0, clip=True)(img)
        elif self.intensity == "zscore":
            img = NormalizeIntensity()(img)
        arr = torch.as_tensor(img).squeeze(0) if vol.ndim == 3 else torch.as_tensor(img).movedim(0, -1)
        return make_volume(_cast(arr, self.dtype), torch.as_tensor(img.affine))


def _cast(arr: torch.Tensor, dtype: str) -> torch.Tensor:
    """Cast to ``dtype``; integer targets are rounded and must not overflow (labels would silently wrap)."""
    target = DTYPES[dtype]
    if target.is_floating_point:
        return arr.to(target)
    arr = torch.round(arr)
    info = torch.iinfo(target)
    if arr.numel() and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(f"values [{arr.min().item()}, {arr.max().item()}] do not fit dtype {dtype}")
    return arr.to(target)


def make_volume(array: torch.Tensor, affine: torch.Tensor) -> MetaTensor:
    """A medssl volume: spatial dims first, 4x4 float64 affine, meta ``spacing`` derived from the affine."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    spacing = tuple(float(s) for s in torch.linalg.norm(affine[:3, :3], dim=0))
    return MetaTensor(torch.as_tensor(array).contiguous(), affine=affine, meta={"spacing": spacing})
