"""Losses, pure torch: one file per loss family (reconstruction, contrastive, distillation ...).

* ``reconstruction`` -- MAE / SimMIM masked reconstruction (:func:`masked_patch_mse`, :func:`masked_voxel_l1`).
* ``ntxent`` -- SimCLR NT-Xent, MoCo v3 and MoCo v2 InfoNCE (:func:`nt_xent`, :func:`info_nce`,
  :func:`info_nce_queue`).
* ``queue`` -- the MoCo v2 key queue (:class:`FeatureQueue`).
* ``byol`` -- BYOL and SimSiam prediction losses (:func:`normalized_mse`, :func:`negative_cosine`).
* ``dino`` -- DINO self-distillation with centring and teacher-temperature warm-up (:class:`DINOLoss`).
* ``cpc`` -- contrastive predictive coding InfoNCE over a patch grid (:func:`cpc_info_nce`, :func:`cpc_logits`).
* ``swav`` -- SwAV's Sinkhorn-Knopp codes and swapped-prediction loss (:func:`sinkhorn_knopp`,
  :func:`swapped_prediction_loss`).
* ``gather`` -- the one guarded cross-device helper (:func:`gather` with gradient, :func:`all_reduce_mean`); the
  identity without an initialised process group.

A loss scores one view order; symmetrising over views, scaling (MoCo v3's ``2T``) and passing the epoch are the
method's business (``medssl.ssl``).
"""
from __future__ import annotations

from medssl.losses.byol import negative_cosine, normalized_mse
from medssl.losses.cpc import cpc_info_nce, cpc_logits
from medssl.losses.dino import DINOLoss
from medssl.losses.gather import all_reduce_mean, gather, gather_offset, gather_with_offset, world
from medssl.losses.ntxent import info_nce, info_nce_queue, nt_xent
from medssl.losses.queue import FeatureQueue
from medssl.losses.reconstruction import masked_patch_mse, masked_voxel_l1, normalize_patches
from medssl.losses.swav import sinkhorn_knopp, swapped_prediction_loss

__all__ = [
    "DINOLoss",
    "FeatureQueue",
    "all_reduce_mean",
    "cpc_info_nce",
    "cpc_logits",
    "gather",
    "gather_offset",
    "gather_with_offset",
    "info_nce",
    "info_nce_queue",
    "masked_patch_mse",
    "masked_voxel_l1",
    "negative_cosine",
    "normalize_patches",
    "normalized_mse",
    "nt_xent",
    "sinkhorn_knopp",
    "swapped_prediction_loss",
    "world",
]
