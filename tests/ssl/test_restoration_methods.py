"""Models Genesis and the (denoising) autoencoder: the loss is the MSE of the restoration of the corrupted image
against the clean one, the corruptions are what they claim, both overfit one batch in 2D and 3D, and only the
registry encoder is exported."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from medssl.errors import MedsslError
from medssl.models.hub import export_encoder, load_encoder
from medssl.ssl.autoencoder import Autoencoder
from medssl.ssl.genesis import ModelsGenesis
from medssl.training.optim import OptimConfig
from tests.ssl.overfit import fit_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet(spatial_dims: int) -> dict:
    return {"in_channels": 1, "spatial_dims": spatial_dims, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
            "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True, "norm": ["group", {"num_groups": 4}]}


def make(cls: type, spatial_dims: int = 2, lr: float = 3e-3, **kwargs) -> L.LightningModule:
    return cls(encoder="resnet", encoder_kwargs=resnet(spatial_dims), optim=OptimConfig(lr=lr, warmup=0), **kwargs)


def blobs(n: int, spatial_dims: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth images in [0, 1]: a bright ball at a random place on a dim gradient."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(0, 1, size)] * spatial_dims, indexing="ij")
    centre = torch.rand(n, spatial_dims, generator=g) * 0.6 + 0.2
    dist = sum((a[None] - centre[:, i].view(-1, *[1] * spatial_dims)) ** 2 for i, a in enumerate(axes))
    return (0.2 * axes[0][None] + 0.7 * (dist < 0.06).float())[:, None]


@pytest.mark.parametrize("cls", [ModelsGenesis, Autoencoder])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_mse_of_the_restored_corruption(cls, spatial_dims):
    torch.manual_seed(0)
    method = make(cls, spatial_dims)
    x = blobs(3, spatial_dims, 12)
    out = method.compute_loss({"image": x}, torch.Generator().manual_seed(1))
    corrupted = method.corrupt(x, torch.Generator().manual_seed(1))
    reference = ((method.model(corrupted) - x) ** 2).mean()
    assert torch.allclose(out["loss"], reference, atol=1e-6)
    assert torch.allclose(out["corrupted_mse"], ((corrupted - x) ** 2).mean())
    out["loss"].backward()
    assert all(p.grad is not None for p in method.encoder.parameters())
    shown = method.reconstruct({"image": x}, torch.Generator().manual_seed(1))
    assert list(shown) == ["input", "transformed", "restored"]
    assert torch.equal(shown["transformed"], corrupted) and all(v.shape == x.shape for v in shown.values())


def test_autoencoder_corruptions():
    x = torch.rand(4, 1, 16, 16)
    g = torch.Generator
    assert torch.equal(make(Autoencoder, noise_std=0.0).corrupt(x, g()), x)  # plain autoencoder
    noisy = make(Autoencoder, noise_std=0.5).corrupt(x, g().manual_seed(0))
    assert abs((noisy - x).std().item() - 0.5) < 0.05
    masked = make(Autoencoder, noise_std=0.0, mask_ratio=0.5, mask_patch_size=4).corrupt(x + 1, g().manual_seed(0))
    assert (masked == 0).float().mean().item() == pytest.approx(0.5)  # exactly half of the 16 patches, to zero
    assert torch.equal(masked[masked != 0], (x + 1)[masked != 0])


def test_genesis_intensity_policy():
    x = torch.randn(2, 1, 12, 12) * 3
    clamp, minmax = make(ModelsGenesis), make(ModelsGenesis, intensity="minmax")
    shown = clamp.reconstruct({"image": x}, torch.Generator())
    assert torch.equal(shown["input"], x.clamp(0, 1))
    shown = minmax.reconstruct({"image": x}, torch.Generator())
    flat = shown["input"].flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(2)) and torch.allclose(flat.max(1).values, torch.ones(2))
    with pytest.raises(ValueError, match="intensity"):
        make(ModelsGenesis, intensity="zscore")


def _eval_loss(method: L.LightningModule, batch: dict) -> float:
    method.eval()
    with torch.no_grad():
        return sum(method.compute_loss(batch, torch.Generator().manual_seed(s))["loss"].item() for s in range(3)) / 3


@pytest.mark.parametrize("cls, kwargs", [(ModelsGenesis, {}), (Autoencoder, {"noise_std": 0.1})])
@pytest.mark.parametrize("spatial_dims, size", [(2, 16), (3, 12)])
def test_overfits_one_batch_and_exports_the_encoder(cls, kwargs, spatial_dims, size, tmp_path):
    torch.manual_seed(0)
    method = make(cls, spatial_dims, **kwargs)
    batch = {"image": blobs(4, spatial_dims, size)}
    before = _eval_loss(method, batch)
    method.train()
    fit_one_batch(method, batch, 40)
    after = _eval_loss(method, batch)
    assert after < 0.5 * before, (cls.__name__, spatial_dims, before, after)
    card = export_encoder(method.encoder_module, tmp_path, method=method.method_name, preprocessing={})
    report = load_encoder(card)
    assert not report.missing and not report.unexpected
    exported = method.encoder.state_dict()
    assert exported.keys() == report.module.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in report.module.state_dict().items())
    assert not any(k.startswith("decoder") for k in exported)


def test_views_instead_of_images_is_a_config_error():
    with pytest.raises(MedsslError, match="data.views to null"):
        make(Autoencoder).compute_loss({"global_views": [torch.rand(2, 1, 8, 8)] * 2}, torch.Generator())


def test_vit_is_a_config_error():
    vit = {"in_channels": 1, "img_size": [16, 16], "patch_size": 4, "spatial_dims": 2, "hidden_size": 24,
           "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
    with pytest.raises(MedsslError, match="CNN encoder"):
        ModelsGenesis(encoder="vit", encoder_kwargs=vit)
