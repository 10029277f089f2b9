"""Masked autoencoder (He et al. 2022, facebookresearch/mae) for N-D images, on a :class:`ViTEncoder`.

The whole model in one readable file::

    tokens  = encoder.embed(x)                         # (B, L, D)  patch + position embedding
    visible = gather(tokens, mask.ids_keep)            # (B, K, D)  the encoder never sees masked patches
    latent  = encoder.encode_tokens(visible)           # (B, K, D)
    y = decoder_embed(latent)                          # (B, K, Dd)
    y = unshuffle(cat(y, mask_tokens), ids_restore)    # (B, L, Dd) back in grid order
    pred = decoder_pred(norm(blocks(y + pos)))         # (B, L, prod(patch_size) * C)

The model returns predictions only; the reconstruction loss (on masked patches, optionally with per-patch
normalised targets) lives in ``medssl.losses``. ``mask`` is any object with ``ids_keep (B, K)`` and
``ids_restore (B, L)`` long tensors, e.g. ``medssl.transforms.masking.PatchMask``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from medssl.models.vit import ViTEncoder, freeze_unused_cross_attention_norms

if TYPE_CHECKING:
    from medssl.transforms.masking import PatchMask

__all__ = ["MaskedAutoencoder", "sincos_position_embedding"]


def sincos_position_embedding(
    grid_shape: tuple[int, ...] | list[int], embed_dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """Fixed N-D sin-cos position embedding ``(1, prod(grid_shape), embed_dim)`` in row-major grid order.

    Same layout as ``monai.networks.blocks.pos_embed_utils.build_sincos_position_embedding`` (sin/cos blocks of
    axis 1, axis 0, then axis 2) and equal to it whenever ``embed_dim`` is divisible by ``2 * spatial_dims``; other
    widths (e.g. 512 in 3D) are allowed here and the left-over channels are zero.
    """
    ndim = len(grid_shape)
    pos_dim = embed_dim // (2 * ndim)
    if pos_dim == 0:
        raise ValueError(f"embed_dim={embed_dim} too small for a {ndim}-D sin-cos embedding (need >= {2 * ndim})")
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float64) / pos_dim)
    axes = [torch.arange(n, dtype=torch.float64) for n in grid_shape]
    coords = [c.flatten() for c in torch.meshgrid(*axes, indexing="ij")]
    order = [1, 0, *range(2, ndim)]
    parts: list[torch.Tensor] = []
    for axis in order:
        out = coords[axis][:, None] * omega[None, :]
        parts += [torch.sin(out), torch.cos(out)]
    emb = torch.cat(parts, dim=1)
    pad = embed_dim - emb.shape[1]
    if pad:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], pad)], dim=1)
    return emb.float()[None]


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``tokens[b, ids[b, k], :]`` for every ``b, k``: ``(B, L, D), (B, K) -> (B, K, D)``."""
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


class MaskedAutoencoder(nn.Module):
    """MAE = a :class:`ViTEncoder` that sees visible patches only + a light transformer decoder.

    Args:
        encoder: the ViT encoder being pretrained (its weights are what gets exported).
        decoder_dim: decoder token width.
        decoder_depth: number of decoder transformer blocks.
        decoder_heads: decoder attention heads (must divide ``decoder_dim``).
        decoder_mlp_dim: decoder MLP width, default ``4 * decoder_dim``.
    """

    def __init__(
        self,
        encoder: ViTEncoder,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        decoder_mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        if decoder_dim % decoder_heads != 0:
            raise ValueError(f"decoder_dim={decoder_dim} must be divisible by decoder_heads={decoder_heads}")
        mlp_dim = 4 * decoder_dim if decoder_mlp_dim is None else decoder_mlp_dim
        self.encoder = encoder
        self.patch_size = encoder.patch_size
        self.grid_shape = encoder.grid_shape
        self.num_patches = encoder.num_patches
        self.patch_dim = math.prod(encoder.patch_size) * encoder.in_channels
        self.decoder_config: dict[str, Any] = {
            "decoder_dim": decoder_dim,
            "decoder_depth": decoder_depth,
            "decoder_heads": decoder_heads,
            "decoder_mlp_dim": mlp_dim,
        }

        self.decoder_embed = nn.Linear(encoder.feature_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed, a pure function of the config: a buffer kept out of checkpoints.
        self.register_buffer(
            "decoder_pos_embed", sincos_position_embedding(encoder.grid_shape, decoder_dim), persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            [TransformerBlock(decoder_dim, mlp_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)]
        )
        freeze_unused_cross_attention_norms(self.decoder_blocks)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_dim)

        # Decoder init as in facebookresearch/mae; the encoder keeps MONAI's own init.
        nn.init.normal_(self.mask_token, std=0.02)
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Latent of the visible patches only: ``(B, C, *S), (B, K) -> (B, K, D)``."""
        tokens = self.encoder.embed(x)
        return self.encoder.encode_tokens(gather_tokens(tokens, ids_keep))

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predicted patch pixels of all ``L`` tokens: ``(B, K, D), (B, L) -> (B, L, patch_dim)``."""
        y = self.decoder_embed(latent)
        batch, visible, width = y.shape
        mask_tokens = self.mask_token.expand(batch, ids_restore.shape[1] - visible, width)
        y = gather_tokens(torch.cat([y, mask_tokens], dim=1), ids_restore)
        y = y + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            y = blk(y)
        return self.decoder_pred(self.decoder_norm(y))

    def forward(self, x: torch.Tensor, mask: PatchMask) -> torch.Tensor:
        """Per-patch reconstruction ``(B, L, prod(patch_size) * C)`` for the patch mask ``mask``."""
        ids_keep, ids_restore = mask.ids_keep, mask.ids_restore
        if ids_restore.shape != (x.shape[0], self.num_patches):
            raise ValueError(
                f"mask.ids_restore has shape {tuple(ids_restore.shape)}, expected ({x.shape[0]}, {self.num_patches})"
            )
        if ids_keep.ndim != 2 or ids_keep.shape[0] != x.shape[0] or ids_keep.shape[1] > self.num_patches:
            raise ValueError(f"mask.ids_keep has shape {tuple(ids_keep.shape)}, expected ({x.shape[0]}, K<=L)")
        return self.forward_decoder(self.forward_encoder(x, ids_keep), ids_restore)
