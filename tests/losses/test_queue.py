"""Tests for medssl/losses/queue.py against a row-by-row circular-buffer reference."""
from __future__ import annotations

import io

import pytest
import torch

from medssl.losses.ntxent import info_nce_queue
from medssl.losses.queue import FeatureQueue


def _ref_enqueue(rows: list[torch.Tensor], ptr: int, keys: torch.Tensor) -> int:
    """Write unit-normalised keys one at a time at ptr, wrapping around; returns the new pointer."""
    for key in keys:
        rows[ptr] = key / key.norm()
        ptr = (ptr + 1) % len(rows)
    return ptr


def test_initial_queue_is_deterministic_unit_vectors() -> None:
    a, b = FeatureQueue(16, 5), FeatureQueue(16, 5)
    assert a().shape == (16, 5)
    assert torch.equal(a(), b())
    torch.testing.assert_close(a().norm(dim=1), torch.ones(16))
    assert not torch.equal(a(), FeatureQueue(16, 5, seed=1)())
    assert int(a.ptr) == 0


def test_enqueue_wraps_and_keeps_newest_of_oversized_batches() -> None:
    size, dim = 7, 4
    queue = FeatureQueue(size, dim).double()
    rows = list(queue().clone())
    ptr = 0
    g = torch.Generator().manual_seed(0)
    for n in [3, 2, 5, 7, 16, 1, 9]:  # 5 wraps, 7 fills exactly, 16 and 9 exceed the queue
        keys = torch.randn(n, dim, generator=g, dtype=torch.float64)
        queue.enqueue(keys)
        ptr = _ref_enqueue(rows, ptr, keys)
        torch.testing.assert_close(queue(), torch.stack(rows), rtol=1e-14, atol=1e-15)
        assert int(queue.ptr) == ptr


def test_enqueue_without_normalisation_and_no_grad() -> None:
    queue = FeatureQueue(4, 3, normalize=False)
    keys = (torch.randn(2, 3) * 5).requires_grad_()
    queue.enqueue(keys)
    assert torch.equal(queue()[:2], keys.detach())
    assert not queue().requires_grad


def test_state_dict_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    first = FeatureQueue(6, 3)
    first.enqueue(torch.randn(4, 3, generator=g))
    first.enqueue(torch.randn(5, 3, generator=g))
    state = first.state_dict()
    assert set(state) == {"queue", "ptr"}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    second = FeatureQueue(6, 3, seed=99)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(second(), first()) and int(second.ptr) == int(first.ptr) == 3
    keys = torch.randn(4, 3, generator=g)
    first.enqueue(keys)
    second.enqueue(keys)
    assert torch.equal(second(), first()) and int(second.ptr) == int(first.ptr)


def test_enqueue_before_backward_needs_a_clone() -> None:
    queue = FeatureQueue(8, 3)
    q, k = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3)
    loss = info_nce_queue(q, k, queue())
    queue.enqueue(k)  # modifies the buffer the loss saved for backward: autograd refuses instead of using new keys
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    loss = info_nce_queue(q, k, queue().clone())
    queue.enqueue(k)
    loss.backward()
    assert q.grad is not None


def test_non_finite_keys_are_not_enqueued() -> None:
    queue = FeatureQueue(6, 3)
    before = queue.queue.clone()
    queue.enqueue(torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 0.0]]))
    assert torch.equal(queue.queue, before) and int(queue.ptr) == 0
