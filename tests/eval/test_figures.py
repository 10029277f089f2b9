"""Segmentation overlays and embedding maps: decoded PNGs show the label colours where the truth is."""
from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from medssl.eval.figures import (
    FigureInputError,
    embedding_map,
    foreground_slice,
    label_colours,
    overlay_rgb,
    segmentation_overlay,
    segmentation_overlays,
)


def _decode(path) -> np.ndarray:
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.05  # not a blank canvas
    return pixels


def _count(pixels: np.ndarray, rgb: np.ndarray, tol: float = 3 / 255) -> int:
    return int(np.all(np.abs(pixels - rgb) <= tol, axis=-1).sum())


def _volume(k: int = 5, shape=(12, 10, 8)):
    """Constant grey image; label 1 is a square in slice ``k`` along the last axis, label 2 a smaller one."""
    image = np.full((1, *shape), 100.0)
    truth = np.zeros(shape, dtype=np.int64)
    truth[2:9, 2:8, k] = 1
    truth[4:6, 4:6, k] = 2
    return image, truth


def test_foreground_slice_picks_the_most_foreground_and_falls_back_to_middle():
    _, truth = _volume(k=5)
    assert foreground_slice(truth, axis=2) == 5
    assert foreground_slice(truth, axis=-1) == 5
    truth[0:3, :, :] = 1  # axis 0: slices 0-2 are full
    assert foreground_slice(truth, axis=0) == 1  # middle of the tied slices
    assert foreground_slice(np.zeros((4, 6, 9)), axis=2) == 4


def test_overlay_rgb_blends_label_colours_and_leaves_background_grey():
    labels = np.array([[0, 1], [2, 0]])
    rgb = overlay_rgb(np.full((2, 2), 0.5), labels, alpha=0.5)
    colours = label_colours(2)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(rgb[0, 1], 0.25 + 0.5 * colours[0], atol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], 0.25 + 0.5 * colours[1], atol=1e-6)
    assert not np.allclose(colours[0], colours[1])
    many = label_colours(13)
    assert len(many) == 13 and len({tuple(c) for c in many}) == 13
    assert not any(np.allclose(c, c[0]) for c in many)  # no grey label on a grey image
    rgb = overlay_rgb(np.full((1, 13), 0.5), np.arange(1, 14)[None], alpha=0.5)
    np.testing.assert_allclose(rgb[0], 0.25 + 0.5 * many, atol=1e-6)  # same colours as the legend


def test_segmentation_overlay_3d_shows_truth_colour_on_the_foreground_slice(tmp_path):
    image, truth = _volume(k=5)
    pred = np.zeros_like(truth)
    out = segmentation_overlay(torch.as_tensor(image), truth, pred, tmp_path / "sub" / "overlay.png",
                               label_names=["background", "organ", "lesion"], title="synthetic")
    assert out == tmp_path / "sub" / "overlay.png"
    pixels = _decode(out)
    organ = 0.5 * 0.5 + 0.5 * label_colours(2)[0]  # constant image -> grey 0.5, alpha 0.5
    # only the ground-truth panel holds the blended colour; the legend patch uses the pure colour
    assert _count(pixels, organ) > 200
    assert _count(pixels, 0.25 + 0.5 * label_colours(2)[1]) > 50  # lesion
    assert _count(pixels, label_colours(2)[0]) > 20  # legend patch
    assert plt.get_fignums() == []


def test_segmentation_overlay_other_axis_and_empty_truth(tmp_path):
    image, truth = _volume(k=5)
    out = segmentation_overlay(image[0], truth, truth, tmp_path / "o.png", axis=1)  # cut across: still colour
    pixels = _decode(out)
    assert _count(pixels, 0.25 + 0.5 * label_colours(2)[0]) > 100
    empty = segmentation_overlay(image[0], np.zeros_like(truth), np.zeros_like(truth), tmp_path / "e.png")
    assert _count(_decode(empty), 0.25 + 0.5 * label_colours(1)[0]) == 0


def test_segmentation_overlays_one_row_per_case_2d_and_3d(tmp_path):
    image, truth = _volume(k=3)
    one = _decode(segmentation_overlays([{"image": image, "truth": truth, "pred": truth}], tmp_path / "1.png"))
    two_d = np.random.default_rng(0).random((2, 16, 20))  # (C, H, W)
    t2 = np.zeros((1, 16, 20), dtype=np.int64)
    t2[0, 4:10, 5:15] = 1
    cases = [{"image": image, "truth": truth, "pred": np.zeros_like(truth), "name": "case A"},
             {"image": two_d, "truth": t2, "pred": t2}]
    two = _decode(segmentation_overlays(cases, tmp_path / "2.png"))
    assert two.shape[0] > 1.5 * one.shape[0]


def test_segmentation_overlay_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(FigureInputError, match="pred"):
        segmentation_overlay(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 9)), tmp_path / "x.png")
    with pytest.raises(FigureInputError, match="image"):
        segmentation_overlay(np.zeros((7, 8)), np.zeros((8, 8)), np.zeros((8, 8)), tmp_path / "x.png")
    with pytest.raises(FigureInputError, match="integer"):
        segmentation_overlay(np.zeros((8, 8)), np.full((8, 8), 0.5), np.zeros((8, 8)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map_writes_a_coloured_scatter(tmp_path, method):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 12)
    features = rng.normal(size=(36, 8)) + 3 * labels[:, None]
    out = embedding_map(torch.as_tensor(features), labels[:, None], tmp_path / f"{method}.png", method=method,
                        class_names=["normal", "benign", "malignant"])
    pixels = _decode(out)
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2).sum() > 50  # coloured (not grey) points
    assert plt.get_fignums() == []


def test_embedding_map_subsamples_and_validates(tmp_path):
    rng = np.random.default_rng(1)
    out = embedding_map(rng.normal(size=(60, 4)), rng.integers(0, 2, 60), tmp_path / "s.png", max_points=20,
                        class_names={0: "a", 1: "b"})
    _decode(out)
    with pytest.raises(FigureInputError, match="method"):
        embedding_map(rng.normal(size=(10, 4)), np.zeros(10), tmp_path / "x.png", method="umap")
    with pytest.raises(FigureInputError, match="labels"):
        embedding_map(rng.normal(size=(10, 4)), np.zeros(9), tmp_path / "x.png")
