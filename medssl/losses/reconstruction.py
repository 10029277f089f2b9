"""Reconstruction losses for masked image modelling, pure torch.

* :func:`masked_patch_mse` -- MAE: mean squared error per patch token, averaged over the hidden patches only,
  optionally against per-patch normalised targets (MAE's ``norm_pix_loss``).
* :func:`masked_voxel_l1` -- SimMIM: mean absolute error over hidden voxels (and all channels) only.

Values at visible patches / unmasked voxels never enter the loss (not even as ``0 * nan``). Both losses raise
``ValueError`` on shape mismatches and when the mask selects nothing, instead of returning ``0/0``.
"""
from __future__ import annotations

import torch

__all__ = ["normalize_patches", "masked_patch_mse", "masked_voxel_l1"]


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise every patch (last dim) to zero mean and unit variance: ``(t - mean) / sqrt(var + eps)``.

    ``var`` is the unbiased variance (``torch.var`` default, divisor ``P - 1``), exactly as in the reference MAE
    implementation (facebookresearch/mae ``forward_loss``).
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps).sqrt()


def _check_selects_something(weight_sum: torch.Tensor, name: str) -> None:
    if not bool(weight_sum > 0):
        raise ValueError(f"{name}: the mask selects nothing (sum of mask weights is {float(weight_sum)})")


def masked_patch_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False
) -> torch.Tensor:
    """MAE loss: ``sum_i mask_i * mean_p (pred - target)^2 / sum_i mask_i`` over patches ``i`` of (B, L, P) tensors.

    ``mask`` (B, L) is bool (True = hidden, scored) or float weights. With ``norm_pix`` the target is first passed
    through :func:`normalize_patches`.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be (B, L, P); got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be (B, L) = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    if norm_pix:
        target = normalize_patches(target)
    weight = mask.to(pred.dtype)
    weight_sum = weight.sum()
    _check_selects_something(weight_sum, "masked_patch_mse")
    per_patch = (pred - target).pow(2).mean(dim=-1)
    per_patch = torch.where(weight != 0, per_patch, torch.zeros_like(per_patch))
    return (per_patch * weight).sum() / weight_sum


def masked_voxel_l1(pred: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """SimMIM loss: mean ``|pred - target|`` over the voxels where ``voxel_mask`` is True, and over all channels.

    ``pred`` and ``target`` are (B, C, *S); ``voxel_mask`` is (B, 1, *S) (shared by all channels) or (B, C, *S),
    bool or float weights.
    """
    if pred.shape != target.shape or pred.ndim < 3:
        raise ValueError(
            f"pred and target must both be (B, C, *spatial); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    batch, channels, *spatial = pred.shape
    if (
        voxel_mask.ndim != pred.ndim
        or voxel_mask.shape[0] != batch
        or voxel_mask.shape[1] not in (1, channels)
        or list(voxel_mask.shape[2:]) != spatial
    ):
        raise ValueError(
            f"voxel_mask must be (B, 1, *S) or (B, C, *S) for pred {tuple(pred.shape)}, got {tuple(voxel_mask.shape)}"
        )
    weight = voxel_mask.to(pred.dtype).expand_as(pred)
    weight_sum = weight.sum()
    _check_selects_something(weight_sum, "masked_voxel_l1")
    diff = (pred - target).abs()
    diff = torch.where(weight != 0, diff, torch.zeros_like(diff))
    return (diff * weight).sum() / weight_sum
