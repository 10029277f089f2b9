"""LARS against a naive per-parameter reference; the trust ratio's scaling; OptimConfig / build_optimizer dispatch."""
from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from torch import nn

from medssl.training.lars import LARS
from medssl.training.optim import OptimConfig, build_optimizer


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def lars_reference(params: list[list[float]], grads: list[list[list[float]] | None], groups: list[dict],
                   bufs: list[list[float]]) -> None:
    """One step on flat Python lists, element by element (see medssl.training.lars for the formula)."""
    for i, (p, group) in enumerate(zip(params, groups)):
        g = grads[i]
        if g is None:
            continue
        d = [gj + group["weight_decay"] * pj for gj, pj in zip(g, p)]
        if group["lars_adaptation"]:
            p_norm, d_norm = norm(p), norm(d)
            trust = group["eta"] * p_norm / (d_norm + 1e-8) if p_norm > 0 and d_norm > 0 else 1.0
            d = [trust * dj for dj in d]
        bufs[i] = [group["momentum"] * vj + dj for vj, dj in zip(bufs[i], d)]
        params[i] = [pj - group["lr"] * vj for pj, vj in zip(p, bufs[i])]


def test_lars_matches_reference_over_several_steps():
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (3,), (2, 2), (6,)]
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    tensors[1].zero_()  # ||p|| = 0: trust ratio 1
    params = [nn.Parameter(t.clone()) for t in tensors]
    opt = LARS([{"params": params[:2], "weight_decay": 0.1},
                {"params": [params[2]], "lars_adaptation": False, "weight_decay": 0.0},  # a bias
                {"params": [params[3]], "lars_adaptation": False, "weight_decay": 0.05, "momentum": 0.5},
                {"params": [params[4]], "weight_decay": 0.0}],  # its gradient is zero: ||d|| = 0
               lr=0.4, momentum=0.9, trust_coefficient=0.02)
    spec = [{"weight_decay": 0.1, "lars_adaptation": True, "momentum": 0.9}] * 2 + [
        {"weight_decay": 0.0, "lars_adaptation": False, "momentum": 0.9},
        {"weight_decay": 0.05, "lars_adaptation": False, "momentum": 0.5},
        {"weight_decay": 0.0, "lars_adaptation": True, "momentum": 0.9}]
    ref = [t.flatten().tolist() for t in tensors]
    bufs = [[0.0] * t.numel() for t in tensors]
    for step in range(6):
        lr = 0.4 * (1 - step / 6)  # a changing learning rate (applied outside the momentum buffer)
        for group in opt.param_groups:
            group["lr"] = lr
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        grads[4].zero_()
        for p, g in zip(params, grads):
            p.grad = g.clone()
        if step == 2:
            params[0].grad = None  # a parameter without gradient this step is left alone (buffer included)
        opt.step()
        flat = [None if p.grad is None else g.flatten().tolist() for p, g in zip(params, grads)]
        lars_reference(ref, flat, [{**s, "lr": lr, "eta": 0.02} for s in spec], bufs)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(r, dtype=torch.float64),
                                       rtol=1e-12, atol=1e-12)
    assert torch.equal(params[4].detach(), tensors[4])  # zero gradient, no decay, zero momentum: unchanged
    assert params[1].abs().sum() > 0  # a zero-initialised weight moves (trust ratio 1, not 0)


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_trust_ratio_makes_the_step_proportional_to_the_weight_norm(scale):
    gen = torch.Generator().manual_seed(1)
    w = nn.Parameter(scale * torch.randn(8, 8, generator=gen, dtype=torch.float64))
    grad = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    steps = []
    for grad_scale in (1.0, 1000.0):  # the gradient's size does not matter, only its direction
        p = nn.Parameter(w.detach().clone())
        p.grad = grad_scale * grad
        before = p.detach().clone()
        LARS([p], lr=0.5, momentum=0.0, trust_coefficient=0.01).step()
        steps.append(torch.linalg.vector_norm(p.detach() - before))
    expected = 0.5 * 0.01 * torch.linalg.vector_norm(w.detach())
    torch.testing.assert_close(steps[0], expected)
    torch.testing.assert_close(steps[1], expected)


def test_lars_rejects_bad_settings_and_closure_returns_loss():
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError):
        LARS([p], lr=0.0)
    with pytest.raises(ValueError):
        LARS([p], lr=0.1, momentum=1.0)
    opt = LARS([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def test_build_optimizer_dispatches_by_name():
    adamw, _ = build_optimizer(model(), OptimConfig(lr=0.1, warmup=0), total_steps=10)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["betas"] == (0.9, 0.95)

    cfg = OptimConfig(name="lars", lr=0.3, weight_decay=1e-6, momentum=0.8, trust_coefficient=0.002, warmup=0.5)
    lars, sched = build_optimizer(model(), cfg, total_steps=4)
    assert isinstance(lars, LARS)
    decay, no_decay = lars.param_groups
    assert decay["lars_adaptation"] and decay["weight_decay"] == 1e-6 and len(decay["params"]) == 2
    assert not no_decay["lars_adaptation"] and no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4
    assert decay["momentum"] == 0.8 and decay["trust_coefficient"] == 0.002
    assert decay["lr"] == pytest.approx(0.3 / 3)  # the same warmup + cosine schedule
    lars.step()
    sched.step()
    assert decay["lr"] == pytest.approx(0.3 * 2 / 3)

    sgd, _ = build_optimizer(model(), OptimConfig(name="sgd", lr=0.1, momentum=0.7), total_steps=10)
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["momentum"] == 0.7 and not sgd.param_groups[0]["nesterov"]
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.05, 0.0]


def test_optim_config_is_backward_compatible_and_validated():
    old = OptimConfig(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), warmup=0.1, min_lr_ratio=0.01)
    assert old.name == "adamw" and OptimConfig(**asdict(old)) == old
    with pytest.raises(ValueError, match="one of"):
        OptimConfig(name="adam")
    with pytest.raises(ValueError):
        OptimConfig(name="lars", momentum=1.5)
    with pytest.raises(ValueError):
        OptimConfig(name="lars", trust_coefficient=0.0)


def test_lars_trains_a_small_regression(one_thread):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    opt, sched = build_optimizer(net, OptimConfig(name="lars", lr=0.1, weight_decay=0.0, trust_coefficient=0.02,
                                                  warmup=0), total_steps=200)
    first = None
    for _ in range(200):
        loss = nn.functional.mse_loss(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < first / 100, (first, loss.item())
