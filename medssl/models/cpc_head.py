"""Context network and prediction heads of contrastive predictive coding (:mod:`medssl.ssl.cpc`), 2D and 3D.

The input is the grid of patch features ``z`` (B, D, *grid). The **context network** is a stack of residual
convolutions that are *causal along grid axis 0* (the scan order: rows, top to bottom): every convolution pads
``kernel_size - 1`` cells above and none below, and ``kernel_size // 2`` on both sides of the other axes. The
context ``c[:, :, i, ...]`` therefore depends only on rows ``<= i`` of the grid, over a receptive field that grows
by ``kernel_size - 1`` cells per convolution (upwards and sideways): with two residual blocks of kernel 3 it spans
8 rows above and the full width of a 5 x 5 grid. This is the PixelCNN-style masked convolution of CPC v2 (Hénaff et
al. 2020) rather than CPC v1's GRU over the scan order: it sees whole rows, parallelises over the grid, and is the
same code for 2D and 3D grids.

For each offset ``k`` a **linear predictor** ``W_k`` (a 1 x 1 convolution) maps the context to a prediction of the
feature of the patch ``k`` rows below; :func:`medssl.losses.cpc.cpc_info_nce` scores it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CPCHead", "CausalContext"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class _CausalConv(nn.Module):
    """Convolution whose output at row ``i`` (grid axis 0) sees rows ``i - kernel_size + 1 .. i`` only."""

    def __init__(self, channels: int, spatial_dims: int, kernel_size: int):
        super().__init__()
        self.conv = _CONV[spatial_dims](channels, channels, kernel_size)
        side = kernel_size // 2
        # F.pad lists (before, after) pairs from the last axis backwards; the last pair is grid axis 0
        self.padding = [side, kernel_size - 1 - side] * (spatial_dims - 1) + [kernel_size - 1, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class CausalContext(nn.Module):
    """Context network: 1 x 1 projection to ``context_dim``, then ``num_blocks`` residual blocks of two causal
    convolutions (ReLU before each, as in a pre-activation ResNet).

    Args:
        in_dim: feature width ``D`` of the patch grid.
        context_dim: width of the context.
        num_blocks: residual blocks (0: the context of a patch is a projection of its own feature only).
        spatial_dims: 2 or 3 (grid dimensionality).
        kernel_size: of the causal convolutions (odd, >= 3 for any sideways context).
    """

    def __init__(self, in_dim: int, context_dim: int = 256, num_blocks: int = 2, spatial_dims: int = 2,
                 kernel_size: int = 3):
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_blocks < 0 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need num_blocks >= 0 and an odd kernel_size, got {num_blocks}, {kernel_size}")
        self.spatial_dims = spatial_dims
        self.project = _CONV[spatial_dims](in_dim, context_dim, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), _CausalConv(context_dim, spatial_dims, kernel_size), nn.ReLU(),
                          _CausalConv(context_dim, spatial_dims, kernel_size))
            for _ in range(num_blocks)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, *grid) patch features -> (B, context_dim, *grid) context."""
        if z.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a (B, D, *grid) tensor with {self.spatial_dims} grid axes, got {tuple(z.shape)}")
        c = self.project(z)
        for block in self.blocks:
            c = c + block(c)
        return c


class CPCHead(nn.Module):
    """Causal context network + one linear predictor per offset.

    Args:
        feature_dim: width ``D`` of the patch features (the encoder's ``feature_dim``).
        context_dim, num_blocks, kernel_size: the :class:`CausalContext`.
        num_offsets: number of predictors (offsets ``k``; which rows they target is the method's choice).
        spatial_dims: 2 or 3.
    """

    def __init__(self, feature_dim: int, context_dim: int = 256, num_blocks: int = 2, num_offsets: int = 3,
                 spatial_dims: int = 2, kernel_size: int = 3):
        super().__init__()
        if num_offsets < 1:
            raise ValueError(f"num_offsets must be >= 1, got {num_offsets}")
        self.context = CausalContext(feature_dim, context_dim, num_blocks, spatial_dims, kernel_size)
        self.predictors = nn.ModuleList(_CONV[spatial_dims](context_dim, feature_dim, 1)
                                        for _ in range(num_offsets))

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(B, D, *grid) -> one (B, D, *grid) prediction per offset."""
        c = self.context(z)
        return [predict(c) for predict in self.predictors]
