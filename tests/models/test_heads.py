"""Projection / prediction heads and the DINO head."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.models.heads import DINOHead, MLPHead


def test_mlp_head_layers() -> None:
    head = MLPHead(8, 16, 4, num_layers=3, last_bn=True)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 16), (16, 4)]
    assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
    assert head(torch.randn(5, 8)).shape == (5, 4)
    assert len(MLPHead(8, 16, 4, num_layers=1)) == 1
    with pytest.raises(ValueError):
        MLPHead(8, 16, 4, num_layers=0)


def test_dino_head_unit_norm_last_layer() -> None:
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=32, hidden_dim=16, bottleneck_dim=6)
    x = torch.randn(4, 8)
    out = head(x)
    assert out.shape == (4, 32)
    # |logit| <= ||normalised bottleneck|| * ||unit row|| = 1 while the gain is fixed at 1
    assert out.abs().max() <= 1 + 1e-5
    assert not head.last_g.requires_grad
    with torch.no_grad():
        head.last_v.mul_(7.0)  # rescaling the raw rows changes nothing: W = V / ||V||
    assert torch.allclose(head(x), out, atol=1e-6)
    assert DINOHead(8, 32, 16, 6, norm_last_layer=False).last_g.requires_grad
