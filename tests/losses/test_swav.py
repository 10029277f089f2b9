"""Tests for medssl/losses/swav.py and medssl/models/prototypes.py: Sinkhorn-Knopp against a naive numpy loop (codes
and marginals), the queue rows (``shared_scores``) counted once, a 2-process gloo run equal to one process with the
global batch, the swapped-prediction loss against a Python loop (values and gradients), prototype normalisation."""
from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from medssl.models.prototypes import Prototypes


def _ref_sinkhorn(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """The paper's algorithm, element by element: Q (K x B), total mass 1, then rows to 1/K and columns to 1/B."""
    b, k = scores.shape
    q = [[math.exp(scores[j][i] / epsilon) for j in range(b)] for i in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for i in range(k):
            row_sum = sum(q[i])
            q[i] = [v / row_sum / k for v in q[i]]
        for j in range(b):
            col_sum = sum(q[i][j] for i in range(k))
            for i in range(k):
                q[i][j] = q[i][j] / col_sum / b
    return np.array([[q[i][j] * b for i in range(k)] for j in range(b)])  # (B, K), sample rows sum to 1


def _scores(b: int, k: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(b, 8, generator=g, dtype=dtype), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, 8, generator=g, dtype=dtype), dim=1)
    return z @ c.T  # cosines, as SwAV's scores


@pytest.mark.parametrize("b, k, epsilon, iterations", [(6, 4, 0.05, 3), (5, 7, 0.1, 1), (4, 3, 0.3, 10)])
def test_sinkhorn_matches_numpy_loop(b, k, epsilon, iterations) -> None:
    scores = _scores(b, k)
    got = sinkhorn_knopp(scores, epsilon, iterations)
    ref = _ref_sinkhorn(scores.numpy(), epsilon, iterations)
    assert got.shape == (b, k) and got.dtype == torch.float32 and not got.requires_grad
    np.testing.assert_allclose(got.numpy(), ref, rtol=2e-4, atol=1e-6)


def test_sinkhorn_marginals() -> None:
    scores = _scores(12, 4, seed=1)
    codes = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))  # every sample: mass 1 (1/B before the * B)
    converged = sinkhorn_knopp(scores, 0.05, 500)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(12))
    # equal partition: every prototype gets B / K of the batch (1/K before the * B)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((4,), 3.0), rtol=1e-3, atol=1e-3)
    # the codes are much closer to an equal partition than a plain softmax of the same scores
    softmax = torch.softmax(scores.float() / 0.05, dim=1).sum(dim=0)
    assert (codes.sum(dim=0) - 3).abs().max() < (softmax - 3).abs().max()


def test_sinkhorn_is_shift_invariant_and_safe_for_large_scores() -> None:
    scores = _scores(6, 5, seed=2)
    torch.testing.assert_close(sinkhorn_knopp(scores + 40.0), sinkhorn_knopp(scores))  # exp(800) without the shift
    assert torch.isfinite(sinkhorn_knopp(scores * 100)).all()  # underflowing rows get zero codes, not NaN
    extreme = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]])  # cosines at the ends of their range
    torch.testing.assert_close(sinkhorn_knopp(extreme).sum(dim=1), torch.ones(3))


def test_shared_rows_equal_concatenation() -> None:
    scores, queue = _scores(5, 6, seed=3), _scores(7, 6, seed=4)
    together = sinkhorn_knopp(torch.cat([queue, scores]), 0.05, 3)
    torch.testing.assert_close(sinkhorn_knopp(scores, 0.05, 3, shared_scores=queue), together[7:])


def test_sinkhorn_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scores"):
        sinkhorn_knopp(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="shared_scores"):
        sinkhorn_knopp(torch.zeros(2, 3), shared_scores=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(torch.zeros(2, 3), epsilon=0)


def _ref_swapped(scores, codes, temperature):
    total = 0.0
    for i, q in enumerate(codes):
        sub = 0.0
        others = [v for v in range(len(scores)) if v != i]
        for v in others:
            for b in range(q.shape[0]):
                row = scores[v][b] / temperature
                log_norm = torch.log(sum(torch.exp(x) for x in row))
                sub = sub - sum(q[b, j] * (row[j] - log_norm) for j in range(q.shape[1])) / q.shape[0]
        total = total + sub / len(others)
    return total / len(codes)


@pytest.mark.parametrize("crops, global_crops", [(2, 2), (4, 2), (3, 1)])
def test_swapped_loss_matches_loop(crops, global_crops) -> None:
    g = torch.Generator().manual_seed(crops)
    scores = [torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_() for _ in range(crops)]
    codes = [torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=1) for _ in range(global_crops)]
    got = swapped_prediction_loss(scores, codes, 0.1)
    ref = _ref_swapped(scores, codes, 0.1)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # with one global crop, crop 0 only provides the code: no gradient reaches its scores in either
    grads = torch.autograd.grad(got, scores, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, scores, allow_unused=True)
    for v, (a, b) in enumerate(zip(grads, ref_grads)):
        if crops == 3 and global_crops == 1 and v == 0:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_swapped_loss_bad_arguments() -> None:
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="crops"):
        swapped_prediction_loss([s], [s])
    with pytest.raises(ValueError, match="one shape"):
        swapped_prediction_loss([s, torch.zeros(2, 4)], [s])
    with pytest.raises(ValueError, match="temperature"):
        swapped_prediction_loss([s, s], [s], temperature=0)


def test_prototypes_are_unit_norm() -> None:
    torch.manual_seed(0)
    layer = Prototypes(6, 10)
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(10))
    with torch.no_grad():
        layer.weight.mul_(torch.arange(1, 11, dtype=torch.float32)[:, None])
    z = torch.nn.functional.normalize(torch.randn(3, 6), dim=1)
    scores = layer(z)
    assert scores.abs().max() <= 1 + 1e-6  # cosines even before the in-place renormalisation
    layer.normalize_()
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(layer(z), scores)
    with pytest.raises(ValueError, match="embeddings"):
        layer(torch.zeros(3, 5))


# --- 2 processes ----------------------------------------------------------------------------------------------------
SIZES = (3, 5)  # unequal local batches


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        scores, queue = _scores(sum(SIZES), 4, seed=6), _scores(6, 4, seed=7)
        start = sum(SIZES[:rank])
        local = scores[start : start + SIZES[rank]]
        torch.save({"plain": sinkhorn_knopp(local), "queue": sinkhorn_knopp(local, shared_scores=queue)},
                   f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_codes_equal_single_process_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    scores, queue = _scores(sum(SIZES), 4, seed=6), _scores(6, 4, seed=7)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat([r["plain"] for r in ranks]), sinkhorn_knopp(scores))
    torch.testing.assert_close(torch.cat([r["queue"] for r in ranks]), sinkhorn_knopp(scores, shared_scores=queue))
