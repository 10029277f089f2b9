"""Position-table interpolation and ViT inputs of another size (multi-crop)."""
from __future__ import annotations

import pytest
import torch

from medssl.models import ViTEncoder
from medssl.models.pos_embed import interpolate_pos_embed


def test_same_grid_is_identity_and_linear_function_is_preserved() -> None:
    pos = torch.randn(1, 12, 5)
    assert interpolate_pos_embed(pos, (3, 4), (3, 4)) is pos
    # a table that is linear along each axis stays (nearly) linear when upsampled trilinearly (interior cells)
    z, y, x = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), torch.arange(4.0), indexing="ij")
    lin = (z + 2 * y - x).reshape(1, -1, 1).repeat(1, 1, 2)
    up = interpolate_pos_embed(lin, (4, 4, 4), (8, 8, 8)).reshape(8, 8, 8, 2)[..., 0]
    zz, yy, xx = torch.meshgrid(*(torch.arange(8.0) * 0.5 - 0.25,) * 3, indexing="ij")
    inner = (slice(1, -1),) * 3
    assert torch.allclose(up[inner], (zz + 2 * yy - xx)[inner], atol=1e-5)


def test_bad_grids() -> None:
    with pytest.raises(ValueError, match="one entry per cell"):
        interpolate_pos_embed(torch.randn(1, 10, 4), (3, 4), (6, 8))
    with pytest.raises(ValueError, match="both 2D or both 3D"):
        interpolate_pos_embed(torch.randn(1, 12, 4), (3, 4), (2, 3, 2))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_vit_accepts_other_sizes(spatial_dims: int) -> None:
    enc = ViTEncoder(1, (16,) * spatial_dims, 4, hidden_size=24, mlp_dim=32, num_layers=1, num_heads=2,
                     spatial_dims=spatial_dims)
    small = torch.randn(2, 1, *(8,) * spatial_dims)
    assert enc(small).shape == (2, 24)
    assert enc.forward_features(small).shape == (2, 2**spatial_dims, 24)
    enc(small).sum().backward()
    assert enc.patch_embedding.position_embeddings.grad is not None  # the table is trained through local crops too
    with pytest.raises(ValueError, match="divisible by the patch size"):
        enc(torch.randn(1, 1, *(10,) * spatial_dims))
