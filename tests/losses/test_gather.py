"""Tests for medssl/losses/gather.py: identity without a process group, and a real 2-process gloo run on CPU.

The 2-process test splits one fixed global batch between two ranks (equal halves 4+4 and unequal 3+5), runs the
gathering losses on each rank, saves plain tensors, and the parent compares them with single-process results on
the full batch (the parent has no process group, so there everything is local):

* ``gather``: rank-ordered concatenation, offsets, and backward = sum over ranks of the gathered-tensor gradients.
* ``nt_xent`` / ``info_nce``: each rank backpropagates ``(N_r * W / M) * loss_r`` -- for equal halves that is just
  ``loss_r``, which DDP would backpropagate -- so that ``sum_r (N_r / M) loss_r`` is the global loss and the gradient
  of the local rows is ``W`` times the full-batch gradient of those rows (DDP divides by ``W``).
* ``DINOLoss`` center after one training step and ``FeatureQueue`` contents equal the single-process ones.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.losses.dino import DINOLoss
from medssl.losses.gather import all_reduce_mean, gather, gather_offset, gather_with_offset, world
from medssl.losses.ntxent import info_nce, nt_xent
from medssl.losses.queue import FeatureQueue

WORLD = 2
DIM = 5
CASES = {"equal": (4, 4), "unequal": (3, 5)}
NT_XENT_T, INFO_NCE_T = 0.2, 0.3


def test_world_without_process_group() -> None:
    assert not (dist.is_available() and dist.is_initialized())
    assert world() == (0, 1)


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert gather(x) is x
    assert gather_offset(x) == 0
    y, offset = gather_with_offset(x)
    assert y is x and offset == 0
    weight = torch.randn(3, 4)
    (gather(x) * weight).sum().backward()
    assert torch.equal(x.grad, weight)
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x.detach()) and not mean.requires_grad


def _global_batch(total: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234 + total)
    names = ["x", "w0", "w1", "z1", "z2", "q", "k", "t1", "t2", "s3"]
    return {name: torch.randn(total, DIM, generator=g, dtype=torch.float64) for name in names}


def _queue_after(keys: list[torch.Tensor]) -> FeatureQueue:
    queue = FeatureQueue(size=10, dim=DIM).double()
    for k in keys:
        queue.enqueue(k)
    return queue


def _dino() -> DINOLoss:
    return DINOLoss(DIM, center_momentum=0.7).double().train()


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    try:
        assert world() == (rank, WORLD)
        for case, sizes in CASES.items():
            total, start = sum(sizes), sum(sizes[:rank])
            data = _global_batch(total)
            local = {name: v[start : start + sizes[rank]].clone().requires_grad_() for name, v in data.items()}
            scale = sizes[rank] * WORLD / total
            out: dict[str, torch.Tensor] = {}

            x = local["x"]
            gathered, offset = gather_with_offset(x)
            out["gathered"] = gathered.detach()
            out["offsets"] = torch.tensor([offset, gather_offset(x)])
            (gathered * data[f"w{rank}"]).sum().backward()  # each rank weights the gathered rows differently
            out["gather_grad"] = x.grad

            z1, z2 = local["z1"], local["z2"]
            loss = nt_xent(z1, z2, temperature=NT_XENT_T)
            (scale * loss).backward()
            out["nt_xent"], out["nt_xent_g1"], out["nt_xent_g2"] = loss.detach(), z1.grad, z2.grad

            q, k = local["q"], local["k"]
            loss = info_nce(q, k, temperature=INFO_NCE_T)
            (scale * loss).backward()
            out["info_nce"], out["info_nce_gq"], out["info_nce_gk"] = loss.detach(), q.grad, k.grad

            dino = _dino()
            dino([local["t2"], local["t1"], local["s3"]], [local["t1"], local["t2"]], epoch=0.0)
            out["center"] = dino.center

            out["queue"] = _queue_after([local["k"], local["z1"]])()  # 16 rows into 10 slots: wraps
            torch.save(out, Path(tmp) / f"{case}_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo")
def test_two_process_gloo_matches_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned workers
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)

    for case, sizes in CASES.items():
        total = sum(sizes)
        data = _global_batch(total)
        full = {name: v.clone().requires_grad_() for name, v in data.items()}
        results = [torch.load(tmp_path / f"{case}_{r}.pt", weights_only=True) for r in range(WORLD)]
        ref_nt_xent = nt_xent(full["z1"], full["z2"], temperature=NT_XENT_T)
        ref_nt_xent.backward()
        ref_info_nce = info_nce(full["q"], full["k"], temperature=INFO_NCE_T)
        ref_info_nce.backward()
        ref_dino = _dino()
        ref_dino([full["t2"], full["t1"], full["s3"]], [full["t1"], full["t2"]], epoch=0.0)
        ref_queue = _queue_after([data["k"], data["z1"]])()

        # the rank-weighted mean of the local losses is the global-batch loss (equal halves: the plain mean)
        for name, ref in [("nt_xent", ref_nt_xent), ("info_nce", ref_info_nce)]:
            combined = sum(res[name] * n / total for res, n in zip(results, sizes))
            torch.testing.assert_close(combined, ref.detach(), rtol=1e-12, atol=0, msg=f"{case} {name}")
        if sizes[0] == sizes[1]:
            torch.testing.assert_close((results[0]["nt_xent"] + results[1]["nt_xent"]) / 2, ref_nt_xent.detach())

        for rank, res in enumerate(results):
            rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
            torch.testing.assert_close(res["gathered"], data["x"], rtol=0, atol=0)
            assert res["offsets"].tolist() == [rows.start, rows.start]
            torch.testing.assert_close(res["gather_grad"], (data["w0"] + data["w1"])[rows], rtol=1e-14, atol=0)
            for got, ref_input in [
                ("nt_xent_g1", "z1"),
                ("nt_xent_g2", "z2"),
                ("info_nce_gq", "q"),
                ("info_nce_gk", "k"),
            ]:
                expected = WORLD * full[ref_input].grad[rows]
                torch.testing.assert_close(res[got], expected, rtol=1e-10, atol=1e-14, msg=f"{case} {got} {rank}")
            torch.testing.assert_close(res["center"], ref_dino.center, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(res["queue"], ref_queue, rtol=0, atol=0)
