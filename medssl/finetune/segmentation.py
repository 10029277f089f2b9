"""Segmentation fine-tuning of an exported encoder (or of the same network from scratch) with Lightning.

:class:`SegmentationFinetuner` wraps the MONAI network that the card's encoder loads into
(:func:`medssl.models.segmenter.build_segmenter`: UNETR, SwinUNETR, SegResNet or BasicUNet), mirroring
:class:`~medssl.finetune.classification.ClassificationFinetuner`:

* ``init="pretrained"``: the exported weights are placed with :func:`medssl.models.hub.load_encoder`, which must
  fill every encoder key (the report is kept as ``load_report``); the decoder starts random from ``seed``.
  ``init="scratch"``: the same network, random from ``seed``; the weights file is never read.
* ``freeze_encoder_epochs``: for the first epochs exactly the parameters that ``load_encoder`` filled
  (``report.matched``) are frozen, and the modules holding only such tensors run in eval mode (no dropout, no
  norm statistics updates). With ``init="scratch"`` nothing was loaded and nothing is frozen.
* ``layer_decay`` < 1 (UNETR only): ``vit.blocks.i`` train at ``lr * layer_decay ** (12 - i)``, the patch embedding
  at ``lr * layer_decay ** 13``, the decoder and ``vit.norm`` at ``lr``.
* Loss: MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``; AdamW (no weight decay on biases, norms and
  position tables) with linear warmup + cosine decay (:mod:`medssl.training.optim`).
* Validation: whole volumes by ``sliding_window_inference`` (Gaussian-weighted windows of ``roi_size``), per-label
  Dice by :func:`medssl.eval.metrics.segmentation_metrics`, logged as ``val/dice`` (mean over foreground labels of
  the per-case mean) and ``val/dice_<label>``. A 2-D network segments a volume slice by slice along its last axis.

Everything in ``hparams`` is a plain container (``task="segmentation"``, the resolved ``plan``, ``label_names``,
``num_classes``, ``spatial_dims``, ``in_channels``, ``roi_size``, ``architecture``, the ``network`` spec), so
checkpoints load with ``torch.load(weights_only=True)``. :meth:`SegmentationFinetuner.load_from_checkpoint`
rebuilds the network from these records without reading the encoder card (every weight is in the checkpoint), so a
checkpoint stays usable after the card moves; the trained record (``init``, ``encoder``, its SHA-256, where the
plan came from: ``plan_record``) is restored from the checkpoint.

:func:`train_segmenter` (best checkpoint by ``val/dice``, early stopping), :func:`evaluate_segmenter` and
:func:`fit_segmenter` (cases in, test Dice and HD95 in mm per label out) live in :mod:`medssl.finetune.seg_fit`
and are importable from here too. Metrics are computed on the plan's grid (the grid the network sees).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from medssl.eval.metrics import segmentation_metrics
from medssl.eval.probe import eval_mode
from medssl.finetune.seg_cases import SegmentationDataError
from medssl.finetune.layer_decay import adamw_warmup_cosine, layer_decay_groups
from medssl.finetune.seg_data import check_card_dims, resolve_plan
from medssl.models.hub import LoadReport, load_encoder, read_card
from medssl.models.segmenter import build_segmenter, segmenter_spec
from medssl.models.vit import freeze_unused_cross_attention_norms
from medssl.training.optim import OptimConfig

__all__ = ["MONITOR", "SegmentationFinetuner"]  # + train/evaluate/fit_segmenter, looked up lazily (below)

INITS = ("pretrained", "scratch")
MONITOR = "val/dice"


class SegmentationFinetuner(L.LightningModule):
    """A MONAI segmentation network initialised from an encoder card (see module docstring).

    Args:
        num_classes: classes including the background (label 0).
        label_names: one name per class (default ``background``, ``1``, ``2`` ...).
        init: ``"pretrained"`` or ``"scratch"``.
        encoder: encoder card path; required for ``"pretrained"``.
        architecture: registry spec of the encoder; taken from the card when None.
        spatial_dims, in_channels: the task's; must agree with the card (``in_channels`` defaults to it).
        roi_size: training crop and inference window (``img_size`` of UNETR).
        plan: preprocessing (dict); default the card's; must equal it unless ``override_plan``.
        decoder: decoder-only network options (:func:`build_segmenter`'s ``options``).
        freeze_encoder_epochs, layer_decay, optim, sw_overlap, sw_batch_size, seed: see module docstring.
        task, network: recorded values, given back by ``load_from_checkpoint`` and checked.
    """

    def __init__(self, num_classes: int, label_names: Sequence[str] | None = None, init: str = "pretrained",
                 encoder: str | None = None, architecture: dict[str, Any] | None = None, spatial_dims: int = 3,
                 in_channels: int | None = None, roi_size: Sequence[int] = (96, 96, 96),
                 plan: dict[str, Any] | None = None, override_plan: bool = False,
                 decoder: dict[str, Any] | None = None, freeze_encoder_epochs: int = 0, layer_decay: float = 1.0,
                 optim: OptimConfig | dict[str, Any] | None = None, sw_overlap: float = 0.25, sw_batch_size: int = 4,
                 seed: int = 0, task: str = "segmentation", network: dict[str, Any] | None = None):
        super().__init__()
        names = list(label_names) if label_names is not None else ["background", *map(str, range(1, num_classes))]
        if init not in INITS or task != "segmentation" or len(names) != num_classes or num_classes < 2:
            raise ValueError(f"need init in {INITS}, task 'segmentation', num_classes >= 2 and one label name per "
                             f"class; got {init!r}, {task!r}, {num_classes}, {names}")
        if freeze_encoder_epochs < 0 or not 0 < layer_decay <= 1 or not 0 <= sw_overlap < 1:
            raise ValueError(f"need freeze_encoder_epochs >= 0, 0 < layer_decay <= 1 and 0 <= sw_overlap < 1, got "
                             f"{freeze_encoder_epochs}, {layer_decay}, {sw_overlap}")
        self.optim = OptimConfig(**optim) if isinstance(optim, dict) else (optim or OptimConfig(lr=1e-3))
        if self.optim.name != "adamw":
            raise ValueError(f"segmentation fine-tuning uses AdamW, got optim.name={self.optim.name!r}")
        card = read_card(encoder)[0] if encoder is not None else None
        if card is None and init == "pretrained":
            raise ValueError("init='pretrained' needs an encoder card (encoder=PATH)")
        if card is not None:
            check_card_dims(card, encoder, spatial_dims)
            if architecture is None:
                architecture = card["architecture"]
            elif init == "pretrained" and dict(architecture) != card["architecture"]:
                raise SegmentationDataError(f"architecture {architecture} differs from the card's "
                                            f"{card['architecture']}; leave it out to use the card's", [encoder])
            if in_channels is not None and int(in_channels) != int(card["in_channels"]):
                raise SegmentationDataError(f"in_channels={in_channels} contradicts the card's "
                                            f"{card['in_channels']}", [encoder])
            in_channels = int(card["in_channels"])
        if architecture is None:
            raise ValueError("init='scratch' needs architecture={'name', 'kwargs'} or an encoder card")
        in_channels = int(in_channels if in_channels is not None else architecture["kwargs"]["in_channels"])
        self.plan, self.plan_record = resolve_plan(card, encoder, plan, override_plan)
        self.init, self.num_classes, self.label_names, self.spatial_dims = init, int(num_classes), names, spatial_dims
        self.roi_size = [int(r) for r in roi_size]
        self.freeze_encoder_epochs, self.layer_decay, self.seed = int(freeze_encoder_epochs), layer_decay, seed
        self.sw_overlap, self.sw_batch_size = float(sw_overlap), int(sw_batch_size)
        if layer_decay != 1.0 and architecture["name"] != "vit":
            raise ValueError(f"layer_decay is defined for UNETR (vit.blocks.i), not for {architecture['name']!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_segmenter(architecture, num_classes=num_classes, spatial_dims=spatial_dims,
                                       in_channels=in_channels, img_size=self.roi_size, options=decoder)
        if architecture["name"] == "vit":
            freeze_unused_cross_attention_norms(self.net.vit.blocks)  # as in ViTEncoder: unused, kept for the keys
        if network is not None and network != segmenter_spec(self.net):
            raise ValueError(f"the recorded network {network} differs from the one these arguments build")
        self.load_report: LoadReport | None = None
        self.encoder_sha256: str | None = None
        if init == "pretrained":
            self.load_report = load_encoder(encoder, into=self.net)
            self.encoder_sha256 = card["weights"]["sha256"]
        loaded = set(self.load_report.matched) if self.load_report else set()
        self._trainable = {n for n, p in self.net.named_parameters() if p.requires_grad}
        self._encoder_params = {n for n, _ in self.net.named_parameters() if n in loaded}
        self._encoder_modules = _loaded_modules(self.net, loaded)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.val_history: list[dict[str, Any]] = []
        self._val_cases: list[dict[int, float]] = []
        self.save_hyperparameters(ignore=["optim"])
        self.hparams.update({"optim": asdict(self.optim), "architecture": dict(architecture),
                             "plan": self.plan.to_dict(), "label_names": names, "in_channels": in_channels,
                             "roi_size": self.roi_size, "task": "segmentation", "network": segmenter_spec(self.net),
                             "decoder": dict(decoder or {}), "encoder": None if encoder is None else str(encoder)})
        self._set_encoder_frozen(self.encoder_frozen)

    # --- freezing ---------------------------------------------------------------------------------------------
    @property
    def encoder_frozen(self) -> bool:
        """Whether the loaded encoder parameters are frozen in the current epoch."""
        return bool(self._encoder_params) and self.current_epoch < self.freeze_encoder_epochs

    def _set_encoder_frozen(self, frozen: bool) -> None:
        for name, p in self.net.named_parameters():
            if name in self._encoder_params:
                p.requires_grad_(not frozen and name in self._trainable)
        for m in self._encoder_modules:
            m.train(not frozen and self.training)

    def train(self, mode: bool = True) -> SegmentationFinetuner:
        super().train(mode)
        if mode and self.encoder_frozen:
            for m in self._encoder_modules:
                m.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self._set_encoder_frozen(self.encoder_frozen)
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)  # reproducible, different crops per epoch

    # --- steps ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """``(num_classes, *spatial)`` logits of one ``(C, *spatial)`` image: sliding window, eval mode, no grad.

        A 2-D network also takes a ``(C, X, Y, Z)`` volume: its slices along the last axis form the batch."""
        x = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image).to(self.device).float()
        slices = self.spatial_dims == 2 and x.ndim == 4
        if x.ndim != self.spatial_dims + 1 and not slices:
            raise ValueError(f"expected a (C, <{self.spatial_dims} spatial axes>) image, got {tuple(x.shape)}")
        with eval_mode(self.net), torch.no_grad():
            batch = x.movedim(-1, 0) if slices else x[None]
            out = sliding_window_inference(batch, self.roi_size, self.sw_batch_size, self.net,
                                           overlap=self.sw_overlap, mode="gaussian")
        out = torch.as_tensor(out)
        return out.movedim(0, -1) if slices else out[0]

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """``(*spatial)`` int64 label map of one ``(C, *spatial)`` image (argmax of :meth:`predict_logits`)."""
        return self.predict_logits(image).argmax(dim=0).to(torch.int64).cpu()

    def on_validation_epoch_start(self) -> None:
        self._val_cases = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        for image, label in zip(batch["image"], batch["label"]):
            logits = self.predict_logits(image)
            self.log("val/loss", self.loss(logits[None], label[None]), on_epoch=True, batch_size=1)
            metrics = segmentation_metrics(logits.argmax(0).cpu(), label[0].cpu(), self.num_classes)
            self._val_cases.append(metrics["dice"])

    def on_validation_epoch_end(self) -> None:
        if not self._val_cases:
            return
        per_label = {c: float(np.mean([d[c] for d in self._val_cases])) for c in self._val_cases[0]}
        mean = float(np.mean(list(per_label.values())))
        self.log(MONITOR, mean, prog_bar=True)
        for c, value in per_label.items():
            self.log(f"val/dice_{re.sub(r'[^0-9a-z]+', '_', self.label_names[c].lower())}", value)
        if not self.trainer.sanity_checking:
            self.val_history.append({"epoch": int(self.current_epoch), "dice": mean,
                                     "dice_per_label": {self.label_names[c]: v for c, v in per_label.items()}})

    # --- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["trained_as"] = {"init": self.init, "encoder": self.hparams.get("encoder"),
                                    "encoder_sha256": self.encoder_sha256, "plan_record": self.plan_record}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("trained_as") or {}
        if record:
            self.init, self.encoder_sha256, self.plan_record = record["init"], record["encoder_sha256"], \
                record["plan_record"]
            self.hparams.update({"init": record["init"], "encoder": record["encoder"]})

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> SegmentationFinetuner:
        """Lightning's loader, but the network is rebuilt from the recorded ``architecture``, ``plan`` and
        ``network`` without reading the encoder card (pass ``init``/``encoder`` to override)."""
        kwargs.setdefault("init", "scratch")
        kwargs.setdefault("encoder", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # --- optimiser --------------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups by (layer-decay scale, weight decay); parameters frozen only for the first epochs are in."""
        depth = len(self.net.vit.blocks) if hasattr(self.net, "vit") else 0
        params = [(n, p) for n, p in self.net.named_parameters() if n in self._trainable]
        return layer_decay_groups(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay,
                                  layer_decay=self.layer_decay, depth=depth, layer_id=_layer_id)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self.param_groups(), self.optim, self.trainer.estimated_stepping_batches)


def _layer_id(name: str, depth: int) -> int:
    """0 for UNETR's patch embedding, ``i + 1`` for ``vit.blocks.i``, ``depth + 1`` for everything else."""
    if name.startswith("vit.blocks."):
        return int(name.split(".")[2]) + 1
    return 0 if name.startswith("vit.patch_embedding") else depth + 1


def _loaded_modules(net: torch.nn.Module, loaded: set[str]) -> list[torch.nn.Module]:
    """The outermost modules all of whose tensors (parameters and buffers) came from the encoder."""
    full, partial = set(), set()
    for key in net.state_dict():
        parts = key.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            (full if key in loaded else partial).add(".".join(parts[:i]))
    names = full - partial
    outer = [n for n in names if not any(n.startswith(o + ".") for o in names)]
    return [net.get_submodule(n) for n in sorted(outer)]



_FIT = ("train_segmenter", "evaluate_segmenter", "fit_segmenter")


def __getattr__(name: str) -> Any:
    """``from medssl.finetune.segmentation import fit_segmenter`` etc.: they live in ``seg_fit`` (which imports
    this module, hence the lazy lookup)."""
    if name in _FIT:
        from medssl.finetune import seg_fit

        return getattr(seg_fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
