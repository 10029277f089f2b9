"""Heads of the joint-embedding methods: MLP projectors / predictors and the DINO head.

A method is an encoder plus one or two of these heads; the heads are discarded after pretraining (only the
encoder is exported). The shapes follow the papers' recipes (in_dim -> hidden -> out):

==========  ===========================================  ======================================
method      projector                                    predictor
==========  ===========================================  ======================================
SimCLR      2 layers, BN, 2048 -> 128                    --
MoCo v3     3 layers, BN, last BN (no affine), 256       2 layers, 4096 -> 256
BYOL        2 layers, BN, 4096 -> 256                    2 layers, 4096 -> 256
SimSiam     3 layers, BN, last BN (no affine), 2048      2 layers, bottleneck 512 -> 2048
DINO        :class:`DINOHead` 3 layers GELU, bottleneck 256, weight-normalised last layer to K prototypes
==========  ===========================================  ======================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "MLPHead"]


class MLPHead(nn.Sequential):
    """``num_layers`` linear layers; hidden layers are Linear -> BatchNorm1d -> ReLU.

    Args:
        in_dim, hidden_dim, out_dim: widths.
        num_layers: linear layers (>= 1; 1 is a plain linear map).
        batch_norm: BatchNorm1d after each hidden linear layer (biases dropped where a BN follows).
        last_bn: a BatchNorm1d without affine parameters after the output layer (MoCo v3 / SimSiam projectors).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
                 last_bn: bool = False):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


class DINOHead(nn.Module):
    """DINO projection head: MLP (GELU) to a ``bottleneck_dim`` embedding, L2 normalisation, then a linear layer
    with unit-norm rows onto ``out_dim`` prototypes (Caron et al. 2021).

    The last layer is weight-normalised explicitly, ``W = g * V / ||V||`` row-wise; with ``norm_last_layer`` the
    gain ``g`` is fixed to 1 (DINO's default, which stabilises training), otherwise it is learned.

    Args:
        in_dim: encoder feature width.
        out_dim: number of prototypes ``K`` (65536 in the paper; a few thousand suffice for small data).
        hidden_dim, bottleneck_dim, num_layers: the MLP.
        batch_norm: BatchNorm1d in the MLP (off for ViTs in the paper).
        norm_last_layer: fix the last layer's row norms to 1.
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, batch_norm: bool = False, norm_last_layer: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_v, std=0.02)
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)
        self.in_dim, self.out_dim, self.norm_last_layer = in_dim, out_dim, norm_last_layer

    @property
    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters DINO freezes during the first epoch(s)."""
        return [self.last_v, self.last_g]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        weight = self.last_g * F.normalize(self.last_v, dim=1)
        return F.linear(x, weight)
