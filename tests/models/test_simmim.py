"""SimMIM on a SegResNet encoder: shapes, masked voxels are invisible, overfits one batch."""
from __future__ import annotations

import pytest
import torch

from medssl.models.cnn import SegResNetEncoder
from medssl.models.simmim import SimMIM
from medssl.transforms.masking import random_voxel_mask


def _simmim(spatial_dims: int, channels: int = 1) -> SimMIM:
    enc = SegResNetEncoder(in_channels=channels, spatial_dims=spatial_dims, init_filters=8, blocks_down=(1, 1, 1))
    return SimMIM(enc)




@pytest.mark.parametrize("spatial_dims, size", [(2, (16, 32)), (3, (16, 16, 8))])
def test_shape(spatial_dims: int, size: tuple[int, ...]) -> None:
    model = _simmim(spatial_dims, channels=2)
    assert model.stride == 4 and model.mask_token.shape == (1, 2, *(1,) * spatial_dims)
    x = torch.randn(2, 2, *size)
    mask = random_voxel_mask(2, size, 4, 0.6, generator=torch.Generator().manual_seed(0))
    assert model(x, mask).shape == x.shape


def test_size_must_divide_stride() -> None:
    model = _simmim(2)
    with pytest.raises(ValueError, match=r"\[16, 18\].*stride 4"):
        model(torch.randn(1, 1, 16, 18), torch.zeros(1, 1, 16, 18, dtype=torch.bool))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masked_voxels_do_not_affect_output(spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = _simmim(spatial_dims).eval()
    size = (16,) * spatial_dims
    x = torch.randn(2, 1, *size)
    mask = random_voxel_mask(2, size, 4, 0.6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x, mask)
        assert torch.equal(ref, model(torch.where(mask, torch.randn_like(x) * 10, x), mask))
        assert not torch.allclose(ref, model(torch.where(~mask, x + torch.randn_like(x), x), mask), atol=1e-4)


def test_overfits_one_batch(one_thread: None) -> None:
    torch.manual_seed(0)
    model = _simmim(3)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 16)] * 3, indexing="ij"))
    x = torch.stack([grid.sum(0, keepdim=True), grid[:1] * grid[1:2]]) + 1.0
    mask = random_voxel_mask(2, (16, 16, 16), 4, 0.6, generator=torch.Generator().manual_seed(0))

    def masked_l1() -> torch.Tensor:
        return ((model(x, mask) - x).abs() * mask).sum() / mask.sum()

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = masked_l1().item()
    for _ in range(40):
        opt.zero_grad()
        loss = masked_l1()
        loss.backward()
        opt.step()
    assert masked_l1().item() < first / 3
