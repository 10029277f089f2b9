"""Tests for medssl/losses/ntxent.py against slow, obviously-correct Python-loop references (values and gradients).

The references loop over anchors and candidates with scalar torch ops, so autograd gives reference gradients too.
Cross-rank behaviour (gathered negatives) is tested in test_gather.py.
"""
from __future__ import annotations

import pytest
import torch

from medssl.losses.ntxent import info_nce, info_nce_queue, nt_xent
from medssl.losses.queue import FeatureQueue


def _unit_rows(x: torch.Tensor) -> list[torch.Tensor]:
    return [row / row.norm() for row in x]


def _ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    n = z1.shape[0]
    rows = _unit_rows(z1) + _unit_rows(z2)  # anchor a's positive is row (a + n) mod 2n
    total = torch.zeros((), dtype=z1.dtype)
    for a in range(2 * n):
        positive = torch.exp(torch.dot(rows[a], rows[(a + n) % (2 * n)]) / temperature)
        denominator = sum(torch.exp(torch.dot(rows[a], rows[c]) / temperature) for c in range(2 * n) if c != a)
        total = total - torch.log(positive / denominator)
    return total / (2 * n)


def _ref_info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    qs, ks = _unit_rows(q), _unit_rows(k)
    total = torch.zeros((), dtype=q.dtype)
    for i, qi in enumerate(qs):
        positive = torch.exp(torch.dot(qi, ks[i]) / temperature)
        denominator = sum(torch.exp(torch.dot(qi, kj) / temperature) for kj in ks)
        total = total - torch.log(positive / denominator)
    return total / len(qs)


def _ref_info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    qs, ks = _unit_rows(q), _unit_rows(k.detach())
    total = torch.zeros((), dtype=q.dtype)
    for qi, ki in zip(qs, ks):
        positive = torch.exp(torch.dot(qi, ki) / temperature)
        negatives = sum(torch.exp(torch.dot(qi, neg) / temperature) for neg in queue)
        total = total - torch.log(positive / (positive + negatives))
    return total / len(qs)


def _inputs(n: int, d: int, seed: int, count: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d, generator=g, dtype=torch.float64) * 3).requires_grad_() for _ in range(count)]


def _assert_same_value_and_grads(got: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    assert got.ndim == 0
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(got, inputs)
    ref_grads = torch.autograd.grad(ref, inputs)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5])
def test_nt_xent_reference(n: int, temperature: float) -> None:
    z1, z2 = _inputs(n, 7, seed=n)
    got = nt_xent(z1, z2, temperature=temperature)
    _assert_same_value_and_grads(got, _ref_nt_xent(z1, z2, temperature), [z1, z2])
    # without a process group gathering changes nothing
    torch.testing.assert_close(nt_xent(z1, z2, temperature, gather_negatives=False), got, rtol=0, atol=0)


def test_nt_xent_single_item_is_zero() -> None:
    # N = 1: each anchor's only candidate is its positive, so the loss is log(1) = 0
    z1, z2 = _inputs(1, 4, seed=3)
    assert float(nt_xent(z1, z2).detach()) == pytest.approx(0.0, abs=1e-12)


def test_nt_xent_scale_invariant_and_identical_views() -> None:
    z1, z2 = _inputs(4, 5, seed=4)
    torch.testing.assert_close(nt_xent(z1 * 7.0, z2 * 0.01), nt_xent(z1, z2))
    # identical views separate better than unrelated ones
    assert nt_xent(z1, z1) < nt_xent(z1, z2)


@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_reference(n: int, temperature: float) -> None:
    q, k = _inputs(n, 6, seed=10 + n)
    got = info_nce(q, k, temperature=temperature)
    # the gradient flows into k as well: the caller decides whether k is detached
    _assert_same_value_and_grads(got, _ref_info_nce(q, k, temperature), [q, k])


def test_info_nce_does_not_scale_by_2t() -> None:
    q, k = _inputs(4, 6, seed=20)
    torch.testing.assert_close(info_nce(q, k, 0.3), _ref_info_nce(q, k, 0.3), rtol=1e-10, atol=0)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 0.5])
def test_info_nce_queue_reference(n: int, temperature: float) -> None:
    q, k = _inputs(n, 5, seed=30 + n)
    queue = FeatureQueue(size=9, dim=5, seed=n).double()()
    got = info_nce_queue(q, k, queue, temperature=temperature)
    ref = _ref_info_nce_queue(q, k, queue, temperature)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    (grad_q,) = torch.autograd.grad(ref, [q])
    got.backward()
    torch.testing.assert_close(q.grad, grad_q, rtol=1e-9, atol=1e-12)
    assert k.grad is None  # keys are detached inside


def test_errors() -> None:
    a = torch.randn(3, 4)
    with pytest.raises(ValueError):
        nt_xent(a, torch.randn(2, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4, 2), torch.randn(3, 4, 2))
    with pytest.raises(ValueError):
        nt_xent(a, a, temperature=0.0)
    with pytest.raises(ValueError):
        info_nce(torch.randn(0, 4), torch.randn(0, 4))
    with pytest.raises(ValueError):
        info_nce_queue(a, a, torch.randn(5, 3))
