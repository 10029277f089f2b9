"""N-D ResNet encoder: MONAI's ``ResNet`` without the classification layer.

``ResNetEncoder`` *is* a ``monai.networks.nets.ResNet`` built with ``feed_forward=False``, so its ``state_dict()``
keys are those of a MONAI ``ResNet`` classifier (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) without ``fc.*``:
pretrained weights load into a MONAI ResNet classifier for fine-tuning, and its head stays freshly initialised.
MONAI ResNets are 2D or 3D (``spatial_dims``) with any number of input channels, which is what medical images
need (grey-level X-ray slices, co-registered MRI sequences).

Small inputs (MedMNIST's 28 px) need ``conv1_t_size=3, conv1_t_stride=1, no_max_pool=True`` (the CIFAR stem);
realistic 3D patches keep the ImageNet stem (7, stride 2, max-pool).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch.utils.checkpoint import checkpoint

from medssl.models.cnn import norm_to_json

__all__ = ["ResNetEncoder"]

BLOCKS = ("basic", "bottleneck")


class ResNetEncoder(ResNet):
    """ResNet encoder following the medssl encoder protocol (``encoder(x) -> (B, feature_dim)``).

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50 and deeper).
        layers: residual blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        block_inplanes: channels per stage before ``widen_factor`` (and the bottleneck expansion).
        conv1_t_size, conv1_t_stride, no_max_pool: the stem (see module docstring).
        widen_factor: multiplies ``block_inplanes``.
        norm: MONAI norm spec (``"batch"``; ``"instance"`` or ``("group", {"num_groups": 8})`` for tiny batches or
            DDP on CPU, where BatchNorm cannot be synchronised). Applied everywhere, unlike MONAI 1.6's ``ResNet``,
            which uses it in the stem only (its stages keep BatchNorm): a MONAI ResNet classifier built with a
            non-batch ``norm`` therefore reports the stages' norm keys as mismatched when these weights load.
        gradient_checkpointing: recompute each stage in the backward pass (training only).
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 3,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        block_inplanes: Sequence[int] = (64, 128, 256, 512),
        conv1_t_size: int = 7,
        conv1_t_stride: int = 2,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
        norm: str | Sequence[Any] = "batch",
        gradient_checkpointing: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if len(layers) != 4 or len(block_inplanes) != 4:
            raise ValueError(f"layers and block_inplanes need 4 stages, got {list(layers)} and {list(block_inplanes)}")
        norm_json = norm_to_json(norm)
        super().__init__(
            block=block, layers=[int(n) for n in layers], block_inplanes=[int(c) for c in block_inplanes],
            spatial_dims=spatial_dims, n_input_channels=in_channels, conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool, widen_factor=widen_factor, feed_forward=False,
            norm=norm_json if isinstance(norm_json, str) else tuple(norm_json),
        )
        if _norm_name(norm_json) != "batch":
            self._rebuild_stages(block, layers, block_inplanes, widen_factor, spatial_dims, norm_json)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = int(self.in_planes)  # channels after layer4 (widened, times the block expansion)
        self.stage_channels = [_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.gradient_checkpointing = gradient_checkpointing
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "block": block,
            "layers": [int(n) for n in layers],
            "block_inplanes": [int(c) for c in block_inplanes],
            "conv1_t_size": conv1_t_size,
            "conv1_t_stride": conv1_t_stride,
            "no_max_pool": no_max_pool,
            "widen_factor": widen_factor,
            "norm": norm_json,
            "gradient_checkpointing": gradient_checkpointing,
        }

    def _rebuild_stages(self, block: str, layers: Sequence[int], block_inplanes: Sequence[int], widen_factor: float,
                        spatial_dims: int, norm: Any) -> None:
        # MONAI 1.6's ResNet applies ``norm`` to the stem only: its residual stages always get BatchNorm (the
        # argument is not passed on to ``_make_layer``). Rebuild the stages with the requested norm, with the same
        # attribute names (state_dict keys) and MONAI's initialisation.
        block_cls = {"basic": ResNetBlock, "bottleneck": ResNetBottleneck}[block]
        planes = [int(c * widen_factor) for c in block_inplanes]
        norm_arg = norm if isinstance(norm, str) else tuple(norm)
        self.in_planes = planes[0]
        for i, (name, stride) in enumerate((("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2))):
            setattr(self, name, self._make_layer(block_cls, planes[i], int(layers[i]), spatial_dims, "B",
                                                 stride=stride, norm=norm_arg))
        for m in (self.layer1, self.layer2, self.layer3, self.layer4):
            for sub in m.modules():
                if isinstance(sub, (torch.nn.Conv2d, torch.nn.Conv3d)):
                    torch.nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after ``layer1`` ... ``layer4``, shallow to deep."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{self.spatial_dims} spatial axes>), got {tuple(x.shape)}"
            )
        x = self.act(self.bn1(self.conv1(x)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        feats: list[torch.Tensor] = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = checkpoint(layer, x, use_reentrant=False) if use_ckpt else layer(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Pooled feature vector ``(B, feature_dim)``: global average of ``layer4``."""
        return self.forward_features(x)[-1].flatten(2).mean(dim=2)


def _norm_name(norm: Any) -> str:
    return (norm if isinstance(norm, str) else norm[0]).lower()


def _out_channels(layer: torch.nn.Sequential) -> int:
    last = layer[-1]
    convs = [m for m in last.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    return int(convs[-1].out_channels)
