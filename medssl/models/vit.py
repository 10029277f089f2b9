"""Vision Transformer encoder: MONAI's ``ViT`` with a token-level API for masked modelling.

``ViTEncoder`` *is* a ``monai.networks.nets.ViT`` (``classification=False``, ``proj_type="conv"``), so its
``state_dict()`` keys are identical to a MONAI ``ViT`` built with the same arguments, and to ``UNETR(...).vit``
under the prefix ``vit.``: pretrained weights drop straight into MONAI's segmentation networks.

On top of MONAI's forward it exposes the three steps that masked autoencoders need to run separately::

    tokens = encoder.embed(x)                 # (B, L, D) patch embedding + position embedding
    latent = encoder.encode_tokens(visible)   # (B, N, D) transformer blocks + final LayerNorm, any subset N <= L
    feats = encoder.forward_features(x)       # (B, L, D) = encode_tokens(embed(x))

and the uniform encoder protocol ``encoder(x) -> (B, feature_dim)`` (mean-pooled tokens).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from monai.networks.nets import ViT
from torch.utils.checkpoint import checkpoint

from medssl.models.pos_embed import interpolate_pos_embed

__all__ = ["ViTEncoder"]


def _as_tuple(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    """Normalise an int or a sequence to a tuple of ``spatial_dims`` ints."""
    if isinstance(value, int):
        return (int(value),) * spatial_dims
    out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(f"{name}={list(out)} has {len(out)} entries but spatial_dims={spatial_dims}")
    return out


def freeze_unused_cross_attention_norms(blocks: Iterable[nn.Module]) -> None:
    """MONAI's ``TransformerBlock`` always builds a ``norm_cross_attn`` LayerNorm, used only with cross-attention.
    Freezing it (kept in the state_dict, so keys still match MONAI) lets DDP run without
    ``find_unused_parameters`` and keeps it out of the optimizer."""
    for blk in blocks:
        if not getattr(blk, "with_cross_attention", False) and hasattr(blk, "norm_cross_attn"):
            blk.norm_cross_attn.requires_grad_(False)


class ViTEncoder(ViT):
    """N-D ViT encoder (2D or 3D) with MONAI-identical parameter names.

    Args:
        in_channels: image channels.
        img_size: training image size (int or one value per spatial axis); must be divisible by ``patch_size``.
        patch_size: patch size (int or one value per spatial axis).
        hidden_size: token width ``D`` (= ``feature_dim``).
        mlp_dim: width of the MLP inside each transformer block.
        num_layers: number of transformer blocks.
        num_heads: attention heads; must divide ``hidden_size``.
        spatial_dims: 2 or 3.
        pos_embed_type: ``"learnable"``, ``"sincos"``, ``"fourier"`` or ``"none"`` (MONAI ``PatchEmbeddingBlock``).
        dropout_rate: dropout inside the blocks and after the embedding.
        qkv_bias: bias on the qkv projection.
        gradient_checkpointing: recompute each block in the backward pass (training only) to save memory.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        spatial_dims: int = 3,
        pos_embed_type: str = "learnable",
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        img = _as_tuple(img_size, spatial_dims, "img_size")
        patch = _as_tuple(patch_size, spatial_dims, "patch_size")
        if any(i % p != 0 for i, p in zip(img, patch)):
            raise ValueError(f"img_size {list(img)} must be divisible by patch_size {list(patch)} on every axis")
        super().__init__(
            in_channels=in_channels,
            img_size=img,
            patch_size=patch,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type=pos_embed_type,
            classification=False,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        freeze_unused_cross_attention_norms(self.blocks)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = hidden_size
        self.img_size = img
        self.patch_size = patch
        self.grid_shape: tuple[int, ...] = tuple(i // p for i, p in zip(img, patch))
        self.num_patches = math.prod(self.grid_shape)
        self.gradient_checkpointing = gradient_checkpointing
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "img_size": list(img),
            "patch_size": list(patch),
            "hidden_size": hidden_size,
            "mlp_dim": mlp_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "spatial_dims": spatial_dims,
            "pos_embed_type": pos_embed_type,
            "dropout_rate": dropout_rate,
            "qkv_bias": qkv_bias,
            "gradient_checkpointing": gradient_checkpointing,
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch + position embedding: ``(B, C, *S) -> (B, L, D)`` tokens in row-major grid order.

        ``S`` is normally ``img_size``; any other size divisible by ``patch_size`` (e.g. DINO's local crops) uses
        the position table interpolated to its patch grid (:func:`medssl.models.pos_embed.interpolate_pos_embed`).
        """
        size = tuple(x.shape[2:])
        if (x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels
                or any(s % p for s, p in zip(size, self.patch_size))):
            raise ValueError(
                f"expected input (B, {self.in_channels}, *S) with S divisible by the patch size "
                f"{list(self.patch_size)} (trained on {list(self.img_size)}), got {tuple(x.shape)}"
            )
        if size == self.img_size:
            return self.patch_embedding(x)
        pe = self.patch_embedding
        tokens = pe.patch_embeddings(x).flatten(2).transpose(-1, -2)
        grid = tuple(s // p for s, p in zip(size, self.patch_size))
        return pe.dropout(tokens + interpolate_pos_embed(pe.position_embeddings, self.grid_shape, grid))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Transformer blocks then the final LayerNorm on any token subset: ``(B, N, D) -> (B, N, D)``."""
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            tokens = checkpoint(blk, tokens, use_reentrant=False) if use_ckpt else blk(tokens)
        return self.norm(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All patch tokens after the encoder: ``(B, C, *S) -> (B, L, D)``."""
        return self.encode_tokens(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Pooled feature vector ``(B, feature_dim)`` (mean over tokens)."""
        return self.forward_features(x).mean(dim=1)
