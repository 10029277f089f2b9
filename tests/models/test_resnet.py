"""ResNetEncoder: MONAI ResNet keys (minus the classifier), 2D/3D, stages, weights load into a MONAI classifier."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet

from medssl.models import ResNetEncoder

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 16]}


@pytest.mark.parametrize("spatial_dims, block", [(2, "basic"), (3, "bottleneck")])
def test_keys_are_monai_resnet_without_fc(spatial_dims: int, block: str) -> None:
    enc = ResNetEncoder(in_channels=2, spatial_dims=spatial_dims, block=block, **TINY)
    clf = ResNet(block, TINY["layers"], TINY["block_inplanes"], spatial_dims=spatial_dims, n_input_channels=2,
                 conv1_t_stride=2, num_classes=3)  # the stem must match (MONAI defaults to stride 1)
    missing, unexpected = clf.load_state_dict(enc.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    x = torch.randn(2, 2, *(16,) * spatial_dims)
    enc.eval(), clf.eval()
    with torch.no_grad():
        feats = enc(x)
        assert feats.shape == (2, enc.feature_dim) and clf.fc.in_features == enc.feature_dim
        assert torch.allclose(clf.fc(feats), clf(x), atol=1e-6)  # the classifier = encoder + its head


def test_forward_features_and_checkpointing() -> None:
    enc = ResNetEncoder(in_channels=1, spatial_dims=2, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True, **TINY)
    x = torch.randn(2, 1, 28, 28)
    feats = enc.forward_features(x)
    assert [f.shape[1] for f in feats] == enc.stage_channels and feats[0].shape[-1] == 28 and feats[-1].shape[-1] == 4
    ckpt = ResNetEncoder(in_channels=1, spatial_dims=2, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True,
                         gradient_checkpointing=True, **TINY)
    ckpt.load_state_dict(enc.state_dict())
    enc.train(), ckpt.train()
    a, b = enc(x).sum(), ckpt(x).sum()
    a.backward(), b.backward()
    assert torch.allclose(a, b)
    for (name, p), q in zip(enc.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        ResNetEncoder(spatial_dims=4)
    with pytest.raises(ValueError, match="block"):
        ResNetEncoder(block="wide")
    with pytest.raises(ValueError, match="expected input"):
        ResNetEncoder(in_channels=1, spatial_dims=2, **TINY)(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("spatial_dims, block", [(2, "basic"), (3, "bottleneck")])
def test_group_norm_everywhere_makes_items_independent(spatial_dims: int, block: str) -> None:
    # MONAI 1.6's ResNet puts `norm` in the stem only; the encoder must use it in every stage, or batch statistics
    # couple the items (and DDP on CPU, without synchronised BatchNorm, would differ from one process)
    enc = ResNetEncoder(in_channels=1, spatial_dims=spatial_dims, block=block, norm=["group", {"num_groups": 4}],
                        **TINY)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    enc.train()
    x = torch.randn(4, 1, *(12,) * spatial_dims)
    assert torch.allclose(enc(x)[:2], enc(x[:2]), atol=1e-5)
