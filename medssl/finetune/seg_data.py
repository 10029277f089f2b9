"""Segmentation data prepared exactly as the encoder's pretraining data was, and checked against the card first.

**Preprocessing.** Images and labels go through a :class:`~medssl.data.cache.PreprocessCache` with the encoder
card's :class:`~medssl.data.plan.PreprocessPlan` (labels with ``plan.for_labels()``: same geometry, nearest
neighbour, integers), so a fine-tuned encoder sees what it saw in pretraining. :func:`resolve_plan` picks the plan
and returns a record of where it came from (``"card"``, ``"config"`` for runs without a card, or ``"override"``).

**Contradiction checks** (:class:`~medssl.finetune.seg_cases.SegmentationDataError`, reason ``bad_config``,
naming the offending file):

* the card's ``spatial_dims`` differs from the task's (:func:`check_card_dims`);
* the card's ``in_channels`` differs from the cases' image channels (:func:`check_cases`);
* a given plan differs from the card's, or the card records no volume plan (``"kind": "medmnist"``: 2-D 8-bit
  images scaled to [0, 1], nothing a volume can be prepared like), unless ``override_plan=True``, which the record
  keeps with the card's preprocessing beside it;
* the card's plan does not hash to the fingerprint the card recorded (edited card, or another cache format);
* a ``ct_window`` plan on images that are clearly not Hounsfield units. The rule (:func:`check_hu`): a CT in HU
  holds voxels below water (0 HU: air -1000, lung -800, fat -100) and spans far more than 20 units, so an image
  whose raw minimum is >= 0, or whose raw range is < 20, is not HU: an MR scan, CT stored as unsigned raw values
  (HU + 1024 without the rescale), or data already normalised. A CT crop lying wholly inside soft tissue would be
  refused too: pass ``hu_check=False`` for it. The check reads the raw images of up to :data:`HU_CHECK_CASES`
  cases spread over the list (modality is a property of the whole data set);
* an image and its label on different grids: :func:`~medssl.data.nifti.check_same_grid` on the raw headers raises
  :class:`~medssl.errors.NiftiError` (``shape_mismatch``) naming both files, before anything is cached.

**Datasets.** :class:`SegmentationPatches` (training): random ``roi_size`` crops centred on a foreground or a
background voxel with probability ``pos / (pos + neg)`` (MONAI ``RandCropByPosNegLabeld``), zero-padded first
when the volume is smaller, then random flips along each axis of ``flip_axes`` (default every axis; give only
the axes without anatomical meaning for the labels, e.g. ``[0]``, left-right in RAS, when labels name anterior and
posterior parts as in the MSD hippocampus). With ``class_ratios`` (one weight per label value, background first)
crop centres are drawn per *class* instead (MONAI ``RandCropByLabelClassesd``): ``[1, 1, 2]`` centres half the crops
on label 2, however few voxels it has, as nnU-Net oversamples foreground classes. A small structure such as a
50-voxel tumour inside an organ is otherwise almost never a crop centre, and a few-label run of a few hundred steps
does not learn it. A class absent from a case gets no crops from that case (its weight is shared out by MONAI); the
background weight must be > 0, so an item without any weighted foreground still has crop centres. In 2-D the
balance holds per slice, not per batch: slices without the structure still give background crops. When every case has a ``mask`` (a brain mask) and
``use_masks`` is on, background centres are drawn inside the mask only (the mask is prepared like a label map and
used as ``RandCropByPosNegLabeld``'s ``image_key`` with threshold 0), so a full-size 240 x 240 x 155 MRI does not
spend half its crops on air; in 2-D the items are the slices along
the last voxel axis. :class:`SegmentationVolumes` (validation / test): whole preprocessed volumes with their affine,
voxel spacing (mm) and case id. Randomness is seeded from ``(seed, epoch, index)`` by
:class:`~medssl.data.dataset.ScanDataset` (:meth:`SegmentationPatches.set_epoch`).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, RandCropByLabelClassesd, RandCropByPosNegLabeld, RandFlipd, SpatialPadd
import numpy as np
from torch.utils.data import Dataset

from medssl.data.cache import PreprocessCache
from medssl.data.dataset import ScanDataset
from medssl.data.loading import load_volume
from medssl.data.nifti import check_same_grid
from medssl.data.plan import PreprocessPlan
from medssl.finetune.seg_cases import (
    SegmentationCase,
    SegmentationDataError,
    num_channels,
)

__all__ = ["HU_CHECK_CASES", "SegmentationPatches", "SegmentationVolumes", "check_card_dims", "check_cases",
           "check_hu", "class_ratios_error", "flip_axes_error", "resolve_plan"]

HU_CHECK_CASES = 3  # cases whose raw intensities check_hu reads (first, middle, last)
HU_MIN_SPAN = 20.0  # a CT in HU spans far more than this


def resolve_plan(card: dict[str, Any] | None, card_path: str | Path | None,
                 plan: PreprocessPlan | dict[str, Any] | None = None,
                 override_plan: bool = False) -> tuple[PreprocessPlan, dict[str, Any]]:
    """The plan to prepare the task's data with, and a JSON record of where it came from (see module docstring)."""
    given = PreprocessPlan.from_dict(plan) if isinstance(plan, dict) else plan
    files = [card_path] if card_path else []
    if card is None:
        if given is None:
            raise SegmentationDataError("a run without an encoder card needs plan= (the task's preprocessing)")
        return given, {"source": "config", "plan": given.to_dict(), "fingerprint": given.fingerprint()}
    pre = card.get("preprocessing") or {}
    card_plan, problem = None, None
    if pre.get("kind") == "plan":
        card_plan = PreprocessPlan.from_dict(pre["plan"])
        recorded = pre.get("fingerprint")
        if recorded is not None and recorded != card_plan.fingerprint():
            problem = ("the card's plan does not hash to the fingerprint it records (an edited card, or one written "
                       "with another cache format): its data preparation cannot be reproduced")
    elif pre.get("kind") == "medmnist":
        problem = ("the encoder was pretrained on MedMNIST arrays (2-D 8-bit images scaled to [0, 1]), not on "
                   "volumes prepared by a plan: volume segmentation cannot reproduce that preprocessing")
    else:
        problem = f"the card records no volume preprocessing plan (preprocessing kind {pre.get('kind')!r})"
    if problem is None and (given is None or given == card_plan):
        return card_plan, {"source": "card", "plan": card_plan.to_dict(), "fingerprint": card_plan.fingerprint()}
    if problem is None:
        diff = {k: [v, card_plan.to_dict()[k]] for k, v in given.to_dict().items() if v != card_plan.to_dict()[k]}
        problem = f"the given plan differs from the card's (field: [given, card]) {diff}"
    if not override_plan or given is None:
        hint = "pass plan= and override_plan=True to use another one" if given is None else \
            "leave plan out to use the card's, or pass override_plan=True (recorded)"
        raise SegmentationDataError(f"{problem}; {hint}", files)
    return given, {"source": "override", "plan": given.to_dict(), "fingerprint": given.fingerprint(),
                   "reason": problem, "card_preprocessing": pre}


def check_card_dims(card: dict[str, Any], card_path: str | Path | None, spatial_dims: int) -> None:
    """Raise unless the card's encoder is ``spatial_dims``-D (2-D tasks segment the slices of volumes)."""
    if int(card["spatial_dims"]) != int(spatial_dims):
        raise SegmentationDataError(f"the encoder card is {card['spatial_dims']}-D but the task is {spatial_dims}-D "
                                    "segmentation", [card_path] if card_path else [])


def check_cases(cases: Sequence[SegmentationCase], *, plan: PreprocessPlan, in_channels: int,
                card_path: str | Path | None = None, hu_check: bool = True,
                channel_names: Sequence[str] | None = None, expected_names: Sequence[str] | None = None) -> None:
    """Channels vs ``in_channels``, raw image/label grids, and (``ct_window`` plans) :func:`check_hu`.

    ``channel_names`` / ``expected_names`` (the data's and the card's, when known) are named in the error."""
    if not cases:
        raise SegmentationDataError("no cases")
    where = "the encoder card" if card_path else "the network"
    for case in cases:
        found = num_channels(case)
        if found != in_channels:
            ours = f" {list(channel_names)}" if channel_names is not None else ""
            theirs = f" {list(expected_names)}" if expected_names is not None else ""
            hint = (" (or adapt the encoder's first layer explicitly: adapt_channels: average | repeat)"
                    if card_path else "")
            raise SegmentationDataError(f"case {case.case_id!r} has {found} image channel(s){ours} but {where} "
                                        f"expects {in_channels}{theirs}{hint}",
                                        [*case.image, *([card_path] if card_path else [])])
        for image in case.image:
            check_same_grid(image, case.label)  # NiftiError(shape_mismatch) naming both files
    if hu_check and plan.intensity == "ct_window":
        check_hu(cases)


def check_hu(cases: Sequence[SegmentationCase], max_cases: int = HU_CHECK_CASES) -> None:
    """Raise when the raw images are clearly not Hounsfield units (rule in the module docstring)."""
    picks = sorted({round(i * (len(cases) - 1) / max(1, max_cases - 1)) for i in range(max_cases)})
    for case in (cases[i] for i in picks if i < len(cases)):
        for f in case.image:
            vol = load_volume(f).as_tensor()
            lo, hi = float(vol.min()), float(vol.max())
            if lo >= 0 or hi - lo < HU_MIN_SPAN:
                raise SegmentationDataError(
                    f"the plan's ct_window expects CT in Hounsfield units, but raw intensities [{lo:g}, {hi:g}] are "
                    f"not HU (a CT in HU has voxels below 0 and spans more than {HU_MIN_SPAN:g}): use a plan made "
                    "for this modality, or pass hu_check=False if these really are HU", [f])


def _scans(cases: Sequence[SegmentationCase], cache: PreprocessCache, **kwargs: Any) -> ScanDataset:
    return ScanDataset([tuple(c.image) for c in cases], cache, label_sources=[c.label for c in cases], **kwargs)


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def flip_axes_error(flip_axes: Sequence[int] | None, spatial_dims: int) -> str | None:
    """Why ``flip_axes`` is not a list of distinct spatial axes in ``0..spatial_dims - 1`` (None when it is)."""
    if flip_axes is None:
        return None
    if isinstance(flip_axes, (str, bytes)) or not isinstance(flip_axes, Sequence):
        return f"flip_axes must be null or a list of spatial axes, got {flip_axes!r}"
    if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < spatial_dims for a in flip_axes) or len(
            set(flip_axes)) != len(flip_axes):
        return f"flip_axes must be distinct spatial axes in 0..{spatial_dims - 1}, got {list(flip_axes)!r}"
    return None


def class_ratios_error(class_ratios: Any, n_labels: int | None = None) -> str | None:
    """Why ``class_ratios`` is not None or a list of >= 2 non-negative weights with positive background and
    foreground weights, one per label value when ``n_labels`` is given (None when it is)."""
    if class_ratios is None:
        return None
    if isinstance(class_ratios, (str, bytes)) or not isinstance(class_ratios, Sequence) or len(class_ratios) < 2:
        return (f"class_ratios must be null or one crop weight per label value (background first, at least 2), "
                f"got {class_ratios!r}")
    if any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 0 for r in class_ratios):
        return f"class_ratios must be numbers >= 0, got {list(class_ratios)!r}"
    if not sum(class_ratios[1:]) > 0:
        return f"class_ratios must give some foreground class a weight > 0, got {list(class_ratios)!r}"
    if not class_ratios[0] > 0:  # a crop (a 2-D slice, a case) without the weighted classes needs somewhere to go
        return f"class_ratios must give the background (first) a weight > 0, got {list(class_ratios)!r}"
    if n_labels is not None and len(class_ratios) != n_labels:
        return (f"class_ratios needs one weight per label value ({n_labels}: background first), got "
                f"{list(class_ratios)!r}")
    return None


class SegmentationPatches(Dataset):
    """Training crops ``{"image": (C, *roi) float32, "label": (1, *roi) int64}`` (see module docstring).

    In 2-D the items are crops of the slices along the last voxel axis (axial for the plan's RAS orientation), the
    axis :meth:`medssl.finetune.segmentation.SegmentationFinetuner.predict_logits` slices volumes along.

    Args:
        cases: labelled training cases.
        cache: image cache holding the plan (labels use ``plan.for_labels()`` under the same root).
        roi_size: crop size, ``spatial_dims`` entries.
        spatial_dims: 3 (volumes) or 2 (slices).
        pos, neg: foreground / background crop-centre weights (MONAI ``RandCropByPosNegLabeld``).
        flip_prob: probability of a flip along each axis of ``flip_axes``.
        flip_axes: the spatial axes (of the plan's orientation) that may be flipped; None = all of them, [] = none.
        seed: base seed of the crops and flips.
        use_masks: draw background crop centres inside the cases' masks (when every case has one).
        class_ratios: crop-centre weight of each label value (background first) instead of ``pos``/``neg``
            (MONAI ``RandCropByLabelClassesd``); None = foreground / background sampling.
    """

    def __init__(self, cases: Sequence[SegmentationCase], cache: PreprocessCache, *, roi_size: Sequence[int],
                 spatial_dims: int = 3, pos: float = 1.0, neg: float = 1.0, flip_prob: float = 0.5, seed: int = 0,
                 use_masks: bool = True, flip_axes: Sequence[int] | None = None,
                 class_ratios: Sequence[float] | None = None):
        roi = [int(r) for r in roi_size]
        if len(roi) != spatial_dims:
            raise ValueError(f"roi_size {roi} does not have {spatial_dims} axes")
        problem = flip_axes_error(flip_axes, spatial_dims)
        if problem is not None:
            raise ValueError(problem)
        axes = range(spatial_dims) if flip_axes is None else [int(a) for a in flip_axes]
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos and neg must be >= 0 and not both 0, got {pos}, {neg}")
        problem = class_ratios_error(class_ratios)
        if problem is not None:
            raise ValueError(problem)
        self.class_ratios = None if class_ratios is None else [float(r) for r in class_ratios]
        self.cases = list(cases)
        self.masked = bool(use_masks) and bool(self.cases) and all(c.mask is not None for c in self.cases)
        keys = ["image", "label"]
        self.transform = Compose([
            SpatialPadd([*keys, "mask"] if self.masked else keys, spatial_size=roi),
            RandCropByPosNegLabeld(keys, "label", spatial_size=roi, pos=pos, neg=neg, num_samples=1,
                                   image_key="mask" if self.masked else None, image_threshold=0.0)
            if self.class_ratios is None else
            RandCropByLabelClassesd(keys, "label", spatial_size=roi, ratios=self.class_ratios,
                                    num_classes=len(self.class_ratios), num_samples=1,
                                    image_key="mask" if self.masked else None, image_threshold=0.0,
                                    warn=False),
            *(RandFlipd(keys, prob=flip_prob, spatial_axis=a) for a in axes),
        ])
        self.seed = int(seed)
        self.scans = _scans(self.cases, cache, spatial_dims=spatial_dims, slice_axis=2, seed=seed)
        self.masks = None
        if self.masked:
            mask_cache = PreprocessCache(cache.root, cache.plan.for_labels(), cache.loader, cache.trust_stat)
            self.masks = ScanDataset([c.mask for c in self.cases], mask_cache, spatial_dims=spatial_dims,
                                     slice_axis=2, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's (reproducible) crops and flips."""
        self.scans.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        data = self.scans[index]
        if self.masks is not None:
            data["mask"] = self.masks[index]["image"]
        # seeded per (seed, epoch, item), as ScanDataset seeds its own transforms
        seed = np.random.SeedSequence([self.seed, self.scans.epoch, index % len(self)]).generate_state(2)[1]
        self.transform.set_random_state(seed=int(seed))
        with warnings.catch_warnings():  # a slice or volume without foreground: background crops, as intended
            warnings.filterwarnings("ignore", message=".*unable to generate class balanced samples.*")
            warnings.filterwarnings("ignore", message=".*no available indices of class.*")
            item = self.transform(data)
        item = item[0] if isinstance(item, list) else item
        return {"image": _plain(item["image"]).to(torch.float32), "label": _plain(item["label"]).to(torch.int64)}


class SegmentationVolumes(Dataset):
    """Whole volumes ``{"image": (C, *S) float32, "label": (1, *S) int64, "affine": 4x4, "spacing": (3,) mm,
    "case_id": str}`` for validation and test, on the plan's grid."""

    def __init__(self, cases: Sequence[SegmentationCase], cache: PreprocessCache):
        self.cases = list(cases)
        self.scans = _scans(self.cases, cache, spatial_dims=3)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.scans[index]
        affine = torch.as_tensor(item["image"].affine, dtype=torch.float64)
        return {"image": _plain(item["image"]).to(torch.float32), "label": _plain(item["label"]).to(torch.int64),
                "affine": affine, "spacing": torch.linalg.norm(affine[:3, :3], dim=0),
                "case_id": self.cases[index].case_id}
