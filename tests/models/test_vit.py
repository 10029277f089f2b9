"""ViTEncoder: MONAI-identical keys, N-D shapes, token API, gradient checkpointing."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR, ViT

from medssl.models.vit import ViTEncoder

TINY = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2}


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in module.state_dict().items() if k.startswith(prefix)}


def test_keys_equal_monai_vit_and_unetr_vit() -> None:
    # UNETR hard-codes patch 16 and 12 layers; match them here.
    args = {"in_channels": 1, "img_size": 32, "patch_size": 16, **TINY, "num_layers": 12}
    enc = ViTEncoder(**args, spatial_dims=3)
    vit = ViT(**args, spatial_dims=3, classification=False)
    unetr = UNETR(in_channels=1, out_channels=2, img_size=32, feature_size=8, hidden_size=32, mlp_dim=64, num_heads=2)
    assert _shapes(enc) == _shapes(vit)
    assert _shapes(enc) == _shapes(unetr, "vit.")
    unetr.vit.load_state_dict(enc.state_dict(), strict=True)
    missing, unexpected = unetr.load_state_dict({f"vit.{k}": v for k, v in enc.state_dict().items()}, strict=False)
    assert not unexpected and not any(k.startswith("vit.") for k in missing)


@pytest.mark.parametrize("spatial_dims, img", [(2, (16, 24)), (3, (16, 16, 8))])
def test_shapes(spatial_dims: int, img: tuple[int, ...]) -> None:
    enc = ViTEncoder(in_channels=2, img_size=img, patch_size=4, spatial_dims=spatial_dims, **TINY)
    grid = tuple(s // 4 for s in img)
    assert enc.grid_shape == grid and enc.num_patches == torch.Size(grid).numel()
    assert enc.patch_size == (4,) * spatial_dims and enc.feature_dim == 32 and enc.spatial_dims == spatial_dims
    x = torch.randn(3, 2, *img)
    tokens = enc.embed(x)
    assert tokens.shape == (3, enc.num_patches, 32)
    assert enc.encode_tokens(tokens[:, :5]).shape == (3, 5, 32)
    feats = enc.forward_features(x)
    assert feats.shape == (3, enc.num_patches, 32)
    assert torch.allclose(enc(x), feats.mean(1))
    # forward_features is MONAI's forward (minus the hidden states)
    assert torch.allclose(feats, ViT.forward(enc, x)[0])


def test_config_and_errors() -> None:
    enc = ViTEncoder(in_channels=1, img_size=16, patch_size=(4, 4, 2), **TINY)
    assert enc.config["img_size"] == [16, 16, 16] and enc.config["patch_size"] == [4, 4, 2]
    assert ViTEncoder(**enc.config).state_dict().keys() == enc.state_dict().keys()
    with pytest.raises(ValueError, match="divisible"):
        ViTEncoder(in_channels=1, img_size=18, patch_size=4, **TINY)
    with pytest.raises(ValueError, match="expected input"):
        enc.embed(torch.randn(1, 1, 10, 16, 16))


def test_gradient_checkpointing_matches() -> None:
    torch.manual_seed(0)
    plain = ViTEncoder(in_channels=1, img_size=16, patch_size=4, **TINY).train()
    ckpt = ViTEncoder(in_channels=1, img_size=16, patch_size=4, gradient_checkpointing=True, **TINY).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    out_plain, out_ckpt = plain(x), ckpt(x)
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    out_plain.square().sum().backward()
    out_ckpt.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name
