"""Connected-component post-processing: against a naive flood-fill reference, the validation choice, the checkpoint."""
from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
import torch

from medssl.finetune.postprocess import (POSTPROCESS, apply_postprocess, choose_postprocess,
                                         record_in_checkpoint)


def largest_reference(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean 3-D mask, naively: breadth-first flood fill from every
    unvisited voxel in scan order, keep the first of the biggest."""
    seen = np.zeros_like(mask, dtype=bool)
    steps = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]
    best: list[tuple[int, int, int]] = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        component, queue = [], deque([start])
        while queue:
            v = queue.popleft()
            component.append(v)
            for d in steps:
                w = tuple(a + b for a, b in zip(v, d))
                if all(0 <= c < s for c, s in zip(w, mask.shape)) and mask[w] and not seen[w]:
                    seen[w] = True
                    queue.append(w)
        if len(component) > len(best):
            best = component
    out = np.zeros_like(mask, dtype=bool)
    for v in best:
        out[v] = True
    return out if best else mask.copy()


def reference(labels: np.ndarray, method: str) -> np.ndarray:
    if method == "none":
        return labels.copy()
    out = labels.copy()
    if method == "largest_foreground":
        out[~largest_reference(labels > 0)] = 0
        return out
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        out[mask & ~largest_reference(mask)] = 0
    return out


def test_matches_the_scipy_reference_on_random_maps():
    rng = np.random.default_rng(0)
    for trial in range(6):
        labels = np.zeros((18, 16, 10), dtype=np.int64)
        for _ in range(5):  # boxes of labels 1-3, some touching, some apart
            lo = rng.integers(0, [14, 12, 7])
            size = rng.integers(1, 5, size=3)
            labels[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]] = rng.integers(1, 4)
        for method in POSTPROCESS:
            got = apply_postprocess(torch.as_tensor(labels), method)
            assert got.dtype == torch.int64 and got.shape == labels.shape
            np.testing.assert_array_equal(got.numpy(), reference(labels, method), err_msg=f"{method}, trial {trial}")


def test_largest_foreground_keeps_a_lesion_with_its_parts_and_drops_islands():
    labels = torch.zeros(20, 20, 10, dtype=torch.int64)
    labels[2:10, 2:10, 2:8] = 2  # oedema
    labels[4:7, 4:7, 3:6] = 1  # core inside it
    labels[5, 5, 4] = 4  # enhancing voxel inside the core
    labels[15:17, 15:17, 1:3] = 2  # a false-positive island
    labels[18, 1, 8] = 4  # a lone enhancing voxel
    kept = apply_postprocess(labels, "largest_foreground")
    assert kept[15:17, 15:17, 1:3].eq(0).all() and kept[18, 1, 8] == 0
    assert torch.equal(kept[:12, :12], labels[:12, :12])  # the lesion, all three labels, untouched
    per_label = apply_postprocess(labels, "largest_per_label")
    assert per_label[5, 5, 4] == 4 and per_label[18, 1, 8] == 0  # the largest enhancing component is 1 voxel too
    assert torch.equal(apply_postprocess(labels, "none"), labels) and apply_postprocess(labels, "none") is not labels
    empty = torch.zeros(4, 4, 4, dtype=torch.int64)
    assert torch.equal(apply_postprocess(empty, "largest_foreground"), empty)
    with pytest.raises(ValueError, match="postprocess"):
        apply_postprocess(labels, "auto")


def dice(pred: torch.Tensor, ref: torch.Tensor) -> float:
    p, r = pred > 0, ref > 0
    return float(2 * (p & r).sum() / max(int(p.sum() + r.sum()), 1))


def test_the_validation_cases_choose_and_ties_keep_the_prediction():
    ref = torch.zeros(16, 16, 8, dtype=torch.int64)
    ref[2:8, 2:8, 2:6] = 1
    island = ref.clone()
    island[12:14, 12:14, 1:3] = 1  # a false positive: removing it raises Dice
    two_organs = ref.clone()
    two_organs[10:15, 10:15, 2:6] = 1  # two true structures: keeping one lowers Dice
    choice = choose_postprocess([(island, ref)], dice)
    assert choice["chosen"] in ("largest_foreground", "largest_per_label") and choice["n_cases"] == 1
    assert choice["val_dice"]["largest_foreground"] == 1.0 > choice["val_dice"]["none"]
    assert choose_postprocess([(two_organs, two_organs)], dice)["chosen"] == "none"
    assert choose_postprocess([(ref, ref)], dice)["chosen"] == "none"  # a tie keeps what was predicted
    assert choose_postprocess([], dice) == {"chosen": "none", "val_dice": {}, "n_cases": 0}
    with pytest.raises(ValueError, match="none"):
        choose_postprocess([(ref, ref)], dice, methods=["largest_foreground"])


def test_the_choice_is_written_into_the_checkpoint(tmp_path):
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"task": "segmentation"}}, path)
    record_in_checkpoint(path, "largest_foreground")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"] == {"task": "segmentation", "postprocess": "largest_foreground"}
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2)) and not (tmp_path / "best.ckpt.tmp").exists()
    with pytest.raises(ValueError):
        record_in_checkpoint(path, "auto")
