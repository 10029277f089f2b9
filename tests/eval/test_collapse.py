"""Collapse statistics: spread-out vs collapsed embeddings, against direct formulas."""
from __future__ import annotations

import pytest
import torch

from medssl.eval.collapse import effective_rank, embedding_std


def test_embedding_std_spread_vs_collapsed() -> None:
    torch.manual_seed(0)
    spread = torch.randn(4096, 64)
    assert embedding_std(spread).item() == pytest.approx(1.0, abs=0.05)
    collapsed = torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64)
    assert embedding_std(collapsed).item() < 0.01
    with pytest.raises(ValueError):
        embedding_std(torch.randn(1, 8))


def test_effective_rank_matches_formula() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 8)
    s = torch.linalg.svdvals(z)
    p = s / s.sum()
    assert effective_rank(z).item() == pytest.approx(torch.exp(-(p * p.log()).sum()).item(), rel=1e-4)
    line = torch.randn(32, 1) * torch.randn(1, 8)
    assert effective_rank(line).item() == pytest.approx(1.0, abs=1e-3)
    iso = torch.linalg.qr(torch.randn(64, 16))[0]  # orthonormal columns: all singular values equal
    assert effective_rank(iso).item() == pytest.approx(16.0, rel=1e-3)
