"""Tests for medssl/losses/byol.py against explicit formulas, including the stop-gradient on the target."""
from __future__ import annotations

import math

import pytest
import torch

from medssl.losses.byol import negative_cosine, normalized_mse


def _cos(p: list[float], z: list[float]) -> float:
    dot = sum(a * b for a, b in zip(p, z))
    return dot / (math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in z)))


def _pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    z = (torch.randn(n, 6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    return p, z


@pytest.mark.parametrize("n", [1, 2, 7])
def test_normalized_mse_reference(n: int) -> None:
    p, z = _pair(n, seed=n)
    got = normalized_mse(p, z).detach()
    cosines = [_cos(p[i].tolist(), z[i].tolist()) for i in range(n)]
    assert float(got) == pytest.approx(sum(2 - 2 * c for c in cosines) / n, rel=1e-12)
    # the same as the mean squared distance of the unit vectors
    pd, zd = p.detach(), z.detach()
    unit_mse = sum(float(((pd[i] / pd[i].norm() - zd[i] / zd[i].norm()) ** 2).sum()) for i in range(n)) / n
    assert float(got) == pytest.approx(unit_mse, rel=1e-10)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_negative_cosine_reference(n: int) -> None:
    p, z = _pair(n, seed=10 + n)
    got = negative_cosine(p, z).detach()
    assert float(got) == pytest.approx(-sum(_cos(p[i].tolist(), z[i].tolist()) for i in range(n)) / n, rel=1e-12)


@pytest.mark.parametrize("loss", [normalized_mse, negative_cosine])
def test_stop_gradient_and_gradient_wrt_prediction(loss) -> None:
    p, z = _pair(4, seed=3)
    # reference gradient: the formula with z a constant
    zc = z.detach()
    cos = (p * zc).sum(1) / (p.norm(dim=1) * zc.norm(dim=1))
    ref = (2 - 2 * cos).mean() if loss is normalized_mse else -cos.mean()
    (ref_grad,) = torch.autograd.grad(ref, [p])
    loss(p, z).backward()
    assert z.grad is None
    torch.testing.assert_close(p.grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_bounds_and_errors() -> None:
    p = _pair(3, seed=5)[0].detach()
    assert float(normalized_mse(p, p * 3)) == pytest.approx(0.0, abs=1e-12)
    assert float(normalized_mse(p, -p)) == pytest.approx(4.0, rel=1e-12)
    assert float(negative_cosine(p, p)) == pytest.approx(-1.0, rel=1e-12)
    with pytest.raises(ValueError):
        normalized_mse(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        negative_cosine(torch.randn(0, 4), torch.randn(0, 4))
