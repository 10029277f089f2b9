"""Region / channel / mask / flip / crop-sampling options shared by every segmentation fine-tuning config.

:class:`SegOptions` is a dataclass mixin inherited by :class:`~medssl.finetune.run_config.FinetuneConfig` (one
``medssl finetune`` run) and :class:`~medssl.finetune.seg_protocol.SegProtocolConfig` (the few-label protocol), so a
new option of :func:`~medssl.finetune.seg_fit.fit_segmenter` is declared, validated and passed on in one place:
add the field here, check it in :meth:`SegOptions.validate_seg_options` and hand it over in :func:`seg_options`.

Every field has a default, so the configs' other fields keep theirs; dataclass inheritance puts these fields first
in ``fields()`` / ``asdict()`` order (the configs are only ever built from keywords).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from medssl.finetune.config_file import ProtocolConfigError

__all__ = ["SEG_OPTION_FIELDS", "SegOptions", "seg_options", "task_channels"]


@dataclass
class SegOptions:
    """Tumour-style regions, channel names and adaptation, brain masks and training-crop flips of a segmentation
    config. ``regions`` (``{WT: [1, 2, 3, 4], TC: [1, 3, 4], ET: [4]}``) trains overlapping sigmoid channels
    (``region_training: classes`` keeps softmax classes; ``region_labels`` names each region's label in the
    written maps); ``channel_names`` (default: the MSD ``dataset.json``'s) are checked against the encoder card's
    and ``adapt_channels`` (``average`` | ``repeat``) allows another channel count; ``masks`` (a glob, for
    ``images`` / ``labels`` data) and ``use_masks`` keep background crops inside the masks; ``flip_axes`` are the
    training-crop flips (None = every axis; ``[0]`` = left-right only in RAS); ``class_ratios`` (one weight per label
    value, background first, e.g. ``[1, 1, 2]``) draws training-crop centres per class instead of foreground /
    background (MONAI ``RandCropByLabelClassesd``), so a small structure is seen in a fixed share of the crops;
    ``postprocess`` (``none`` | ``largest_foreground`` | ``largest_per_label`` | ``auto``: chosen on the validation
    cases) keeps the largest connected component(s) of every predicted map (:mod:`medssl.finetune.postprocess`)."""

    regions: dict[str, list[int]] | None = None
    region_labels: dict[str, int] | None = None
    region_training: str = "sigmoid"
    channel_names: list[str] | None = None
    adapt_channels: str | None = None
    masks: str | None = None
    use_masks: bool = True
    flip_axes: list[int] | None = None
    class_ratios: list[float] | None = None
    postprocess: str = "none"

    def validate_seg_options(self, spatial_dims: int, source: str = "") -> None:
        """Raise :class:`ProtocolConfigError` naming the first bad option and the file ``source``; ``spatial_dims``
        bounds ``flip_axes``."""
        from medssl.finetune.regions import settings_error
        from medssl.finetune.seg_data import class_ratios_error, flip_axes_error

        def bad(name: str, message: str) -> ProtocolConfigError:
            return ProtocolConfigError(name, f"{message}, got {getattr(self, name)!r}", source)

        if not isinstance(self.use_masks, bool):
            raise bad("use_masks", "must be true or false")
        if flip_axes_error(self.flip_axes, spatial_dims) is not None:
            raise bad("flip_axes", f"must be null or distinct spatial axes in 0..{spatial_dims - 1}")
        problem = class_ratios_error(self.class_ratios)
        if problem is not None:
            raise ProtocolConfigError("class_ratios", problem, source)
        from medssl.finetune.postprocess import POSTPROCESS_CHOICES

        if self.postprocess not in POSTPROCESS_CHOICES:
            raise bad("postprocess", f"must be one of {list(POSTPROCESS_CHOICES)}")
        problem = settings_error(self.regions, self.region_labels, self.region_training, self.adapt_channels)
        if problem is not None:
            raise bad(*problem)


#: the option names, in declaration order (e.g. the fields a classification run must leave at their defaults)
SEG_OPTION_FIELDS = tuple(f.name for f in fields(SegOptions))


def task_channels(cfg: Any) -> list[str] | None:
    """The cases' channel names: ``cfg.channel_names``, else the MSD ``dataset.json``'s (``cfg.root``), else None."""
    if cfg.channel_names:
        return list(cfg.channel_names)
    if getattr(cfg, "root", None) is None:
        return None
    from medssl.finetune.seg_cases import msd_channel_names

    return msd_channel_names(cfg.root)


def seg_options(cfg: SegOptions) -> dict[str, Any]:
    """The region / channel / mask / flip keyword arguments of :func:`~medssl.finetune.seg_fit.fit_segmenter` in
    ``cfg`` (``masks`` is not among them: it selects the cases' mask files, see ``task_cases``)."""
    return {"regions": cfg.regions, "region_labels": cfg.region_labels, "region_training": cfg.region_training,
            "channel_names": task_channels(cfg), "adapt_channels": cfg.adapt_channels, "use_masks": cfg.use_masks,
            "flip_axes": cfg.flip_axes, "class_ratios": cfg.class_ratios,
            "postprocess": cfg.postprocess}
