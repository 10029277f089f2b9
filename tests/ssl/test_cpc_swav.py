"""CPC and SwAV methods: finite losses with encoder gradients (2D, 3D), a causal context network, overfitting one
batch (2D and 3D), encoder export, SwAV's prototype freeze / renormalisation and queue, config errors."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from medssl.errors import MedsslError
from medssl.models.cpc_head import CausalContext
from medssl.models.hub import export_encoder, load_encoder
from medssl.ssl.cpc import CPC
from medssl.ssl.swav import SwAV
from medssl.training.optim import OptimConfig
from tests.ssl.overfit import fit_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet(spatial_dims: int) -> dict:
    return {"in_channels": 1, "spatial_dims": spatial_dims, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
            "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}


def cpc(spatial_dims: int = 2, **kwargs) -> CPC:
    args = {"patch_size": 4, "stride": 3, "num_offsets": 2, "context_dim": 16, "optim": OptimConfig(lr=3e-3, warmup=0)}
    return CPC(encoder="resnet", encoder_kwargs=resnet(spatial_dims), **{**args, **kwargs})


def swav(spatial_dims: int = 2, **kwargs) -> SwAV:
    args = {"proj_hidden_dim": 32, "proj_dim": 16, "num_prototypes": 8, "optim": OptimConfig(lr=3e-3, warmup=0)}
    return SwAV(encoder="resnet", encoder_kwargs=resnet(spatial_dims), **{**args, **kwargs})


def image_batch(n: int, spatial_dims: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, *(size,) * spatial_dims, generator=g)}


def views_batch(n: int, spatial_dims: int, size: int, local: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, *(size,) * spatial_dims, generator=g)
    noisy = [base + 0.1 * torch.randn(base.shape, generator=g) for _ in range(2)]
    small = [base[(slice(None), slice(None)) + (slice(0, size // 2),) * spatial_dims] for _ in range(local)]
    return {"global_views": noisy, "local_views": small}


def _fit(method: L.LightningModule, batch: dict, steps: int) -> L.Trainer:
    return fit_one_batch(method, batch, steps)


def _eval_loss(method: L.LightningModule, batch: dict) -> float:
    method.eval()
    with torch.no_grad():
        loss = method.compute_loss(batch, torch.Generator().manual_seed(0))["loss"].item()
    method.train()
    return loss


@pytest.mark.parametrize("make, batch", [(cpc, lambda d: image_batch(3, d, 13)), (swav, lambda d: views_batch(4, d, 8))],
                         ids=["cpc", "swav"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_finite_and_backward(make, batch, spatial_dims) -> None:
    torch.manual_seed(0)
    method = make(spatial_dims)
    out = method.compute_loss(batch(spatial_dims), torch.Generator())
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert {"embedding_std", "embedding_rank"} <= set(out)
    out["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_context_is_causal_along_grid_axis_0(spatial_dims) -> None:
    torch.manual_seed(0)
    context = CausalContext(6, 8, num_blocks=2, spatial_dims=spatial_dims)
    z = torch.randn(2, 6, *(5,) * spatial_dims)
    changed = z.clone()
    changed[:, :, 3:] += torch.randn_like(changed[:, :, 3:])  # rows 3 and 4
    c, c_changed = context(z), context(changed)
    assert torch.equal(c[:, :, :3], c_changed[:, :, :3])  # rows 0..2 see nothing below them
    assert not torch.allclose(c[:, :, 3:], c_changed[:, :, 3:])
    # the receptive field spans the whole width: row 4, column 0 depends on row 0, last column
    far = z.clone()
    far[(slice(None), slice(None), 0, -1)] += 1.0
    assert not torch.allclose(context(far)[(slice(None), slice(None), 4, 0)], c[(slice(None), slice(None), 4, 0)])


def test_cpc_offsets_and_grid_checks() -> None:
    assert cpc(patch_size=8, stride=5, num_offsets=3).offsets == [2, 3, 4]  # the MedMNIST choice: 5 x 5 grid
    assert cpc(patch_size=4, stride=4, num_offsets=2).offsets == [1, 2]  # tiles: no overlap, start at 1
    assert cpc(first_offset=3, num_offsets=1).offsets == [3]
    method = cpc(patch_size=8, stride=5, num_offsets=3)
    assert method.grid((28, 28)) == (5, 5)
    with pytest.raises(MedsslError, match="too few for the offsets"):
        method.compute_loss(image_batch(2, 2, 18), torch.Generator())  # a 3 x 3 grid
    with pytest.raises(MedsslError, match="patch_size"):
        method.compute_loss(image_batch(2, 2, 6), torch.Generator())
    with pytest.raises(ValueError, match="patch_size and stride"):
        cpc(patch_size=[4, 4, 4])


@pytest.mark.parametrize("spatial_dims, size, steps", [(2, 13, 40), (3, 13, 60)])
def test_cpc_overfits_one_batch_and_exports(spatial_dims, size, steps, tmp_path) -> None:
    torch.manual_seed(0)
    method = cpc(spatial_dims)  # grid 4 (x 4 (x 4)) of 4-voxel patches, offsets 2 and 3
    batch = image_batch(4 if spatial_dims == 2 else 2, spatial_dims, size)
    before = _eval_loss(method, batch)
    _fit(method, batch, steps)
    after = _eval_loss(method, batch)
    assert after < 0.7 * before, (before, after)
    card = export_encoder(method.encoder_module, tmp_path, method=method.method_name, preprocessing={})
    report = load_encoder(card)
    assert not report.missing and not report.unexpected


@pytest.mark.parametrize("spatial_dims, size, steps", [(2, 12, 40), (3, 8, 25)])
def test_swav_overfits_one_batch_and_exports(spatial_dims, size, steps, tmp_path) -> None:
    torch.manual_seed(0)
    method = swav(spatial_dims)
    batch = views_batch(8, spatial_dims, size)
    before = _eval_loss(method, batch)
    _fit(method, batch, steps)
    after = _eval_loss(method, batch)
    assert after < 0.8 * before, (before, after)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(8), rtol=0.05, atol=0.05)
    card = export_encoder(method.encoder_module, tmp_path, method=method.method_name, preprocessing={})
    report = load_encoder(card)
    assert not report.missing and not report.unexpected


def test_swav_freezes_prototypes_then_trains_them() -> None:
    torch.manual_seed(0)
    method = swav(freeze_prototypes_steps=3)
    start = method.prototypes.weight.detach().clone()
    trainer = _fit(method, views_batch(4, 2, 8), 3)
    # frozen: only the per-batch renormalisation of already unit-norm rows touches them (rounding only)
    assert trainer.global_step == 3
    torch.testing.assert_close(method.prototypes.weight.detach(), start, rtol=0, atol=1e-6)
    method.freeze_prototypes_steps = 0
    _fit(method, views_batch(4, 2, 8), 2)
    assert (method.prototypes.weight.detach() - start).abs().max() > 1e-4
    # renormalised at the start of every batch
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.on_train_batch_start(None, 0)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(8))


def test_swav_queue_is_filled_in_training_and_used_once_full() -> None:
    torch.manual_seed(0)
    method = swav(queue_size=8)
    batch = views_batch(4, 2, 8)
    method.eval()
    with torch.no_grad():
        method.compute_loss(batch, torch.Generator())
    assert int(method.queue_rows) == 0 and not method.queue_in_use()
    method.train()
    used = []
    for _ in range(3):
        used.append(method.queue_in_use())
        method.compute_loss(batch, torch.Generator())
    assert used == [False, False, True] and int(method.queue_rows) == 12
    assert int(method.queues[0].ptr) == 12 % 8


def test_swav_needs_its_global_crops() -> None:
    method = swav(num_global_crops=3)
    with pytest.raises(MedsslError, match="3 global"):
        method.compute_loss(views_batch(2, 2, 8), torch.Generator())
    with pytest.raises(MedsslError, match="data.views"):
        swav().compute_loss(image_batch(2, 2, 8), torch.Generator())
