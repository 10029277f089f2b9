"""MaskedAutoencoder: N-D shapes, encoder sees visible patches only, overfits one batch."""
from __future__ import annotations

import pytest
import torch
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding

from medssl.models.mae import MaskedAutoencoder, sincos_position_embedding
from medssl.models.patches import patchify
from medssl.models.vit import ViTEncoder
from medssl.transforms.masking import patch_mask_to_voxels, random_masking

TINY = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2}
DECODER = {"decoder_dim": 24, "decoder_depth": 1, "decoder_heads": 2}


def _mae(spatial_dims: int, img: int = 16, channels: int = 1) -> MaskedAutoencoder:
    enc = ViTEncoder(in_channels=channels, img_size=img, patch_size=4, spatial_dims=spatial_dims, **TINY)
    return MaskedAutoencoder(enc, **DECODER)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_output_shape(spatial_dims: int) -> None:
    model = _mae(spatial_dims, channels=2)
    mask = random_masking(3, model.num_patches, 0.75, generator=torch.Generator().manual_seed(0))
    pred = model(torch.randn(3, 2, *(16,) * spatial_dims), mask)
    assert pred.shape == (3, model.num_patches, 4**spatial_dims * 2)
    assert model.decoder_config == {"decoder_dim": 24, "decoder_depth": 1, "decoder_heads": 2, "decoder_mlp_dim": 96}
    assert "decoder_pos_embed" not in model.state_dict()
    assert not any(n == "decoder_pos_embed" for n, _ in model.named_parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_prediction_ignores_masked_pixels(spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = _mae(spatial_dims).eval()
    x = torch.randn(2, 1, *(16,) * spatial_dims)
    mask = random_masking(2, model.num_patches, 0.75, generator=torch.Generator().manual_seed(1))
    hidden = patch_mask_to_voxels(mask.mask, model.grid_shape, model.patch_size)
    with torch.no_grad():
        ref = model(x, mask)
        masked_changed = model(torch.where(hidden, torch.randn_like(x) * 10, x), mask)
        visible_changed = model(torch.where(~hidden, x + torch.randn_like(x), x), mask)
    assert torch.equal(ref, masked_changed)
    assert not torch.allclose(ref, visible_changed, atol=1e-4)


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # MONAI's reference omits indexing=
def test_sincos_matches_monai_when_divisible() -> None:
    for grid, dim in [((4, 6), 16), ((2, 3, 4), 24)]:
        ours = sincos_position_embedding(grid, dim)
        assert torch.allclose(ours, build_sincos_position_embedding(list(grid), dim, len(grid)).data, atol=1e-6)
    padded = sincos_position_embedding((2, 3, 4), 512)  # 512 % 6 != 0: MONAI's refuses, ours zero-pads
    assert padded.shape == (1, 24, 512) and torch.all(padded[..., 510:] == 0)


def test_mask_shape_is_checked() -> None:
    model = _mae(2)
    bad = random_masking(2, model.num_patches - 1, 0.5)
    with pytest.raises(ValueError, match="ids_restore"):
        model(torch.randn(2, 1, 16, 16), bad)




def test_overfits_one_batch(one_thread: None) -> None:
    torch.manual_seed(0)
    model = _mae(3, img=8)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 8)] * 3, indexing="ij"))
    x = torch.stack([grid.sum(0, keepdim=True), (grid[:1] * grid[1:2])]) + 1.0  # smooth, two samples
    mask = random_masking(2, model.num_patches, 0.75, generator=torch.Generator().manual_seed(0))
    target = patchify(x, model.patch_size)

    def masked_mse() -> torch.Tensor:
        err = (model(x, mask) - target).square().mean(-1)
        return (err * mask.mask).sum() / mask.mask.sum()

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = masked_mse().item()
    for _ in range(60):
        opt.zero_grad()
        loss = masked_mse()
        loss.backward()
        opt.step()
    assert masked_mse().item() < first / 5
