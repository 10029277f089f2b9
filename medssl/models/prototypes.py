"""SwAV's prototype layer: a bias-free linear map onto ``K`` unit-norm prototype vectors (Caron et al. 2020).

The scores of an L2-normalised embedding ``z`` are cosine similarities ``z C^T`` with the rows of ``C`` kept at unit
norm. SwAV renormalises the weight in place before every training step (:meth:`Prototypes.normalize_`, called by
:class:`medssl.ssl.swav.SwAV` at the start of each batch); :meth:`Prototypes.forward` also uses the normalised
weight, so the scores are cosines even between steps (e.g. after weight decay moved the stored rows).
During the first steps of training SwAV keeps the prototypes fixed (``freeze_prototypes_steps``), which the method
does by dropping their gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Prototypes"]


class Prototypes(nn.Module):
    """``K`` unit-norm prototypes of dimension ``dim``.

    Args:
        dim: embedding width (the projector's output).
        num_prototypes: ``K`` (paper: 3000 for ImageNet; a few hundred for small data sets).
    """

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(f"dim and num_prototypes must be >= 1, got {dim}, {num_prototypes}")
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))
        nn.init.normal_(self.weight)
        self.normalize_()
        self.dim, self.num_prototypes = dim, num_prototypes

    @torch.no_grad()
    def normalize_(self) -> None:
        """Rescale every prototype (row of ``weight``) to unit L2 norm, in place."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, dim) embeddings -> (N, K) scores against the normalised prototypes."""
        if z.ndim != 2 or z.shape[1] != self.weight.shape[1]:
            raise ValueError(f"expected (N, {self.weight.shape[1]}) embeddings, got {tuple(z.shape)}")
        return F.linear(z, F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_prototypes={self.num_prototypes}"
