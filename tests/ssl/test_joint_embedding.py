"""Joint-embedding methods: every method in 2D and 3D computes a finite loss that goes down when overfitting one
batch, EMA targets follow the schedule once per optimizer step, DINO multi-crop on a ViT, the MoCo v2 queue."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from medssl.errors import MedsslError
from medssl.ssl.byol import BYOL
from medssl.ssl.dino import DINO
from medssl.ssl.moco import MoCo
from medssl.ssl.simclr import SimCLR
from medssl.ssl.simsiam import SimSiam
from medssl.training.optim import OptimConfig
from tests.ssl.overfit import fit_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet(spatial_dims: int) -> dict:
    return {"in_channels": 1, "spatial_dims": spatial_dims, "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16],
            "conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}


SMALL = {
    SimCLR: {"proj_hidden_dim": 32, "proj_dim": 16},
    MoCo: {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32},
    BYOL: {"proj_hidden_dim": 32, "proj_dim": 16},
    SimSiam: {"proj_dim": 32, "pred_hidden_dim": 8},
    DINO: {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "freeze_last_layer_epochs": 0},
}


def make(cls: type, spatial_dims: int = 2, **kwargs) -> L.LightningModule:
    return cls(encoder="resnet", encoder_kwargs=resnet(spatial_dims), optim=OptimConfig(lr=3e-3, warmup=0),
               **{**SMALL[cls], **kwargs})


def views_batch(n: int = 8, spatial_dims: int = 2, size: int = 12, local: int = 0, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, *(size,) * spatial_dims, generator=g)
    noisy = [base + 0.1 * torch.randn(base.shape, generator=g) for _ in range(2)]
    small = [base[(slice(None), slice(None)) + (slice(0, size // 2),) * spatial_dims] for _ in range(local)]
    return {"global_views": noisy, "local_views": small}


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_finite_and_backward(cls: type, spatial_dims: int) -> None:
    torch.manual_seed(0)
    method = make(cls, spatial_dims)
    out = method.compute_loss(views_batch(4, spatial_dims, 8), torch.Generator())
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert {"embedding_std", "embedding_rank"} <= set(out)
    out["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # momentum targets / teachers never receive gradients
    for target, _ in method.momentum_pairs():
        assert all(p.grad is None and not p.requires_grad for p in target.parameters())


def _fit(method: L.LightningModule, batch: dict, steps: int, **trainer_kwargs) -> L.Trainer:
    return fit_one_batch(method, batch, steps, **trainer_kwargs)


@pytest.mark.parametrize("cls", list(SMALL))
def test_overfits_one_batch(cls: type) -> None:
    torch.manual_seed(0)
    # DINO on one batch of 8 items drifts to uniform outputs with a moving teacher, so its student is checked
    # against a fixed teacher and centre (pure distillation); its real dynamics are measured on MedMNIST
    extra = ({"base_momentum": 0.9} if cls in (MoCo, BYOL) else
             {"base_momentum": 1.0, "center_momentum": 1.0} if cls is DINO else {})
    method = make(cls, 2, **extra)
    batch = views_batch(8, 2, 12, local=2 if cls is DINO else 0)
    method.eval()
    with torch.no_grad():
        before = method.compute_loss(batch, torch.Generator())["loss"].item()
    method.train()
    _fit(method, batch, 40)
    method.eval()
    with torch.no_grad():
        after = method.compute_loss(batch, torch.Generator())["loss"].item()
    assert after < before, (cls.__name__, before, after)


def test_ema_update_count_and_value() -> None:
    torch.manual_seed(0)
    method = make(MoCo, 2, base_momentum=0.75, final_momentum=0.75)
    calls: list[float] = []
    from medssl.ssl import joint_embedding

    real = joint_embedding.ema_update

    def spy(target, online, m):  # noqa: ANN001
        calls.append(m)
        real(target, online, m)

    joint_embedding.ema_update = spy
    try:
        trainer = _fit(method, views_batch(4, 2, 8), 6, accumulate_grad_batches=3)
    finally:
        joint_embedding.ema_update = real
    assert trainer.global_step == 2
    assert calls == [0.75] * 4  # once per optimizer step (not per micro-batch) x (encoder, projector)


def test_simclr_separate_views_normalises_each_view_on_its_own() -> None:
    """separate_views: the loss of each view encoded and projected as its own batch (BatchNorm statistics per
    view); by default one batch of both views. In eval mode (running statistics) the two agree."""
    from medssl.losses.ntxent import nt_xent

    batch = views_batch(6, 2, 8)
    x1, x2 = batch["global_views"]
    for separate in (False, True):
        torch.manual_seed(0)
        method = make(SimCLR, separate_views=separate, temperature=0.2)
        state = {k: v.clone() for k, v in method.state_dict().items()}
        got = method.compute_loss(batch, torch.Generator())["loss"]
        method.load_state_dict(state)  # the running statistics as before the call
        if separate:
            want = nt_xent(method.projector(method.encoder(x1)), method.projector(method.encoder(x2)), 0.2)
        else:
            want = nt_xent(*method.projector(method.encoder(torch.cat([x1, x2]))).chunk(2), 0.2)
        assert torch.allclose(got, want, atol=1e-6)
    torch.manual_seed(0)
    joint, apart = make(SimCLR), make(SimCLR, separate_views=True)
    apart.load_state_dict(joint.state_dict())
    assert not torch.allclose(joint.compute_loss(batch, torch.Generator())["loss"],
                              apart.compute_loss(batch, torch.Generator())["loss"])  # batch statistics differ
    apart.load_state_dict(joint.state_dict())  # same running statistics
    joint.eval(), apart.eval()
    assert torch.allclose(joint.compute_loss(batch, torch.Generator())["loss"],
                          apart.compute_loss(batch, torch.Generator())["loss"], atol=1e-6)


def test_missing_views_is_a_config_error() -> None:
    method = make(SimCLR)
    with pytest.raises(MedsslError, match="data.views"):
        method.compute_loss({"image": torch.rand(2, 1, 8, 8)}, torch.Generator())
    with pytest.raises(MedsslError, match="at least 2 global views"):
        method.compute_loss({"global_views": [torch.rand(2, 1, 8, 8)]}, torch.Generator())


def test_dino_vit_multicrop_and_teacher_export() -> None:
    torch.manual_seed(0)
    vit = {"in_channels": 1, "img_size": [16, 16], "patch_size": 4, "spatial_dims": 2, "hidden_size": 24,
           "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
    method = DINO(encoder="vit", encoder_kwargs=vit, out_dim=32, hidden_dim=16, bottleneck_dim=8,
                  optim=OptimConfig(lr=1e-3, warmup=0), freeze_last_layer_epochs=1)
    batch = views_batch(4, 2, 16, local=3)
    assert batch["local_views"][0].shape[-1] == 8
    out = method.compute_loss(batch, torch.Generator())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["teacher_temp"].item() == pytest.approx(0.04)
    assert method.encoder_module is method.teacher_encoder
    method.on_after_backward()  # epoch 0 < freeze_last_layer_epochs: the prototypes are not updated
    assert all(p.grad is None for p in method.head.last_layer_parameters)
    assert method.head.mlp[0].weight.grad is not None


def test_moco_v2_queue_updates_in_training_only() -> None:
    torch.manual_seed(0)
    method = make(MoCo, 2, queue_size=16, predictor_layers=0)
    assert isinstance(method.predictor, torch.nn.Identity)
    batch = views_batch(4, 2, 8)
    before = method.queue.queue.clone()
    method.eval()
    with torch.no_grad():
        method.compute_loss(batch, torch.Generator())
    assert torch.equal(method.queue.queue, before)
    method.train()
    method.compute_loss(batch, torch.Generator())["loss"].backward()
    assert not torch.equal(method.queue.queue, before)
    assert "queue.queue" in method.state_dict()  # saved in checkpoints -> exact resume


def test_dino_global_crop_count_must_match_and_outputs_on_model_device() -> None:
    method = make(DINO, 2)
    batch = views_batch(4, 2, 8)
    out = method.compute_loss(batch, torch.Generator())
    assert all(v.device == method.device for v in out.values())  # logged with sync_dist: must live on the device
    batch["global_views"].append(batch["global_views"][0])
    with pytest.raises(MedsslError, match="num_global_crops"):
        method.compute_loss(batch, torch.Generator())


def test_single_item_batch_keeps_metric_keys() -> None:
    out = make(SimCLR).compute_loss(views_batch(1, 2, 8), torch.Generator())
    assert {"embedding_std", "embedding_rank"} <= set(out) and torch.isnan(out["embedding_std"])


@pytest.mark.parametrize("encoder, kwargs, size", [
    ("segresnet", {"in_channels": 1, "spatial_dims": 3, "init_filters": 8, "blocks_down": [1, 1]}, 8),
    ("basicunet", {"in_channels": 1, "spatial_dims": 2, "features": [4, 4, 8, 8, 16, 4]}, 32),
    ("vit", {"in_channels": 1, "img_size": [8, 8, 8], "patch_size": 4, "spatial_dims": 3, "hidden_size": 24,
             "mlp_dim": 32, "num_layers": 1, "num_heads": 2}, 8),
])
def test_any_registry_encoder(encoder: str, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    method = SimCLR(encoder=encoder, encoder_kwargs=kwargs, proj_hidden_dim=16, proj_dim=8)
    out = method.compute_loss(views_batch(3, kwargs["spatial_dims"], size), torch.Generator())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in method.encoder.parameters()
                                               if p.requires_grad)
