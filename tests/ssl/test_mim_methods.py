"""MAE and SimMIM LightningModules: the loss they compute, overfitting one batch, reconstructions, config errors."""
from __future__ import annotations

import pytest
import torch

from medssl.errors import MedsslError
from medssl.losses.reconstruction import masked_patch_mse
from medssl.models.patches import patchify
from medssl.ssl.mae import MAE
from medssl.ssl.simmim import SimMIM

TINY_VIT = dict(hidden_size=48, num_layers=2, num_heads=2, mlp_dim=64, decoder_dim=32, decoder_depth=1,
                decoder_heads=2)


def _overfit(method, x: torch.Tensor, steps: int) -> tuple[float, float]:
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = method.compute_loss({"image": x}, torch.Generator().manual_seed(0))["loss"]  # same masks each step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]




@pytest.mark.parametrize("spatial_dims,size,patch,masking", [(2, 16, 4, "random"), (3, 16, 4, "block")])
def test_mae_overfits_one_batch(spatial_dims, size, patch, masking, one_thread):
    torch.manual_seed(0)
    mae = MAE(img_size=[size] * spatial_dims, patch_size=patch, spatial_dims=spatial_dims, masking=masking,
              norm_pix_loss=False, **TINY_VIT)
    x = torch.rand(2, 1, *[size] * spatial_dims)
    first, last = _overfit(mae, x, 60)
    assert last < first / 4, (first, last)


def test_mae_loss_is_masked_mse_of_the_model_output():
    torch.manual_seed(0)
    mae = MAE(img_size=[16, 16], patch_size=4, spatial_dims=2, norm_pix_loss=True, **TINY_VIT)
    x = torch.rand(3, 1, 16, 16)
    loss = mae.compute_loss({"image": x}, torch.Generator().manual_seed(5))["loss"]
    mask = mae.draw_mask(3, torch.Generator().manual_seed(5), x.device)
    expected = masked_patch_mse(mae.model(x, mask), patchify(x, 4), mask.mask, norm_pix=True)
    assert torch.allclose(loss, expected)
    assert mask.mask.float().mean().item() == pytest.approx(0.75)


def test_mae_reconstruction_pastes_visible_patches():
    mae = MAE(img_size=[16, 16, 16], patch_size=8, spatial_dims=3, **TINY_VIT)
    x = torch.rand(2, 1, 16, 16, 16)
    out = mae.reconstruct({"image": x}, torch.Generator().manual_seed(0))
    assert set(out) == {"input", "masked", "reconstruction"}
    visible = out["masked"] != 0
    assert torch.equal(out["reconstruction"][visible], x[visible])
    assert (out["masked"] == 0).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_mae_rejects_images_of_another_size():
    mae = MAE(img_size=[16, 16], patch_size=4, spatial_dims=2, **TINY_VIT)
    with pytest.raises(MedsslError, match="bad_config.*model.img_size"):
        mae.compute_loss({"image": torch.rand(1, 1, 32, 32)}, torch.Generator())
    with pytest.raises(ValueError, match="divisible by 6"):
        MAE(img_size=[16, 16, 16], patch_size=4, spatial_dims=3, **{**TINY_VIT, "hidden_size": 32})
    with pytest.raises(ValueError, match="masking"):
        MAE(img_size=[16, 16], patch_size=4, spatial_dims=2, masking="grid", **TINY_VIT)


def test_simmim_overfits_one_batch_and_ignores_masked_content(one_thread):
    torch.manual_seed(0)
    method = SimMIM(spatial_dims=3, init_filters=8, blocks_down=[1, 1], mask_patch_size=4)
    x = torch.rand(2, 1, 16, 16, 16)
    first, last = _overfit(method, x, 40)
    assert last < first / 2, (first, last)
    out = method.reconstruct({"image": x}, torch.Generator().manual_seed(1))
    hidden = out["masked"] == 0
    assert 0.5 < hidden.float().mean().item() < 0.7
    assert torch.equal(out["reconstruction"][~hidden], x[~hidden])
