"""The YAML config of one fine-tuning run (``medssl finetune --config configs/finetune/<file>.yaml``).

One :class:`FinetuneConfig` describes one model to train for ``medssl predict``: the task, its data, the encoder
(an exported card, or none: the ``architecture`` from scratch) and the training budget. Fields of the other task
are refused, as are unknown fields and out-of-range values: every problem is a
:class:`~medssl.finetune.protocol.ProtocolConfigError` naming the file and the field.

Classification data: a MedMNIST-format ``.npz`` (``path``): its train split (all of it, or a recorded
``label_fraction`` / ``label_count`` subset drawn with ``seed``) trains, its val split selects the best epoch and its
test split is scored. Segmentation data: an MSD folder (``root``) or ``images`` / ``labels`` globs with
``label_names``; the split by case is read from ``split_file`` (or drawn from ``n_val`` / ``n_test`` /
``split_seed`` and written there); all its training cases train unless ``labelled_count`` draws a few.

:meth:`FinetuneConfig.to_dict` is the resolved config (defaults and overrides applied, per-task defaults such as
``batch_size`` filled in) that :func:`medssl.finetune.run.run_finetune` writes next to the checkpoint; it reads
back with :meth:`FinetuneConfig.from_yaml` to the same config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medssl.finetune.config_file import SELECTS, ProtocolConfigError, check_fields, read_yaml_config
from medssl.finetune.seg_options import SEG_OPTION_FIELDS, SegOptions

__all__ = ["FinetuneConfig", "TASKS"]

TASKS = ("classification", "segmentation")
MODES = {"classification": ("finetune", "linear"), "segmentation": ("finetune", "frozen")}
CLASSIFICATION_ONLY = ("path", "label_fraction", "label_count", "stratified", "min_per_class", "dropout", "augment",
                       "encoder_lr_scale", "ema_decay", "select")
SEGMENTATION_ONLY = ("root", "images", "labels", "label_names", "split_file", "n_val", "n_test", "split_seed",
                     "labelled_count", "cache_dir", "plan", "override_plan", "hu_check", "decoder", "transfer",
                     "roi_size", "pos",
                     "neg", "sw_overlap", "sw_batch_size", *SEG_OPTION_FIELDS)
FLOATS = ("label_fraction", "dropout", "encoder_lr_scale", "ema_decay", "pos", "neg", "sw_overlap", "lr",
          "weight_decay", "warmup", "layer_decay")
BATCH_SIZE = {"classification": 64, "segmentation": 2}
TRANSFERS = ("encoder", "whole")  # = medssl.finetune.segmentation.TRANSFERS (not imported: keeps this module light)


@dataclass
class FinetuneConfig(SegOptions):
    """One fine-tuning run (see module docstring). ``mode``: classification ``finetune`` | ``linear`` (encoder
    frozen throughout), segmentation ``finetune`` | ``frozen`` (only the decoder trains); segmentation
    ``transfer``: ``encoder`` (default: the card's encoder, decoder random) | ``whole`` (also the card's pretrained
    decoder; only the head starts random; a restoration method pretrained with ``decoder: basicunet``).
    ``batch_size`` None: 64 for classification, 2 for segmentation. ``accelerator``: Lightning's (``cpu``, ``gpu``, ``auto`` ...).
    The segmentation region / channel / mask / flip options are inherited from
    :class:`~medssl.finetune.seg_options.SegOptions`. Classification training options as in the few-label protocol
    (:class:`~medssl.finetune.protocol.ProtocolConfig`): ``augment``, ``encoder_lr_scale``, ``ema_decay`` and
    ``select`` (``best`` | ``last``; ``patience`` is not used with ``last``)."""

    task: str = ""
    name: str | None = None
    encoder: str | None = None
    architecture: dict[str, Any] | None = None
    spatial_dims: int | None = None
    # classification data
    path: str | None = None
    label_fraction: float | None = None
    label_count: int | None = None
    stratified: bool = True
    min_per_class: int = 1
    dropout: float = 0.0
    augment: bool = False
    encoder_lr_scale: float = 1.0
    ema_decay: float = 0.0
    select: str = "best"
    # segmentation data and network
    root: str | None = None
    images: str | list[str] | None = None
    labels: str | None = None
    label_names: list[str] | None = None
    split_file: str | None = None
    n_val: int = 10
    n_test: int = 40
    split_seed: int = 0
    labelled_count: int | None = None
    cache_dir: str | None = None
    plan: dict[str, Any] | None = None
    override_plan: bool = False
    hu_check: bool = True
    decoder: dict[str, Any] | None = None
    transfer: str = "encoder"
    roi_size: list[int] | None = None
    pos: float = 1.0
    neg: float = 1.0
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    # training
    mode: str = "finetune"
    epochs: int = 20
    min_steps: int = 0
    batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    patience: int | None = 5
    freeze_encoder_epochs: int = 0
    layer_decay: float = 1.0
    seed: int = 0
    accelerator: str = "cpu"

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> FinetuneConfig:
        """Build and :meth:`validate`; unknown fields raise :class:`ProtocolConfigError`."""
        check_fields(cls, data, source)
        return cls(**data).validate(source)

    @classmethod
    def from_yaml(cls, file: str | Path, /, **overrides: Any) -> FinetuneConfig:
        """Read a YAML config; ``overrides`` that are not None (e.g. ``encoder`` from ``--encoder``) replace its
        fields before validation."""
        data = read_yaml_config(file, overrides, "--config")
        return cls.from_dict(data, source=str(file))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-able containers, ``task`` first and the inherited segmentation options last
        (dataclass inheritance lists them first; the written ``config.yaml`` reads better from the task down)."""
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k not in SEG_OPTION_FIELDS},
                **{k: data[k] for k in SEG_OPTION_FIELDS}}

    def validate(self, source: str = "") -> FinetuneConfig:
        """Check every field; raise :class:`ProtocolConfigError` naming the first bad one. Fills per-task
        defaults (``batch_size``, segmentation ``spatial_dims``)."""

        def bad(name: str, message: str) -> ProtocolConfigError:
            return ProtocolConfigError(name, f"{message}, got {getattr(self, name)!r}", source)

        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise bad(name, f"must be {'null or ' if optional else ''}an integer >= {low}")

        def number(name: str, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
                try:
                    value = float(value)
                except ValueError:
                    raise bad(name, "must be a number") from None
                setattr(self, name, value)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not (low < value if open_low else low <= value)
                    or not (value < high if open_high else value <= high)):
                raise bad(name, f"must be a number in {'(' if open_low else '['}{low:g}, {high:g}"
                                f"{')' if open_high else ']'}")

        if self.task not in TASKS:
            raise bad("task", f"required: one of {list(TASKS)}")
        other = SEGMENTATION_ONLY if self.task == "classification" else CLASSIFICATION_ONLY
        defaults = {f.name: f.default for f in fields(self)}
        for name in other:
            if getattr(self, name) != defaults[name]:
                raise bad(name, f"does not apply to task '{self.task}'")
        if self.mode not in MODES[self.task]:
            raise bad("mode", f"must be one of {list(MODES[self.task])} for task '{self.task}'")
        for name in ("encoder", "name", "accelerator"):
            if getattr(self, name) is not None and not (isinstance(getattr(self, name), str) and getattr(self, name)):
                raise bad(name, "must be a non-empty string" + ("" if name == "accelerator" else " or null"))
        if self.architecture is not None and not (isinstance(self.architecture, dict)
                                                  and set(self.architecture) <= {"name", "kwargs"}
                                                  and "name" in self.architecture):
            raise bad("architecture", "must be a mapping {name, kwargs}")
        if self.encoder is None and self.mode != "finetune":
            raise bad("mode", f"'{self.mode}' keeps the encoder as loaded: it needs an encoder card")
        integer("epochs", 1)
        for name in ("min_steps", "freeze_encoder_epochs", "seed"):
            integer(name, 0)
        integer("patience", 1, optional=True)
        self.batch_size = BATCH_SIZE[self.task] if self.batch_size is None else self.batch_size
        integer("batch_size", 1)
        number("lr", 0, float("inf"), open_low=True)
        number("weight_decay", 0, float("inf"))
        number("warmup", 0, float("inf"))
        number("layer_decay", 0, 1, open_low=True)
        if self.task == "classification":
            self._validate_classification(bad, integer, number)
        else:
            self._validate_segmentation(bad, integer, number)
            self.validate_seg_options(self.spatial_dims, source)
        return self

    def _validate_classification(self, bad, integer, number) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise bad("path", "required: the MedMNIST-format .npz to train on")
        if self.encoder is None and self.architecture is None:
            raise bad("architecture", "from scratch (no encoder card; pass --encoder PATH to fine-tune one) the "
                      "architecture {name, kwargs} is required")
        if self.spatial_dims not in (None, 2, 3):
            raise bad("spatial_dims", "must be 2, 3 or null (inferred from the file)")
        if self.label_fraction is not None and self.label_count is not None:
            raise bad("label_count", "give label_fraction or label_count, not both")
        if self.label_fraction is not None:
            number("label_fraction", 0, 1, open_low=True)
        integer("label_count", 1, optional=True)
        integer("min_per_class", 0)
        if not isinstance(self.stratified, bool):
            raise bad("stratified", "must be true or false")
        number("dropout", 0, 1, open_high=True)
        if not isinstance(self.augment, bool):
            raise bad("augment", "must be true or false")
        number("encoder_lr_scale", 0, 1, open_low=True)
        number("ema_decay", 0, 1, open_high=True)
        if self.select not in SELECTS:
            raise bad("select", f"must be one of {list(SELECTS)}")

    def _validate_segmentation(self, bad, integer, number) -> None:
        if (self.root is None) == (self.images is None) or (self.images is not None and self.labels is None):
            raise bad("root", "give an MSD folder 'root', or 'images' and 'labels' patterns (not both)")
        if self.images is not None and not self.label_names:
            raise bad("label_names", "required with 'images'/'labels' (index = label value, 0 = background)")
        if self.label_names is not None and (not isinstance(self.label_names, list) or len(self.label_names) < 2
                                             or not all(isinstance(n, str) for n in self.label_names)):
            raise bad("label_names", "must be a list of >= 2 names (index = label value, 0 = background)")
        if self.encoder is None and (self.architecture is None or self.plan is None):
            raise bad("architecture", "from scratch (no encoder card; pass --encoder PATH to fine-tune one) "
                      "'architecture' and 'plan' are required")
        if self.transfer not in TRANSFERS:
            raise bad("transfer", f"must be one of {list(TRANSFERS)}")
        if self.transfer == "whole" and self.encoder is None:
            raise bad("transfer", "'whole' loads a pretrained encoder and decoder: it needs an encoder card")
        if self.plan is not None and not isinstance(self.plan, dict):
            raise bad("plan", "must be a mapping of PreprocessPlan fields")
        self.spatial_dims = 3 if self.spatial_dims is None else self.spatial_dims
        if self.spatial_dims not in (2, 3):
            raise bad("spatial_dims", "must be 2 or 3")
        if (not isinstance(self.roi_size, list) or len(self.roi_size) != self.spatial_dims
                or not all(isinstance(r, int) and r >= 1 for r in self.roi_size)):
            raise bad("roi_size", f"required: {self.spatial_dims} positive integers (the training crop)")
        for name in ("n_test", "sw_batch_size"):
            integer(name, 1)
        for name in ("n_val", "split_seed"):
            integer(name, 0)
        integer("labelled_count", 1, optional=True)
        for name in ("pos", "neg"):
            number(name, 0, float("inf"))
        number("sw_overlap", 0, 1, open_high=True)
        for name in ("override_plan", "hu_check"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
