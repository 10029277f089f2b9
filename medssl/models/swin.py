"""Swin Transformer encoder: the ``swinViT`` of MONAI's ``SwinUNETR``.

``SwinEncoder`` *is* a ``monai.networks.nets.swin_unetr.SwinTransformer`` built with exactly the arguments that
``SwinUNETR.__init__`` passes to its ``swinViT``, so its ``state_dict()`` keys and shapes are those of
``SwinUNETR(...).swinViT`` (prefix ``swinViT.`` in the segmenter): pretrained weights initialise a Swin UNETR whose
convolutional encoder blocks and decoder (``encoder1`` ... ``encoder10``, ``decoder*``, ``out``) stay random.

Input sizes: each stage halves the grid, so an input divisible by ``patch_size * 2**4`` (32 for the default patch
of 2) keeps every stage whole, which is what ``SwinUNETR`` needs for its skip connections; the encoder alone pads.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["SwinEncoder"]

NUM_STAGES = 4  # MONAI's SwinTransformer has exactly four stages (layers1 ... layers4)


class SwinEncoder(SwinTransformer):
    """N-D Swin Transformer encoder (2D or 3D) with ``SwinUNETR.swinViT``'s parameter names.

    ``forward_features(x)`` returns ``SwinUNETR``'s five hidden states (patch embedding, then after each stage,
    each layer-normalised over channels): channels ``feature_size * 2**i`` at ``S / (patch_size * 2**i)``.
    ``forward(x)`` is the global average of the deepest one, ``(B, feature_dim)`` with
    ``feature_dim = 16 * feature_size``.

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        feature_size: embedding width of the first stage (``SwinUNETR``'s ``feature_size``; it requires a multiple
            of 12).
        depths: Swin blocks in each of the four stages.
        num_heads: attention heads in each of the four stages.
        window_size: attention window (int or one value per spatial axis).
        patch_size: patch size of the embedding (``SwinUNETR`` takes one int).
        mlp_ratio: MLP width over the token width.
        qkv_bias: bias on the qkv projection.
        drop_rate, attn_drop_rate, dropout_path_rate: dropout after the embedding / on attention weights, and the
            maximum stochastic-depth rate (``SwinUNETR``'s names).
        patch_norm: LayerNorm after the patch embedding.
        downsample: ``"merging"`` (MONAI's default) or ``"mergingv2"``.
        use_v2: Swin UNETR v2 (a residual convolution block before each stage).
        gradient_checkpointing: MONAI's ``use_checkpoint`` (recompute the blocks in the backward pass).
    """

    def __init__(
        self,
        in_channels: int,
        spatial_dims: int = 3,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        patch_norm: bool = False,
        downsample: str = "merging",
        use_v2: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        depths_t, heads_t = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        if len(depths_t) != NUM_STAGES or len(heads_t) != NUM_STAGES:
            raise ValueError(f"depths and num_heads need {NUM_STAGES} stages, got {list(depths_t)} and {list(heads_t)}")
        if any((feature_size * 2**i) % h for i, h in enumerate(heads_t)):
            raise ValueError(f"num_heads {list(heads_t)} must divide the stage widths "
                             f"{[feature_size * 2**i for i in range(NUM_STAGES)]}")
        if downsample not in MERGING_MODE:
            raise ValueError(f"downsample must be one of {sorted(MERGING_MODE)}, got {downsample!r}")
        if not isinstance(patch_size, int):
            raise ValueError(f"patch_size must be one int (as in SwinUNETR), got {patch_size!r}")
        window = tuple(int(w) for w in ensure_tuple_rep(window_size, spatial_dims))
        # The same call as SwinUNETR.__init__ makes for ``self.swinViT`` (MONAI 1.6), Hyena options left at their
        # defaults (windowed attention), so the parameters and their names are identical.
        super().__init__(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=window,
            patch_size=(patch_size,) * spatial_dims,
            depths=depths_t,
            num_heads=heads_t,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=dropout_path_rate,
            norm_layer=nn.LayerNorm,
            patch_norm=patch_norm,
            use_checkpoint=gradient_checkpointing,
            spatial_dims=spatial_dims,
            downsample=MERGING_MODE[downsample],
            use_v2=use_v2,
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = feature_size * 2**NUM_STAGES
        self.stage_channels = [feature_size * 2**i for i in range(NUM_STAGES + 1)]
        self.stride = patch_size * 2**NUM_STAGES
        self.gradient_checkpointing = gradient_checkpointing
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "feature_size": feature_size,
            "depths": list(depths_t),
            "num_heads": list(heads_t),
            "window_size": list(window),
            "patch_size": patch_size,
            "mlp_ratio": mlp_ratio,
            "qkv_bias": qkv_bias,
            "drop_rate": drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "dropout_path_rate": dropout_path_rate,
            "patch_norm": patch_norm,
            "downsample": downsample,
            "use_v2": use_v2,
            "gradient_checkpointing": gradient_checkpointing,
        }

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """``SwinUNETR``'s five normalised hidden states, shallow to deep."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{self.spatial_dims} spatial axes>), got {tuple(x.shape)}"
            )
        return super().forward(x, normalize=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Pooled feature vector ``(B, feature_dim)``: global average of the deepest stage."""
        return self.forward_features(x)[-1].flatten(2).mean(dim=2)
