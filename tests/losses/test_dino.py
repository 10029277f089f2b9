"""Tests for medssl/losses/dino.py: loss vs a Python-loop reference, temperature schedule, center EMA."""
from __future__ import annotations

import math

import pytest
import torch

from medssl.losses.dino import DINOLoss

OUT = 6


def _softmax(values: list[torch.Tensor]) -> list[torch.Tensor]:
    exps = [torch.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _ref_dino(
    student: list[torch.Tensor], teacher: list[torch.Tensor], center: list[float], t_s: float, t_t: float
) -> torch.Tensor:
    """Loop over (teacher crop i, student crop j != i), samples b and prototypes k, with scalar torch ops."""
    pair_losses = []
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if j == i:
                continue
            per_sample = []
            for b in range(t.shape[0]):
                p_t = _softmax([(t[b, k].detach() - center[k]) / t_t for k in range(OUT)])
                p_s = _softmax([s[b, k] / t_s for k in range(OUT)])
                per_sample.append(-sum(p_t[k] * torch.log(p_s[k]) for k in range(OUT)))
            pair_losses.append(sum(per_sample) / len(per_sample))
    return sum(pair_losses) / len(pair_losses)


def _crops(n_crops: int, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, OUT, generator=g, dtype=torch.float64) * 2).requires_grad_() for _ in range(n_crops)]


@pytest.mark.parametrize(("n_global", "n_local"), [(2, 0), (2, 3), (1, 2)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("student_temp", "teacher_temp"), [(0.1, 0.04), (0.5, 0.2)])
def test_dino_reference(n_global: int, n_local: int, batch: int, student_temp: float, teacher_temp: float) -> None:
    student = _crops(n_global + n_local, batch, seed=batch)
    teacher = _crops(n_global, batch, seed=100 + batch)
    loss_fn = DINOLoss(OUT, num_global_crops=n_global, student_temp=student_temp, teacher_temp=teacher_temp)
    loss_fn = loss_fn.double().eval()
    center = torch.randn(1, OUT, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.3
    loss_fn.center.copy_(center)
    got = loss_fn(student, teacher, epoch=0.0)
    ref = _ref_dino(student, teacher, center[0].tolist(), student_temp, teacher_temp)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # with one global crop, student crop 0 is never scored (its only partner would be itself): zero gradient
    grads = torch.autograd.grad(got, student, retain_graph=True, materialize_grads=True)
    ref_grads = torch.autograd.grad(ref, student, materialize_grads=True)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
    got.backward()
    assert all(t.grad is None for t in teacher)  # teacher outputs never receive gradient


def test_teacher_temperature_schedule() -> None:
    loss_fn = DINOLoss(OUT, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.04)
    assert loss_fn.teacher_temperature(15) == pytest.approx(0.055)
    assert loss_fn.teacher_temperature(7.5) == pytest.approx(0.04 + 0.03 * 7.5 / 30)
    assert loss_fn.teacher_temperature(30) == pytest.approx(0.07)
    assert loss_fn.teacher_temperature(123.4) == pytest.approx(0.07)
    assert DINOLoss(OUT, teacher_temp=0.06).teacher_temperature(0) == pytest.approx(0.06)  # no warm-up
    with pytest.raises(ValueError):
        loss_fn.teacher_temperature(-1)
    # the schedule is what forward uses: the reference at the warmed-up temperature
    student, teacher = _crops(3, 2, seed=1), _crops(2, 2, seed=2)
    got = loss_fn.double().eval()(student, teacher, epoch=15)
    torch.testing.assert_close(got, _ref_dino(student, teacher, [0.0] * OUT, 0.1, 0.055), rtol=1e-10, atol=0)


def test_center_ema_in_training_only() -> None:
    loss_fn = DINOLoss(OUT, center_momentum=0.8).double()
    student, teacher = _crops(4, 3, seed=3), _crops(2, 3, seed=4)
    expected = torch.zeros(OUT, dtype=torch.float64)
    for _ in range(2):
        loss_fn(student, teacher, epoch=1.0).backward()  # the in-place center update does not break autograd
        mean = [sum(float(t[b, k].detach()) for t in teacher for b in range(3)) / 6 for k in range(OUT)]
        expected = 0.8 * expected + 0.2 * torch.tensor(mean, dtype=torch.float64)
        torch.testing.assert_close(loss_fn.center, expected[None], rtol=1e-12, atol=1e-14)
    before = loss_fn.center.clone()
    loss_fn.eval()
    loss_fn(student, teacher, epoch=1.0)
    assert torch.equal(loss_fn.center, before)  # validation does not move the center
    loss_fn.update_center(teacher)  # explicit update works in any mode
    assert not torch.equal(loss_fn.center, before)
    assert set(loss_fn.state_dict()) == {"center"}


def test_identical_logits_equal_temperatures_give_entropy() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, OUT, generator=g, dtype=torch.float64)
    temperature = 0.3
    loss_fn = DINOLoss(OUT, student_temp=temperature, teacher_temp=temperature).double().eval()
    got = loss_fn([x, x, x], [x, x], epoch=0)
    entropies = []
    for b in range(4):
        exps = [math.exp(float(v) / temperature) for v in x[b]]
        probs = [e / sum(exps) for e in exps]
        entropies.append(-sum(p * math.log(p) for p in probs))
    assert float(got) == pytest.approx(sum(entropies) / 4, rel=1e-10)


def test_errors() -> None:
    loss_fn = DINOLoss(OUT)
    x = torch.randn(2, OUT)
    with pytest.raises(ValueError):
        loss_fn([x, x], [x], epoch=0)  # two global crops expected
    with pytest.raises(ValueError):
        loss_fn([x, torch.randn(3, OUT)], [x, x], epoch=0)  # batch sizes differ
    with pytest.raises(ValueError):
        loss_fn([x, torch.randn(2, OUT + 1)], [x, x], epoch=0)
    with pytest.raises(ValueError):
        DINOLoss(OUT, num_global_crops=1)([x], [x], epoch=0)  # no pair to score


def test_non_finite_teacher_output_leaves_the_centre() -> None:
    loss = DINOLoss(4)
    loss.update_center([torch.ones(2, 4), torch.ones(2, 4)])
    centre = loss.center.clone()
    loss.update_center([torch.full((2, 4), float("inf")), torch.ones(2, 4)])
    assert torch.equal(loss.center, centre)
