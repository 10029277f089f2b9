"""Representation-collapse diagnostics for joint-embedding methods.

A joint-embedding method can reach a low loss by mapping every input to (nearly) the same vector, or to a
low-dimensional subspace. Two cheap statistics of a batch of embeddings ``z`` (B, D) show it:

* :func:`embedding_std` -- the mean over dimensions of the standard deviation of the L2-normalised embeddings,
  times ``sqrt(D)`` (SimSiam, Chen & He 2021): about 1 for zero-mean embeddings spread over the sphere (projector
  outputs), 0 at complete collapse. Non-negative features (globally pooled post-ReLU encoder features, which the
  methods report) read lower when healthy: about 0.3 for a randomly initialised ResNet, 0.5 for uniform random
  non-negative vectors; what matters is a fall towards 0 (the guard's default threshold is 0.1).
* :func:`effective_rank` -- RankMe (Garrido et al. 2023): ``exp`` of the entropy of the normalised singular
  values; between 1 (collapse to a line) and ``min(B, D)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["effective_rank", "embedding_std"]


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Scaled std of the L2-normalised rows of ``z`` (see module docstring); needs ``B >= 2``."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"need a (B >= 2, D) batch of embeddings, got {tuple(z.shape)}")
    zn = F.normalize(z.float(), dim=1)
    return zn.std(dim=0).mean() * z.shape[1] ** 0.5


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe effective rank of the batch ``z`` (B, D)."""
    if z.ndim != 2:
        raise ValueError(f"need a (B, D) batch of embeddings, got {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.float())
    p = s / (s.sum() + eps) + eps
    return torch.exp(-(p * p.log()).sum())
