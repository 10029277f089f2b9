"""Contrastive predictive coding over a grid of patches (van den Oord et al. 2018; CPC v2, Hénaff et al. 2020).

Each image is cut into an overlapping grid of patches (:func:`medssl.transforms.patch_grid.extract_patches`; 2D:
rows x columns, 3D: a three-axis grid), every patch is encoded on its own by the shared encoder (pooled features,
``z``: a feature grid ``(B, D, *grid)``), a context network that is causal along grid axis 0
(:class:`medssl.models.cpc_head.CPCHead`: masked convolutions, see there) summarises the rows above each position,
and for every offset ``k`` a linear predictor predicts the feature of the patch ``k`` rows below. The loss is CPC's
InfoNCE (:func:`medssl.losses.cpc.cpc_info_nce`): each prediction against all patch features of the (global) batch.

Offsets. With overlapping patches the patch one row below shares ``patch_size - stride`` voxel rows with the
context's own patch, which the encoder could match trivially. By default the offsets therefore start at the first
row that does not overlap, ``first_offset = ceil(patch_size / stride)`` along axis 0, and run over
``num_offsets`` rows (CPC v2's 7 x 7 grid of 64 px patches, stride 32, predicts 2 .. 4 rows down in the same way).

MedMNIST (28 px / 28^3 voxels): 8-voxel patches with stride 5 make an exact 5 x 5 (x 5) grid (``8 + 4 * 5 = 28``),
offsets 2, 3, 4. The small-stem ResNet of the MedMNIST overlays takes an 8 px patch down to 1 px (2D: 8 -> 4 -> 2
-> 1 over its three stride-2 stages; the 3D overlay's stride-2 stem gets there one stage earlier), so the pooled
feature is well defined. The encoder is trained on patches and
exported as usual; downstream it sees whole images. Per-patch intensity jitter
(:func:`medssl.transforms.patch_grid.jitter_patch_intensity`) is the only augmentation (CPC needs no views; run with
``data.views: null``). BatchNorm in the encoder mixes statistics of the patches of one batch; CPC v2 prefers layer
norm (``encoder_kwargs.norm: instance`` or ``[group, {num_groups: 1}]`` for the ResNet).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch

from medssl.errors import MedsslError, Reason
from medssl.losses.cpc import cpc_logits
from medssl.models.cpc_head import CPCHead
from medssl.ssl.joint_embedding import JointEmbeddingMethod
from medssl.training.optim import OptimConfig
from medssl.transforms.patch_grid import extract_patches, grid_size, jitter_patch_intensity


class CPC(JointEmbeddingMethod):
    """Contrastive predictive coding.

    Args:
        encoder, encoder_kwargs: see :class:`JointEmbeddingMethod` (encodes one patch at a time).
        patch_size, stride: the patch grid (int or one per spatial axis; see the module docstring).
        num_offsets: predicted rows per context position (CPC v2 predicts up to 3-5 rows).
        first_offset: smallest offset ``k``; None = the first row that does not overlap (``ceil(patch / stride)``
            along axis 0).
        context_dim, context_blocks, context_kernel: the causal context network.
        temperature: InfoNCE temperature (1.0 with dot-product scores is CPC's log-bilinear model).
        normalize: cosine instead of dot-product scores.
        patch_jitter_scale, patch_jitter_shift: per-patch intensity augmentation (0: off).
        gather_negatives: use the patch features of every rank as negatives under DDP.
        optim, nonfinite, max_consecutive_skips, seed: see :class:`medssl.ssl.base.SSLMethod`.
    """

    method_name = "cpc"

    def __init__(self, encoder: str = "resnet", encoder_kwargs: Optional[dict[str, Any]] = None,
                 patch_size: int | Sequence[int] = 8, stride: int | Sequence[int] = 5, num_offsets: int = 3,
                 first_offset: Optional[int] = None, context_dim: int = 256, context_blocks: int = 2,
                 context_kernel: int = 3, temperature: float = 1.0, normalize: bool = False,
                 patch_jitter_scale: float = 0.0, patch_jitter_shift: float = 0.0, gather_negatives: bool = True,
                 optim: Optional[OptimConfig] = None, nonfinite: str = "stop", max_consecutive_skips: int = 10,
                 seed: int = 0):
        super().__init__(encoder, encoder_kwargs, optim=optim, nonfinite=nonfinite,
                         max_consecutive_skips=max_consecutive_skips, seed=seed)
        nd = int(self.encoder.spatial_dims)
        self.patch_size = (int(patch_size),) * nd if isinstance(patch_size, int) else tuple(map(int, patch_size))
        self.stride = (int(stride),) * nd if isinstance(stride, int) else tuple(map(int, stride))
        if len(self.patch_size) != nd or len(self.stride) != nd or min(self.patch_size + self.stride) < 1:
            raise ValueError(f"patch_size and stride need {nd} positive values, got {patch_size}, {stride}")
        if num_offsets < 1:
            raise ValueError(f"num_offsets must be >= 1, got {num_offsets}")
        self.first_offset = math.ceil(self.patch_size[0] / self.stride[0]) if first_offset is None else first_offset
        if self.first_offset < 1:
            raise ValueError(f"first_offset must be >= 1, got {first_offset}")
        self.offsets = list(range(self.first_offset, self.first_offset + num_offsets))
        self.head = CPCHead(self.encoder.feature_dim, context_dim, context_blocks, num_offsets, nd, context_kernel)
        self.temperature, self.normalize, self.gather_negatives = temperature, normalize, gather_negatives
        self.patch_jitter = (patch_jitter_scale, patch_jitter_shift)

    def grid(self, image_size: Sequence[int]) -> tuple[int, ...]:
        """The patch grid of an image of ``image_size``; a config error when it has too few rows for the offsets."""
        try:
            grid, _ = grid_size(image_size, self.patch_size, self.stride)
        except ValueError as err:
            raise MedsslError(Reason.BAD_CONFIG, f"CPC: {err}; set model.init_args.patch_size") from None
        if grid[0] <= self.offsets[-1]:
            raise MedsslError(Reason.BAD_CONFIG, f"CPC: images of size {tuple(image_size)} make a patch grid {grid} "
                              f"with {grid[0]} rows, too few for the offsets {self.offsets}: lower num_offsets, "
                              "first_offset, patch_size or stride")
        return grid

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.images(batch)
        grid = self.grid(x.shape[2:])
        nd = len(grid)
        patches = extract_patches(x, self.patch_size, self.stride)  # (B, *grid, C, *patch)
        patches = jitter_patch_intensity(patches, nd, *self.patch_jitter, generator=generator)
        b = x.shape[0]
        h = self.encoder(patches.reshape(b * math.prod(grid), *patches.shape[1 + nd:]))  # (B * L, D)
        z = h.reshape(b, *grid, -1).movedim(-1, 1)  # (B, D, *grid)
        pairs = cpc_logits(self.head(z), z, self.offsets, self.temperature, self.normalize, self.gather_negatives)
        losses = [torch.nn.functional.cross_entropy(logits, labels) for logits, labels in pairs]
        with torch.no_grad():
            hits = sum((logits.argmax(dim=1) == labels).sum() for logits, labels in pairs)
            accuracy = hits.float() / sum(len(labels) for _, labels in pairs)
        image_features = z.flatten(2).mean(dim=2)
        return {"loss": torch.stack(losses).mean(), "cpc_accuracy": accuracy,
                **self.collapse_metrics(image_features)}
