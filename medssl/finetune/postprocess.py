"""Connected-component post-processing of predicted label maps, chosen on the validation cases (the nnU-Net rule).

A segmenter trained on a few cases often predicts the structure it should plus small islands elsewhere (in BraTS,
false-positive tumour along the brain's edge that make HD95 ~ 90 mm). nnU-Net removes them by keeping only the
largest connected component, and applies that only where it does not lower the Dice of the cases it was validated
on. The same rule here (components by ``scipy.ndimage.label``, full connectivity: 26 neighbours in 3-D, 8 in
2-D; MONAI's ``KeepLargestConnectedComponent`` does the same but needs scikit-image, which medssl does not install):

* ``"none"``: the argmax / thresholded map as predicted;
* ``"largest_foreground"``: every label > 0 together forms the foreground; all of it outside its largest connected
  component (full connectivity) becomes background. Right for one lesion or one organ with several labels (tumour
  with core and enhancing parts); wrong where the foreground is several separate structures (liver *and* kidney),
  which the validation cases then show;
* ``"largest_per_label"``: the same for each label on its own (voxels removed from a label become background);
* ``"auto"`` (a choice, not a method): :func:`choose_postprocess` scores each of the three on the validation
  volumes' predictions and keeps the one with the best mean Dice; ``"none"`` unless another is *strictly* better,
  so nothing is removed on a tie.

The chosen method is a hyperparameter of the segmenter (``hparams["postprocess"]``): applied by
``SegmentationFinetuner.predict_volume``, hence to the test metrics and by ``medssl predict`` alike, and written into
the best checkpoint (:func:`record_in_checkpoint`). Validation during training scores the raw maps, so checkpoint
selection does not depend on it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["POSTPROCESS", "POSTPROCESS_CHOICES", "apply_postprocess", "check_postprocess", "choose_postprocess",
           "record_in_checkpoint"]

#: the methods a segmenter can apply (``apply_postprocess``)
POSTPROCESS = ("none", "largest_foreground", "largest_per_label")
#: what a config may ask for: a method, or ``auto`` (chosen on validation)
POSTPROCESS_CHOICES = (*POSTPROCESS, "auto")


def check_postprocess(method: str, allowed: Sequence[str] = POSTPROCESS) -> str:
    """``method`` when it is one of ``allowed`` (default: the methods a segmenter applies), else ValueError."""
    if method not in allowed:
        raise ValueError(f"postprocess must be one of {tuple(allowed)}, got {method!r}")
    return method


def apply_postprocess(labels: torch.Tensor, method: str) -> torch.Tensor:
    """``labels`` (``(*spatial)`` integer map) post-processed by ``method`` (one of :data:`POSTPROCESS`); a new
    tensor of the same shape and dtype, ``labels`` untouched. Labels absent from the map are left as they are."""
    check_postprocess(method)
    out = labels.detach().cpu().numpy().copy()
    if method == "largest_foreground":
        out[~_largest_component(out > 0)] = 0
    elif method == "largest_per_label":
        for value in np.unique(out[out > 0]):
            mask = out == value
            out[mask & ~_largest_component(mask)] = 0
    return torch.as_tensor(out, dtype=labels.dtype)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest fully connected component of boolean ``mask`` (ties: the first in scan order); ``mask`` itself
    when it is empty."""
    from scipy import ndimage

    labelled, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def choose_postprocess(predictions: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       score: Callable[[torch.Tensor, torch.Tensor], float],
                       methods: Sequence[str] = POSTPROCESS) -> dict[str, Any]:
    """The method (of ``methods``, ``"none"`` first) with the best mean ``score(pred, reference)`` over
    ``predictions`` (pairs of ``(*spatial)`` predicted and reference label maps, e.g. the validation cases).

    Returns ``{"chosen": method, "val_dice": {method: mean score}, "n_cases": n}``; ``"none"`` is kept unless
    another method is strictly better (ties keep the prediction as it is). No cases: ``"none"``, scores empty.
    """
    methods = list(methods)
    if not methods or methods[0] != "none" or any(m not in POSTPROCESS for m in methods):
        raise ValueError(f"methods must start with 'none' and come from {POSTPROCESS}, got {methods}")
    scores: dict[str, list[float]] = {m: [] for m in methods}
    for pred, ref in predictions:
        for m in methods:
            scores[m].append(float(score(apply_postprocess(pred, m), ref)))
    n = len(scores["none"])
    if n == 0:
        return {"chosen": "none", "val_dice": {}, "n_cases": 0}
    means = {m: float(np.mean(v)) for m, v in scores.items()}
    chosen = "none"
    for m in methods[1:]:
        if means[m] > means[chosen]:
            chosen = m
    return {"chosen": chosen, "val_dice": means, "n_cases": n}


def record_in_checkpoint(path: str | Path, method: str) -> None:
    """Write ``method`` as ``hyper_parameters["postprocess"]`` of the Lightning checkpoint at ``path`` (atomically:
    a temporary file renamed over it), so ``medssl predict`` applies what the run chose."""
    check_postprocess(method)
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt.setdefault("hyper_parameters", {})["postprocess"] = method
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
