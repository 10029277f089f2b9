"""Representation probes: weighted kNN vs a brute-force reference, separable / random labels, metrics vs sklearn,
feature extraction (shapes, labels, restored train mode), and PneumoniaMNIST raw pixels (real data)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from sklearn.metrics import roc_auc_score
from torch import nn

from medssl.data.medmnist import MedMNISTDataset
from medssl.eval.probe import (
    classification_metrics,
    extract_features,
    knn_predict,
    linear_probe_predict,
    probe_report,
)
from tests.conftest import require_shared


def knn_reference(train_x, train_y, test_x, k, temperature, num_classes):
    """Slow, obviously-correct weighted kNN: loops over queries and neighbours."""
    out = np.zeros((len(test_x), num_classes))
    for i, q in enumerate(test_x):
        sims = [float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x))) for x in train_x]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        for j in order:
            out[i, train_y[j]] += math.exp(sims[j] / temperature)
        out[i] /= out[i].sum()
    return out


def clusters(n_per_class: int, n_classes: int, dim: int = 8, spread: float = 0.1, seed: int = 0, noise_seed: int = 0):
    """Tight Gaussian blobs around ``n_classes`` centres fixed by ``seed``; ``noise_seed`` draws the points."""
    centres = np.random.default_rng(seed).normal(size=(n_classes, dim)) * 5
    y = np.repeat(np.arange(n_classes), n_per_class)
    noise = np.random.default_rng([seed, noise_seed]).normal(size=(len(y), dim))
    return (centres[y] + spread * noise).astype(np.float32), y


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (7, 0.5), (100, 0.1)])
def test_knn_matches_brute_force_reference(k, temperature):
    rng = np.random.default_rng(k)
    train_x, train_y = rng.normal(size=(40, 6)), rng.integers(0, 4, 40)
    test_x = rng.normal(size=(9, 6))
    probs = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=5)
    expected = knn_reference(train_x, train_y, test_x, min(k, 40), temperature, 5)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    assert probs.shape == (9, 5) and np.allclose(probs.sum(1), 1) and np.all(probs[:, 4] == 0)


def test_knn_chunks_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(1)
    train_x, train_y, test_x = rng.normal(size=(50, 4)), rng.integers(0, 3, 50), rng.normal(size=(23, 4))
    whole = knn_predict(train_x, train_y, test_x, k=5)
    monkeypatch.setattr("medssl.eval.probe.KNN_CHUNK_ELEMENTS", 50 * 4)  # 4 query rows per chunk
    np.testing.assert_allclose(knn_predict(train_x, train_y, test_x, k=5), whole, rtol=1e-5, atol=1e-7)


def test_separable_clusters_are_found_by_both_probes():
    train_x, train_y = clusters(30, 3)
    test_x, test_y = clusters(10, 3, noise_seed=1)  # same centres, new points
    report = probe_report(train_x, train_y, test_x, test_y, k=10)
    assert set(report) == {"knn_acc", "knn_balanced_acc", "knn_auroc", "linear_acc", "linear_balanced_acc",
                           "linear_auroc"}
    for key in report:
        assert report[key] == pytest.approx(1.0), report


def test_random_labels_give_chance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1200, 16)).astype(np.float32), rng.integers(0, 2, 1200)
    report = probe_report(x[:800], y[:800], x[800:], y[800:], k=20)
    for key in report:
        assert 0.4 < report[key] < 0.6, report


def test_linear_probe_handles_unscaled_features_and_maps_classes_to_columns():
    train_x, train_y = clusters(20, 3, seed=2)
    train_y = np.where(train_y == 2, 3, train_y)  # classes 0, 1, 3: column 2 stays empty
    probs = linear_probe_predict(train_x * 1000 + 50, train_y, train_x[:5] * 1000 + 50, num_classes=4)
    assert probs.shape == (5, 4) and np.allclose(probs.sum(1), 1) and np.all(probs[:, 2] == 0)
    single = linear_probe_predict(train_x, np.zeros(len(train_x), int), train_x[:3])
    assert np.array_equal(single, np.ones((3, 1)))


def test_metrics_match_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(3)
    y2 = rng.integers(0, 2, 60)
    p2 = rng.dirichlet(np.ones(2), 60)
    m2 = classification_metrics(y2, p2)
    assert m2["auroc"] == pytest.approx(roc_auc_score(y2, p2[:, 1]))
    assert m2["accuracy"] == pytest.approx(np.mean(p2.argmax(1) == y2))
    y4 = rng.integers(0, 4, 80)
    p4 = rng.dirichlet(np.ones(4), 80)
    m4 = classification_metrics(y4, p4)
    assert m4["auroc"] == pytest.approx(roc_auc_score(y4, p4, multi_class="ovr", average="macro"))
    from sklearn.metrics import balanced_accuracy_score

    assert m4["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y4, p4.argmax(1)))


def test_metrics_with_one_class_give_nan_auroc_without_error():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(np.zeros(3, int), probs)
    assert math.isnan(m["auroc"]) and m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(np.array([0, 2, 1]), probs)


class Items(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": MetaTensor(self.images[i]), "label": self.labels[i]}


class MeanEncoder(nn.Module):
    """Pooled features: [mean, max] of a linear map of the image, plus a dropout that eval mode must switch off."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.conv(x)).flatten(2).mean(2)


def test_extract_features_shapes_labels_and_restored_modes():
    torch.manual_seed(0)
    images = torch.rand(7, 1, 5, 6)
    labels = [1, np.array([2]), torch.tensor([0]), torch.tensor(3), np.int64(1), 2, 0]
    enc = MeanEncoder().train()
    enc.conv.eval()  # a submodule deliberately in eval mode must stay so
    rng_before = torch.random.get_rng_state()
    feats, y = extract_features(enc, Items(images, labels), batch_size=3)
    assert torch.equal(rng_before, torch.random.get_rng_state())
    assert feats.dtype == np.float32 and feats.shape == (7, 3)
    assert y.dtype == np.int64 and y.tolist() == [1, 2, 0, 3, 1, 2, 0]
    with torch.no_grad():
        expected = enc.conv(images).flatten(2).mean(2).numpy()  # no dropout: eval mode during extraction
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert enc.training and enc.drop.training and not enc.conv.training


def test_extract_features_rejects_multilabel_and_unpooled_outputs():
    images = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="single-label"):
        extract_features(MeanEncoder(), Items(images, [torch.tensor([0, 1, 1])] * 3))
    with pytest.raises(ValueError, match="pooled features"):
        extract_features(nn.Conv2d(1, 2, 1), Items(images, [0, 1, 0]))


@pytest.mark.realdata
def test_pneumoniamnist_raw_pixels():
    path = require_shared("medmnist", "pneumoniamnist.npz")
    train = MedMNISTDataset(path, "train", indices=np.arange(2000))
    val = MedMNISTDataset(path, "val", indices=np.arange(500))
    pixels = nn.Flatten()
    train_x, train_y = extract_features(pixels, train)
    val_x, val_y = extract_features(pixels, val)
    assert train_x.shape == (2000, 28 * 28)
    report = probe_report(train_x, train_y, val_x, val_y, k=20)
    majority = max(np.mean(val_y == c) for c in np.unique(val_y))
    print(f"PneumoniaMNIST raw pixels: majority {majority:.3f}, {report}")
    # measured: knn_acc 0.950, linear_acc 0.950, AUROC 0.981 / 0.984 (majority class 0.742)
    assert report["knn_acc"] > 0.85 > majority and report["linear_acc"] > 0.85
    assert report["knn_auroc"] > 0.93 and report["linear_auroc"] > 0.93
