"""The MONAI segmentation network that a registry encoder loads into, built from the encoder's own kwargs.

Every registry encoder that can segment is one half of a MONAI network (:mod:`medssl.models.transfer`), so the
segmenter is that network, built with the encoder's hyper-parameters so that
``load_encoder(card, into=build_segmenter(card["architecture"], ...))`` places 100% of the encoder's tensors::

    encoder     network     from the encoder's kwargs                              segmenter-only (``options``)
    vit         UNETR       hidden_size, mlp_dim, num_heads, qkv_bias, dropout      feature_size, norm_name,
                                                                                    conv_block, res_block
    swin        SwinUNETR   feature_size, depths, num_heads, window_size,           norm_name
                            patch_size, mlp_ratio, qkv_bias, dropouts, patch_norm,
                            downsample, use_v2, gradient_checkpointing
    segresnet   SegResNet   init_filters, blocks_down, norm                         blocks_up, upsample_mode
    basicunet   BasicUNet   features, act, norm, bias, dropout                      upsample

``resnet`` encoders have no decoder family and are refused with :class:`SegmenterError`. MONAI's UNETR has a
fixed ViT (12 layers, 16-voxel patches, a learnt or copied position table): a ViT encoder of another depth or
patch size cannot initialise it, and saying so here is clearer than the key mismatch ``load_encoder`` would
report. The network's ``img_size`` (UNETR) is the fine-tuning ``roi_size``; when it differs from the encoder's
pretraining size ``load_encoder`` interpolates the position table and reports it.

``roi_size`` must be divisible by each network's total down-sampling (UNETR 16, SwinUNETR ``patch_size**5``,
its own input check, SegResNet ``2**(stages - 1)``, BasicUNet 16), so that the skip connections line up;
sliding-window inference pads whole volumes to it. Except in UNETR (whose deepest level is the ViT's tokens),
the deepest level must also hold more than one voxel, which instance norm needs in training: twice the multiple
on at least one axis.

:func:`segmenter_spec` is the plain-dict description (stored in checkpoints' hyper-parameters) from which
``build_segmenter(**spec)`` rebuilds the same network, parameter for parameter.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import UNETR, BasicUNet, SegResNet, SwinUNETR
from torch import nn

from medssl.errors import MedsslError, Reason

__all__ = ["SEGMENTERS", "SegmenterError", "build_segmenter", "roi_multiple", "segmenter_spec"]

#: registry encoder -> name of the MONAI network it initialises (the family name in medssl.models.transfer)
SEGMENTERS = {"vit": "UNETR", "swin": "SwinUNETR", "segresnet": "SegResNet", "basicunet": "BasicUNet"}
UNETR_LAYERS, UNETR_PATCH = 12, 16  # fixed inside MONAI's UNETR
_OPTIONS = {"vit": {"feature_size", "norm_name", "conv_block", "res_block"}, "swin": {"norm_name"},
            "segresnet": {"blocks_up", "upsample_mode"}, "basicunet": {"upsample"}}


class SegmenterError(MedsslError):
    """An encoder architecture that has no segmentation network, or settings that contradict it."""

    def __init__(self, message: str, files: Any = ()):
        super().__init__(Reason.BAD_CONFIG, message, files)


def _spec_layer(value: Any) -> Any:
    """A JSON layer spec (``"instance"`` or ``["GROUP", {...}]``) as MONAI takes it (a str or a tuple)."""
    return value if isinstance(value, str) else tuple(value)


def roi_multiple(architecture: dict[str, Any]) -> int:
    """The factor every ``roi_size`` axis must be a multiple of for this encoder's segmentation network."""
    name, kw = architecture["name"], architecture.get("kwargs", {})
    if name == "swin":
        return int(kw.get("patch_size", 2)) ** 5  # what SwinUNETR checks (patch_size**5; 32 for its patch of 2)
    if name == "segresnet":
        return 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1)
    return 16


def build_segmenter(architecture: dict[str, Any], *, num_classes: int, spatial_dims: int, in_channels: int,
                    img_size: int | Sequence[int], options: dict[str, Any] | None = None) -> nn.Module:
    """The MONAI segmentation network that the encoder ``architecture`` (``{"name", "kwargs"}``) loads into.

    Args:
        architecture: registry spec of the encoder (an encoder card's ``architecture``).
        num_classes: output channels, background included.
        spatial_dims, in_channels: must agree with the architecture's kwargs where those name them.
        img_size: the fine-tuning ``roi_size`` (one int, or one per axis).
        options: decoder-only settings (see the module table); anything else raises.

    The returned network carries ``segmenter_spec`` (see :func:`segmenter_spec`).
    """
    name, kw = architecture.get("name"), dict(architecture.get("kwargs") or {})
    if name not in SEGMENTERS:
        segment = ", ".join(f"{k} -> {v}" for k, v in SEGMENTERS.items())
        raise SegmenterError(f"a {name!r} encoder has no segmentation network; encoders that segment: {segment}")
    if spatial_dims not in (2, 3):
        raise SegmenterError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    for key, value in (("spatial_dims", spatial_dims), ("in_channels", in_channels)):
        if key in kw and int(kw[key]) != int(value):
            raise SegmenterError(f"{key}={value} contradicts the encoder architecture's {key}={kw[key]}")
    size = [int(img_size)] * spatial_dims if isinstance(img_size, int) else [int(s) for s in img_size]
    multiple = roi_multiple(architecture)
    if len(size) != spatial_dims or any(s < multiple or s % multiple for s in size):
        raise SegmenterError(f"roi_size {size} must have {spatial_dims} axes, each a multiple of {multiple} for "
                             f"{SEGMENTERS[name]} (its total down-sampling)")
    if name != "vit" and all(s == multiple for s in size):
        raise SegmenterError(f"roi_size {size} leaves one voxel at {SEGMENTERS[name]}'s deepest level, which its "
                             f"normalisation cannot train on; use {2 * multiple} on at least one axis")
    opts = dict(options or {})
    unknown = set(opts) - _OPTIONS[name]
    if unknown:
        raise SegmenterError(f"unknown {SEGMENTERS[name]} options {sorted(unknown)}; allowed: "
                             f"{sorted(_OPTIONS[name])}")
    common = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": int(num_classes)}
    if name == "vit":
        net = _unetr(kw, size, opts, common)
    elif name == "swin":
        net = SwinUNETR(**common, feature_size=kw.get("feature_size", 48), depths=tuple(kw.get("depths", (2,) * 4)),
                        num_heads=tuple(kw.get("num_heads", (3, 6, 12, 24))), window_size=kw.get("window_size", 7),
                        patch_size=kw.get("patch_size", 2), mlp_ratio=kw.get("mlp_ratio", 4.0),
                        qkv_bias=kw.get("qkv_bias", True), drop_rate=kw.get("drop_rate", 0.0),
                        attn_drop_rate=kw.get("attn_drop_rate", 0.0),
                        dropout_path_rate=kw.get("dropout_path_rate", 0.0), patch_norm=kw.get("patch_norm", False),
                        downsample=kw.get("downsample", "merging"), use_v2=kw.get("use_v2", False),
                        use_checkpoint=kw.get("gradient_checkpointing", False),
                        norm_name=_spec_layer(opts.get("norm_name", "instance")))
    elif name == "segresnet":
        down = tuple(int(b) for b in kw.get("blocks_down", (1, 2, 2, 4)))
        up = tuple(int(b) for b in opts.get("blocks_up", (1,) * (len(down) - 1)))
        if len(up) != len(down) - 1:
            raise SegmenterError(f"SegResNet needs one blocks_up entry per up-sampling ({len(down) - 1}), got "
                                 f"{list(up)}")
        net = SegResNet(**common, init_filters=kw.get("init_filters", 16), blocks_down=down, blocks_up=up,
                        norm=_spec_layer(kw.get("norm", ["GROUP", {"num_groups": 8}])),
                        upsample_mode=opts.get("upsample_mode", "nontrainable"))
    else:
        net = BasicUNet(**common, features=tuple(kw.get("features", (32, 32, 64, 128, 256, 32))),
                        act=_spec_layer(kw.get("act", ["LeakyReLU", {"negative_slope": 0.1, "inplace": True}])),
                        norm=_spec_layer(kw.get("norm", ["instance", {"affine": True}])), bias=kw.get("bias", True),
                        dropout=kw.get("dropout", 0.0), upsample=opts.get("upsample", "deconv"))
    net.segmenter_spec = {"architecture": {"name": name, "kwargs": kw}, "num_classes": int(num_classes),
                          "spatial_dims": int(spatial_dims), "in_channels": int(in_channels), "img_size": size,
                          "options": opts}
    return net


def _unetr(kw: dict[str, Any], size: list[int], opts: dict[str, Any], common: dict[str, Any]) -> UNETR:
    """UNETR whose ``vit`` is the card's ViT; refuses encoders that MONAI's fixed ViT cannot hold."""
    patch = kw.get("patch_size", UNETR_PATCH)
    patches = [int(patch)] * len(size) if isinstance(patch, int) else [int(p) for p in patch]
    problems = []
    if any(p != UNETR_PATCH for p in patches):
        problems.append(f"patch_size {patches} (UNETR's ViT uses {UNETR_PATCH}-voxel patches)")
    if int(kw.get("num_layers", UNETR_LAYERS)) != UNETR_LAYERS:
        problems.append(f"num_layers {kw['num_layers']} (UNETR's ViT has {UNETR_LAYERS} blocks, its skip "
                        "connections tap blocks 3, 6 and 9)")
    if kw.get("pos_embed_type", "learnable") not in ("learnable", "sincos"):
        problems.append(f"pos_embed_type {kw['pos_embed_type']!r} (UNETR holds a position table)")
    if problems:
        raise SegmenterError("this ViT encoder cannot initialise MONAI's UNETR: " + "; ".join(problems)
                             + ". Pretrain a ViT with 16-voxel patches and 12 layers to segment with UNETR")
    return UNETR(**common, img_size=size, hidden_size=kw.get("hidden_size", 768), mlp_dim=kw.get("mlp_dim", 3072),
                 num_heads=kw.get("num_heads", 12), proj_type="conv", dropout_rate=kw.get("dropout_rate", 0.0),
                 qkv_bias=kw.get("qkv_bias", False), feature_size=opts.get("feature_size", 16),
                 norm_name=_spec_layer(opts.get("norm_name", "instance")), conv_block=opts.get("conv_block", True),
                 res_block=opts.get("res_block", True))


def segmenter_spec(network: nn.Module) -> dict[str, Any]:
    """``{"architecture", "num_classes", "spatial_dims", "in_channels", "img_size", "options"}`` of a network made
    by :func:`build_segmenter`; ``build_segmenter(**spec)`` rebuilds it (plain containers: checkpoint-safe)."""
    spec = getattr(network, "segmenter_spec", None)
    if spec is None:
        raise SegmenterError(f"{type(network).__name__} was not built by build_segmenter (no segmenter_spec)")
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in spec.items()}
