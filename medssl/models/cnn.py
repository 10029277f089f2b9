"""Convolutional encoder: the down-sampling half of MONAI's ``SegResNet``.

``SegResNetEncoder`` builds a real ``monai.networks.nets.SegResNet`` and keeps only ``convInit`` and
``down_layers`` under the *same attribute names*, so every key of its ``state_dict()`` is a key of the full
``SegResNet`` with the same shape: a pretrained encoder initialises a segmenter with
``segresnet.load_state_dict(encoder.state_dict(), strict=False)`` and only the decoder is left random.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import SegResNet
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["SegResNetEncoder"]

#: SegResNet's own default normalisation.
DEFAULT_NORM: tuple[str, dict[str, Any]] = ("GROUP", {"num_groups": 8})


def norm_to_json(norm: str | Sequence[Any]) -> str | list[Any]:
    """MONAI layer spec (norm ``"BATCH"`` / ``("GROUP", {...})``, or an activation) as a JSON-friendly value."""
    if isinstance(norm, str):
        return norm
    name, args = norm
    return [name, dict(args)]


class SegResNetEncoder(nn.Module):
    """N-D SegResNet encoder returning one feature map per stage.

    Stage ``i`` has ``init_filters * 2**i`` channels at resolution ``S / 2**i``; the deepest stage has
    ``feature_dim`` channels and total down-sampling factor ``stride``.

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        init_filters: channels of the first stage.
        blocks_down: residual blocks per stage (the number of stages is its length).
        norm: MONAI norm spec, default SegResNet's ``("GROUP", {"num_groups": 8})``.
        gradient_checkpointing: recompute each stage in the backward pass (training only).
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 3,
        init_filters: int = 16,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        norm: str | Sequence[Any] = DEFAULT_NORM,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        blocks = tuple(int(b) for b in blocks_down)
        if not blocks:
            raise ValueError("blocks_down must have at least one stage")
        norm_json = norm_to_json(norm)
        norm_arg: str | tuple[str, dict[str, Any]] = norm_json if isinstance(norm_json, str) else tuple(norm_json)
        full = SegResNet(
            spatial_dims=spatial_dims,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=1,
            dropout_prob=None,
            norm=norm_arg,
            blocks_down=blocks,
        )
        # Same attribute names as SegResNet -> same state_dict keys. The decoder half is dropped.
        self.convInit = full.convInit
        self.down_layers = full.down_layers

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = init_filters * 2 ** (len(blocks) - 1)
        self.stride = 2 ** (len(blocks) - 1)
        self.stage_channels = [init_filters * 2**i for i in range(len(blocks))]
        self.gradient_checkpointing = gradient_checkpointing
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "init_filters": init_filters,
            "blocks_down": list(blocks),
            "norm": norm_json,
            "gradient_checkpointing": gradient_checkpointing,
        }

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage, shallow to deep (``SegResNet.encode``'s ``down_x``)."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{self.spatial_dims} spatial axes>), got {tuple(x.shape)}"
            )
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        x = self.convInit(x)
        feats: list[torch.Tensor] = []
        for down in self.down_layers:
            x = checkpoint(down, x, use_reentrant=False) if use_ckpt else down(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector ``(B, feature_dim)``: global average of the deepest stage."""
        return self.forward_features(x)[-1].flatten(2).mean(dim=2)
