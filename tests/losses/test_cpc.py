"""Tests for medssl/losses/cpc.py against a slow Python-loop reference (values and gradients, 2D and 3D grids), the
argument checks, and a 2-process gloo run where gathered negatives make each rank score against the global batch."""
from __future__ import annotations

import datetime
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.losses.cpc import cpc_info_nce, cpc_logits


def _ref_cpc(predictions, features, offsets, temperature, normalize):
    """Loop over offsets, images and grid positions; every patch of every image is a candidate."""
    batch, _, *grid = features.shape
    positions = list(itertools.product(*(range(g) for g in grid)))

    def vec(t, b, pos):
        v = t[(b, slice(None), *pos)]
        return v / v.norm() if normalize else v

    candidates = [(b, pos) for b in range(batch) for pos in positions]
    per_offset = []
    for k, pred in zip(offsets, predictions):
        terms = []
        for b in range(batch):
            for pos in positions:
                if pos[0] + k >= grid[0]:
                    continue
                q = vec(pred, b, pos)
                target = (b, (pos[0] + k, *pos[1:]))
                scores = {c: torch.dot(q, vec(features, *c)) / temperature for c in candidates}
                log_denominator = torch.log(sum(torch.exp(s) for s in scores.values()))
                terms.append(log_denominator - scores[target])
        per_offset.append(sum(terms) / len(terms))
    return sum(per_offset) / len(per_offset)


def _inputs(shape, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_() for _ in range(count)]


@pytest.mark.parametrize("shape, offsets, temperature, normalize", [
    ((2, 3, 4, 3), [1, 2], 1.0, False),      # 2D grid 4 x 3, CPC's dot product
    ((2, 3, 5, 2), [2, 3, 4], 0.5, True),    # cosine scores
    ((2, 2, 3, 2, 2), [1, 2], 0.7, False),   # 3D grid
])
def test_matches_loop_reference_values_and_gradients(shape, offsets, temperature, normalize) -> None:
    features, *predictions = _inputs(shape, 1 + len(offsets))
    got = cpc_info_nce(predictions, features, offsets, temperature, normalize)
    ref = _ref_cpc(predictions, features, offsets, temperature, normalize)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    inputs = [features, *predictions]
    for g, r in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_logits_shapes_and_labels() -> None:
    features, p1, p2 = _inputs((3, 4, 5, 2), 3)
    pairs = cpc_logits([p1, p2], features, [2, 4])
    assert [tuple(logits.shape) for logits, _ in pairs] == [(3 * 3 * 2, 30), (3 * 1 * 2, 30)]
    # offset 4 on 5 rows: only row 0 predicts, its targets are row 4 of the same image and column
    assert pairs[1][1].tolist() == [8, 9, 18, 19, 28, 29]


def test_perfect_predictions_give_a_low_loss() -> None:
    g = torch.Generator().manual_seed(3)
    features = torch.nn.functional.normalize(torch.randn(2, 16, 4, 4, generator=g), dim=1) * 10
    shifted = torch.roll(features, shifts=-1, dims=2)  # row i holds the feature of row i + 1
    assert cpc_info_nce([shifted], features, [1]).item() < 1e-3
    assert cpc_info_nce([torch.zeros_like(features)], features, [1]).item() == pytest.approx(math.log(32))


def test_bad_arguments() -> None:
    f = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="offsets"):
        cpc_info_nce([f], f, [4])
    with pytest.raises(ValueError, match="one prediction tensor per offset"):
        cpc_info_nce([f], f, [1, 2])
    with pytest.raises(ValueError, match="temperature"):
        cpc_info_nce([f], f, [1], temperature=0)
    with pytest.raises(ValueError, match="shape"):
        cpc_info_nce([f[:, :2]], f, [1])


# --- 2 processes ----------------------------------------------------------------------------------------------------
def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        features, pred = _inputs((4, 3, 4, 3), 2, seed=5)
        local_f = features.detach()[2 * rank : 2 * rank + 2].clone().requires_grad_()
        local_p = pred.detach()[2 * rank : 2 * rank + 2].clone().requires_grad_()
        loss = cpc_info_nce([local_p], local_f, [1], 0.5, True)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad_f": local_f.grad, "grad_p": local_p.grad}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_negatives_equal_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    features, pred = _inputs((4, 3, 4, 3), 2, seed=5)
    full = cpc_info_nce([pred], features, [1], 0.5, True)
    full.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach())
    # each rank's gradient is 2x the full-batch gradient of its rows (DDP averages over the 2 ranks)
    torch.testing.assert_close(torch.cat([r["grad_f"] for r in ranks]) / 2, features.grad)
    torch.testing.assert_close(torch.cat([r["grad_p"] for r in ranks]) / 2, pred.grad)
