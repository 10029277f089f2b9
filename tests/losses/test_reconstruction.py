"""Tests for medssl/losses/reconstruction.py against slow, obviously-correct Python-loop references."""
from __future__ import annotations

import itertools

import pytest
import torch

from medssl.losses.reconstruction import masked_patch_mse, masked_voxel_l1, normalize_patches


def _ref_normalize(patch: list[float], eps: float = 1e-6) -> list[float]:
    n = len(patch)
    mean = sum(patch) / n
    var = sum((v - mean) ** 2 for v in patch) / (n - 1)  # unbiased, as in MAE
    return [(v - mean) / (var + eps) ** 0.5 for v in patch]


def _ref_patch_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> float:
    total, count = 0.0, 0.0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            w = float(mask[b, i])
            if w == 0:
                continue
            t = target[b, i].tolist()
            if norm_pix:
                t = _ref_normalize(t)
            p = pred[b, i].tolist()
            total += w * sum((pv - tv) ** 2 for pv, tv in zip(p, t)) / len(p)
            count += w
    return total / count


def _ref_voxel_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b, c in itertools.product(range(pred.shape[0]), range(pred.shape[1])):
        for idx in itertools.product(*[range(s) for s in pred.shape[2:]]):
            if bool(mask[(b, 0, *idx)]):
                total += abs(float(pred[(b, c, *idx)]) - float(target[(b, c, *idx)]))
                count += 1
    return total / count


def test_normalize_patches_reference() -> None:
    t = torch.randn(2, 5, 12, dtype=torch.float64) * 3 + 1
    out = normalize_patches(t)
    for b, i in itertools.product(range(2), range(5)):
        assert out[b, i].tolist() == pytest.approx(_ref_normalize(t[b, i].tolist()), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masked_patch_mse_reference(norm_pix: bool, kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 10, 8, generator=g, dtype=torch.float64)
    target = torch.randn(3, 10, 8, generator=g, dtype=torch.float64) * 2 + 0.5
    mask = torch.rand(3, 10, generator=g) < 0.6
    if kind == "float":
        mask = mask.to(torch.float64) * torch.rand(3, 10, generator=g, dtype=torch.float64)
    got = masked_patch_mse(pred, target, mask, norm_pix=norm_pix)
    assert got.ndim == 0
    assert float(got) == pytest.approx(_ref_patch_mse(pred, target, mask, norm_pix), rel=1e-10)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_patch_mse_ignores_visible(norm_pix: bool) -> None:
    pred, target = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    base = masked_patch_mse(pred, target, mask, norm_pix)
    pred2, target2 = pred.clone(), target.clone()
    pred2[~mask] = float("nan")
    target2[~mask] = 1e6
    assert torch.equal(masked_patch_mse(pred2, target2, mask, norm_pix), base)
    pred3 = pred.clone()
    pred3[mask] += 1.0
    assert masked_patch_mse(pred3, target, mask, norm_pix) != base


def test_masked_voxel_l1_reference() -> None:
    g = torch.Generator().manual_seed(1)
    for shape in [(2, 3, 4, 6), (2, 2, 3, 4, 5)]:
        pred = torch.randn(shape, generator=g, dtype=torch.float64)
        target = torch.randn(shape, generator=g, dtype=torch.float64)
        mask = torch.rand((shape[0], 1, *shape[2:]), generator=g) < 0.4
        got = masked_voxel_l1(pred, target, mask)
        assert float(got) == pytest.approx(_ref_voxel_l1(pred, target, mask), rel=1e-10)


def test_masked_voxel_l1_ignores_unmasked() -> None:
    pred, target = torch.randn(2, 2, 4, 4, 4), torch.randn(2, 2, 4, 4, 4)
    mask = torch.rand(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5
    base = masked_voxel_l1(pred, target, mask)
    full = mask.expand_as(pred)
    pred2, target2 = pred.clone(), target.clone()
    pred2[~full] = float("inf")
    target2[~full] = -5.0
    assert torch.equal(masked_voxel_l1(pred2, target2, mask), base)


def test_errors() -> None:
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="selects nothing"):
        masked_patch_mse(x, x, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        masked_patch_mse(x, torch.zeros(2, 4, 2), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        masked_patch_mse(x, x, torch.ones(2, 3, dtype=torch.bool))
    v = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="selects nothing"):
        masked_voxel_l1(v, v, torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        masked_voxel_l1(v, torch.zeros(1, 2, 4, 5), torch.ones(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        masked_voxel_l1(v, v, torch.ones(1, 1, 4, 5, dtype=torch.bool))
