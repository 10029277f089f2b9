"""Where an exported encoder's weights go in a segmentation or classification network: one explicit map per family.

Each supported network family (chosen by ``isinstance`` of the target) names the encoders that can initialise it,
the prefix under which the encoder's keys live in the network, and the network keys that the encoder does not
provide by design (decoder, classification head)::

    family             encoder      network key            left to fine-tuning (expected missing)
    UNETR              vit          vit.<key>              encoder1-4.*, decoder*.*, out.*
    ViT (MONAI)        vit          <key>                  cls_token, classification_head.*
    SwinUNETR          swin         swinViT.<key>          encoder1-10.*, decoder*.*, out.*
    SwinTransformer    swin         <key>                  -
    SegResNet          segresnet    <key>                  up_layers.*, up_samples.*, conv_final.*
    BasicUNet          basicunet    <key>                  upcat_*, final_conv.*
    ResNet (MONAI)     resnet       <key>                  fc.*
    EncoderClassifier  its encoder  encoder.<key>          head.*
    registry encoder   its name     <key>                  -

Anything else is refused rather than guessed. Before any tensor is copied, the target is checked against the card:
``spatial_dims`` and input channels (from the network's first convolution), and the module structure (layer types,
attention heads, norm groups) against the card's architecture rebuilt from the registry, which catches differences
that leave every shape intact. A ViT position table is interpolated when the network's patch grid differs from the
pretraining grid, and the report says so (``reshaped``, ``notes``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.layers import DropPath
from monai.networks.nets import UNETR, UNet, BasicUNet, ResNet, SegResNet, SwinUNETR, ViT
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from medssl.models.classifier import EncoderClassifier
from medssl.models.hub import EncoderCardError, LoadReport
from medssl.models.pos_embed import interpolate_pos_embed
from medssl.models.registry import ENCODERS, build_encoder, encoder_spec

__all__ = ["FAMILIES", "TargetFamily", "load_into", "target_family"]

#: the encoder's first convolution (its weight is ``(out, in_channels, *kernel)``), per registry encoder
STEM_KEYS = {
    "vit": "patch_embedding.patch_embeddings.weight",
    "swin": "patch_embed.proj.weight",
    "segresnet": "convInit.conv.weight",
    "resnet": "conv1.weight",
    "basicunet": "conv_0.conv_0.conv.weight",
}
#: the learnt position table of a ViT, interpolated when the patch grid changes
POS_EMBED_KEY = "patch_embedding.position_embeddings"
#: modules whose presence or type depends on a training-time rate, not on the architecture
_REGULARISERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, DropPath)
_SHOWN = 8  # keys listed per category in an error message


@dataclass(frozen=True)
class TargetFamily:
    """How an encoder maps into one kind of network: ``network_key = prefix + encoder_key``.

    ``expected_missing`` are prefixes of the network keys that no encoder provides (decoder, head); every other
    network key that stays unset is reported as ``missing``.
    """

    name: str
    network: type | tuple[type, ...]
    encoders: tuple[str, ...]
    prefix: str = ""
    expected_missing: tuple[str, ...] = ()

    def is_expected_missing(self, key: str) -> bool:
        return key.startswith(self.expected_missing) if self.expected_missing else False


FAMILIES: tuple[TargetFamily, ...] = (
    TargetFamily("UNETR", UNETR, ("vit",), "vit.", ("encoder", "decoder", "out.")),
    TargetFamily("ViT", ViT, ("vit",), "", ("cls_token", "classification_head.")),
    TargetFamily("SwinUNETR", SwinUNETR, ("swin",), "swinViT.", ("encoder", "decoder", "out.")),
    TargetFamily("SwinTransformer", SwinTransformer, ("swin",)),
    TargetFamily("SegResNet", SegResNet, ("segresnet",), "", ("up_layers.", "up_samples.", "conv_final.")),
    TargetFamily("BasicUNet", BasicUNet, ("basicunet",), "", ("upcat_", "final_conv.")),
    TargetFamily("ResNet", ResNet, ("resnet",), "", ("fc.",)),
)

UNSUPPORTED: dict[type, str] = {
    UNet: "MONAI's UNet is built recursively (encoder and decoder interleaved in nested Sequential modules), so "
          "it has no encoder half with stable keys; use BasicUNet with a 'basicunet' encoder",
}


def _registry_name(module: nn.Module) -> str | None:
    return next((name for name, cls in ENCODERS.items() if type(module) is cls), None)


def target_family(into: nn.Module) -> TargetFamily:
    """The family of ``into``; raises :class:`EncoderCardError` for networks without an explicit map."""
    name = _registry_name(into)
    if name is not None:  # before the MONAI classes: ViTEncoder, ResNetEncoder, SwinEncoder subclass them
        return TargetFamily(f"{type(into).__name__} (registry encoder {name!r})", type(into), (name,))
    if isinstance(into, EncoderClassifier):
        inner = _registry_name(into.encoder)
        if inner is None:
            raise EncoderCardError(f"EncoderClassifier wraps a {type(into.encoder).__name__}, which is not a "
                                   f"registered encoder ({sorted(ENCODERS)}); cannot map encoder weights into it")
        return TargetFamily("EncoderClassifier", EncoderClassifier, (inner,), "encoder.", ("head.",))
    for family in FAMILIES:
        if isinstance(into, family.network):
            return family
    for cls, reason in UNSUPPORTED.items():
        if isinstance(into, cls):
            raise EncoderCardError(f"cannot load an encoder into {type(into).__name__}: {reason}")
    supported = ", ".join(f"{f.name} ({'/'.join(f.encoders)})" for f in FAMILIES)
    raise EncoderCardError(f"cannot load an encoder into {type(into).__name__}: no key map for this network. "
                           f"Supported: {supported}, EncoderClassifier and the registry encoders themselves")


def load_into(state: dict[str, torch.Tensor], card: dict[str, Any], into: nn.Module,
              allow_partial: bool = False) -> LoadReport:
    """Place ``state`` (an exported encoder described by ``card``) into ``into``; see :func:`hub.load_encoder`."""
    family = target_family(into)
    arch = card["architecture"]["name"]
    if arch not in family.encoders:
        raise EncoderCardError(f"a {arch!r} encoder cannot initialise this {family.name}: it takes "
                               f"{' or '.join(repr(e) for e in family.encoders)} encoders")
    own = into.state_dict()
    report = LoadReport(module=into, card=card, family=family.name, prefix=family.prefix)
    problems = _check_input(card, own, family, arch) + _structure_differences(card, into, family)

    usable: dict[str, torch.Tensor] = {}
    order = {k: i for i, k in enumerate(own)}  # report in the network's module order, unplaceable keys last
    for key, tensor in sorted(state.items(), key=lambda kv: (order.get(family.prefix + kv[0], len(order)),
                                                             _natural(kv[0]))):
        target = family.prefix + key
        if target not in own:
            report.unexpected.append(key)
            continue
        if own[target].shape != tensor.shape and arch == "vit" and key == POS_EMBED_KEY:
            tensor = _resize_pos_embed(tensor, card, into, family, own[target], report, problems)
        if own[target].shape == tensor.shape:
            usable[target] = tensor
            report.matched.append(target)
        else:
            report.mismatched.append((target, tuple(tensor.shape), tuple(own[target].shape)))
    mismatched = {k for k, _, _ in report.mismatched}
    for key in own:
        if key in usable or key in mismatched:
            continue
        (report.expected_missing if family.is_expected_missing(key) else report.missing).append(key)

    fits = not (problems or report.missing or report.unexpected or report.mismatched)
    if not fits and not allow_partial:
        raise EncoderCardError(_explain(report, problems, f"the {arch!r} encoder does not fit this {family.name}")
                               + " (allow_partial=True loads what fits)")
    if not report.matched:
        raise EncoderCardError(_explain(report, problems, f"no weight of the {arch!r} encoder fits this {family.name}"))
    report.notes.extend(problems)
    into.load_state_dict(usable, strict=False)
    return report


def _explain(report: LoadReport, problems: list[str], headline: str) -> str:
    parts = [f"{headline}: {report.summary()}", *problems]
    if report.missing:
        parts.append(f"missing (network keys the encoder should provide) {_show(report.missing)}")
    if report.unexpected:
        parts.append(f"unexpected (encoder keys with no place in the network) {_show(report.unexpected)}")
    if report.mismatched:
        parts.append(f"shape-mismatched (key: saved -> network) "
                     f"{_show([f'{k}: {list(a)} -> {list(b)}' for k, a, b in report.mismatched])}")
    return "; ".join(parts)


def _natural(key: str) -> list[Any]:
    """Sort key putting ``blocks.2`` before ``blocks.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _show(keys: Sequence[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"[{', '.join(keys[:_SHOWN])}]{more}"


def _check_input(card: dict[str, Any], own: dict[str, torch.Tensor], family: TargetFamily, arch: str) -> list[str]:
    """Compare the card's ``spatial_dims``/``in_channels`` with the network's first convolution."""
    stem = own.get(family.prefix + STEM_KEYS.get(arch, ""))
    if stem is None or stem.ndim < 3:  # e.g. a ViT with a linear ("perceptron") patch embedding
        return []
    dims, channels = stem.ndim - 2, int(stem.shape[1])
    if dims != int(card["spatial_dims"]):
        raise EncoderCardError(f"encoder pretrained in {card['spatial_dims']}D, the {family.name} is {dims}D "
                               f"({family.prefix + STEM_KEYS[arch]} has shape {list(stem.shape)})")
    if channels != int(card["in_channels"]):
        return [f"encoder pretrained on {card['in_channels']} input channel(s), the {family.name} expects "
                f"{channels} ({family.prefix + STEM_KEYS[arch]})"]
    return []


def _structure_differences(card: dict[str, Any], into: nn.Module, family: TargetFamily) -> list[str]:
    """Layer types, attention heads and norm groups of the card's architecture vs the network's modules.

    These can differ while every tensor shape agrees (heads split the same qkv matrix; GroupNorm, InstanceNorm and
    LayerNorm all hold a weight and a bias per channel), which a key/shape check cannot see.
    """
    placed = into.get_submodule(family.prefix.rstrip(".")) if family.prefix else into
    if _registry_name(placed) is not None and encoder_spec(placed) == card["architecture"]:
        return []  # the encoder's place holds the card's own architecture
    with torch.random.fork_rng(devices=[]):  # the reference must not shift the caller's random stream
        reference = build_encoder(**card["architecture"])
    targets = dict(into.named_modules())
    found: dict[str, int] = {}  # one line per difference, repeated blocks folded into "blocks.*"
    for name, ref in reference.named_modules():
        tgt = targets.get(family.prefix + name) if name else None
        if tgt is None or (isinstance(ref, _REGULARISERS) and isinstance(tgt, _REGULARISERS)):
            continue
        where = re.sub(r"\.\d+(?=\.|$)", ".*", family.prefix + name)
        if type(ref) is not type(tgt):
            line = f"{where} is a {type(ref).__name__} in the encoder but a {type(tgt).__name__} in the network"
            found[line] = found.get(line, 0) + 1
            continue
        for attr in ("num_heads", "num_groups"):
            if getattr(ref, attr, None) != getattr(tgt, attr, None):
                line = f"{where}.{attr} is {getattr(ref, attr)} in the encoder but {getattr(tgt, attr)} in the network"
                found[line] = found.get(line, 0) + 1
    out = [line + (f" ({n} modules)" if n > 1 else "") for line, n in found.items()]
    return out[:_SHOWN] + ([f"(+{len(out) - _SHOWN} more structural differences)"] if len(out) > _SHOWN else [])


def _resize_pos_embed(table: torch.Tensor, card: dict[str, Any], into: nn.Module, family: TargetFamily,
                      target: torch.Tensor, report: LoadReport, problems: list[str]) -> torch.Tensor:
    """The saved ``(1, L, D)`` position table on the network's patch grid (recorded in ``report.reshaped`` and
    ``report.notes``), or ``table`` unchanged when it cannot be interpolated (then reported as shape-mismatched)."""
    if table.ndim != 3 or target.ndim != 3 or table.shape[-1] != target.shape[-1]:
        return table  # another token width: a real mismatch
    kwargs, dims = card["architecture"]["kwargs"], int(card["spatial_dims"])
    img, patch = _per_axis(kwargs["img_size"], dims), _per_axis(kwargs["patch_size"], dims)
    old = tuple(i // p for i, p in zip(img, patch))
    new, how = _target_grid(into, family, old, int(target.shape[1]))
    key = family.prefix + POS_EMBED_KEY
    if new is None or math.prod(old) != table.shape[1]:
        problems.append(f"cannot tell the patch grid of the network's {target.shape[1]} position embeddings "
                        f"(pretraining grid {list(old)}), so {key} was not interpolated")
        return table
    report.reshaped.append(key)
    report.notes.append(f"{key}: position embeddings interpolated from the pretraining patch grid {list(old)} "
                        f"(img_size {list(img)}) to the network's grid {list(new)} ({how})")
    return interpolate_pos_embed(table, old, new)


def _per_axis(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)


def _target_grid(into: nn.Module, family: TargetFamily, old: tuple[int, ...],
                 length: int) -> tuple[tuple[int, ...] | None, str]:
    """The network's patch grid of ``length`` cells and where it comes from."""
    vit = into.get_submodule(family.prefix.rstrip(".")) if family.prefix else into
    for grid, source in ((getattr(vit, "grid_shape", None), "the encoder's grid_shape"),
                         (getattr(into, "feat_size", None), "UNETR's feat_size")):
        if grid is not None and math.prod(grid) == length:
            return tuple(int(g) for g in grid), source
    # MONAI's ViT records no image size: only an isotropic grid follows from the table length, and only when the
    # pretraining grid was isotropic too. The note says it was assumed.
    side = round(length ** (1 / len(old)))
    if len(set(old)) == 1 and side ** len(old) == length:
        return (side,) * len(old), ("assumed isotropic: MONAI's ViT does not record its image size; for anisotropic "
                                    "inputs use UNETR, a ViTEncoder or an EncoderClassifier")
    return None, ""
