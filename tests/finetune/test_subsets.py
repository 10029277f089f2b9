"""label_subset / SubsetRecord: stratification, per-class minimum, determinism, sizes, refusal of bad requests."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.finetune.subsets import SubsetRecord, label_subset

# 700 / 250 / 50 items of classes 0, 1, 2, interleaved
LABELS = np.repeat([0, 1, 2], [700, 250, 50])[np.random.default_rng(0).permutation(1000)]


def test_stratified_fraction_keeps_class_proportions():
    idx = label_subset(LABELS, fraction=0.1, seed=0)
    assert len(idx) == 100 and np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    assert np.bincount(LABELS[idx]).tolist() == [70, 25, 5]


def test_min_per_class_and_small_classes():
    labels = np.array([0] * 95 + [1] * 4 + [2] * 1)
    idx = label_subset(labels, fraction=0.02, seed=3, min_per_class=2)  # 2 requested, 2 + 2 + 1 guaranteed
    assert np.bincount(labels[idx]).tolist() == [2, 2, 1]
    idx = label_subset(labels, count=10, seed=3, min_per_class=1)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.sum() == 10 and counts.min() >= 1
    with pytest.raises(ValueError, match="cannot hold min_per_class"):
        label_subset(labels, count=2, seed=0, min_per_class=1)
    assert len(label_subset(labels, count=2, seed=0, min_per_class=0)) == 2


def test_deterministic_independent_of_global_rng_and_seed_dependent():
    np.random.seed(1)
    a = label_subset(LABELS, fraction=0.05, seed=7)
    np.random.seed(2)
    np.random.rand(10)
    assert np.array_equal(a, label_subset(LABELS, fraction=0.05, seed=7))
    assert not np.array_equal(a, label_subset(LABELS, fraction=0.05, seed=8))


def test_counts_vs_fractions_and_nesting():
    assert np.array_equal(label_subset(LABELS, fraction=0.2, seed=0), label_subset(LABELS, count=200, seed=0))
    assert np.array_equal(label_subset(LABELS, fraction=1.0, seed=5), np.arange(1000))
    small, large = label_subset(LABELS, fraction=0.05, seed=1), label_subset(LABELS, fraction=0.2, seed=1)
    assert set(small) <= set(large)  # same seed: the larger budget extends the smaller one
    assert len(label_subset(LABELS, fraction=0.0001, seed=0)) == 3  # round -> 0, raised to one per class


def test_unstratified_draw():
    idx = label_subset(LABELS, count=30, seed=0, stratified=False)
    assert len(idx) == 30 and set(np.unique(LABELS[idx])) == {0, 1, 2}
    assert np.array_equal(idx, label_subset(LABELS, count=30, seed=0, stratified=False))


@pytest.mark.parametrize("kwargs, match", [
    ({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"count": 0}, "count"),
    ({"count": 1001}, "count"), ({"count": 2.5}, "count"), ({}, "exactly one"),
    ({"fraction": 0.1, "count": 5}, "exactly one"), ({"fraction": 0.1, "min_per_class": -1}, "min_per_class"),
])
def test_invalid_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_subset(LABELS, seed=0, **kwargs)


def test_invalid_labels():
    with pytest.raises(ValueError, match="multi-label"):
        label_subset(np.zeros((10, 3), int), fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="integer"):
        label_subset(np.linspace(0, 1, 10), fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        label_subset(np.array([0, 1, -1]), fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        label_subset(np.array([0, 1, 1]), fraction=0.5, seed=-3)
    with pytest.raises(ValueError, match="empty"):
        label_subset(np.zeros(0, int), fraction=0.5, seed=0)


def test_record_is_json_round_trippable():
    rec = SubsetRecord.draw(LABELS[:, None], fraction=0.05, seed=2)
    assert rec.n_total == 1000 and rec.n_labelled == 50 == len(rec.indices)
    # shares 35 / 12.5 / 2.5: the one item left after the floors goes to the lower class of the tied remainders
    assert rec.class_counts == {"0": 35, "1": 13, "2": 2}
    assert rec.indices == label_subset(LABELS, fraction=0.05, seed=2).tolist()
    back = SubsetRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec and back.size_key == ("fraction", 0.05)


def test_per_class_takes_exactly_k_of_every_class_nested_across_k():
    draws = {k: label_subset(LABELS, per_class=k, seed=4) for k in (1, 5, 10, 60)}
    for k, idx in draws.items():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
        # class 2 has 50 items: taken whole at k=60
        assert np.bincount(LABELS[idx], minlength=3).tolist() == [k, k, min(k, 50)]
    assert set(draws[1]) < set(draws[5]) < set(draws[10]) < set(draws[60])
    assert np.array_equal(draws[5], label_subset(LABELS, per_class=5, seed=4))  # seeded, not global state
    assert not np.array_equal(draws[5], label_subset(LABELS, per_class=5, seed=5))
    # the same per-class permutation as fraction / count draws: 0.2 gives 140 / 50 / 10 items, each >= 10
    assert set(draws[10]) <= set(label_subset(LABELS, fraction=0.2, seed=4))
    assert len(label_subset(LABELS, per_class=1000, seed=0)) == 1000  # every class whole: the split


def test_per_class_record_shows_a_small_class_taken_whole_and_old_records_load():
    rec = SubsetRecord.draw(LABELS, per_class=60, seed=1)
    assert (rec.per_class, rec.fraction, rec.count, rec.n_labelled) == (60, None, None, 170)
    assert rec.class_counts == {"0": 60, "1": 60, "2": 50} and rec.size_key == ("per_class", 60.0)
    assert (rec.stratified, rec.min_per_class) == (True, 60)  # the policy the draw applied
    assert SubsetRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    old = {k: v for k, v in SubsetRecord.draw(LABELS, count=30, seed=1).to_dict().items() if k != "per_class"}
    assert SubsetRecord.from_dict(old).per_class is None  # written before per_class existed


@pytest.mark.parametrize("kwargs, match", [
    ({"per_class": 0}, "per_class"), ({"per_class": 2.5}, "per_class"), ({"per_class": True}, "per_class"),
    ({"per_class": 5, "fraction": 0.1}, "exactly one"), ({"per_class": 5, "count": 10}, "exactly one"),
    ({"per_class": 5, "stratified": False}, "stratified"),
])
def test_per_class_invalid_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_subset(LABELS, seed=0, **kwargs)
