"""Segmentation fine-tuning of an exported encoder (or of the same network from scratch) with Lightning.

:class:`SegmentationFinetuner` wraps the MONAI network that the card's encoder loads into
(:func:`medssl.models.segmenter.build_segmenter`: UNETR, SwinUNETR, SegResNet or BasicUNet), mirroring
:class:`~medssl.finetune.classification.ClassificationFinetuner`:

* ``init="pretrained"``: the exported weights are placed with :func:`medssl.models.hub.load_encoder`, which must
  fill every encoder key (the report is kept as ``load_report``); the decoder starts random from ``seed``.
  ``init="scratch"``: the same network, random from ``seed``; the weights file is never read.
* ``transfer="whole"`` (with ``init="pretrained"``; BasicUNet): the card's pretrained decoder is loaded too
  (:func:`medssl.models.dense_transfer.load_whole_network`), only the head ``final_conv`` starts random; the
  network is built with the decoder's ``upsample`` (another one in ``decoder`` raises). ``"encoder"`` (default)
  loads the encoder alone. The report (``load_report``) then also lists the decoder's keys and why the head was
  re-initialised; freezing still applies to the encoder's keys only.
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

* Regions (``regions={"WT": [1, 2, 3, 4], ...}``, :mod:`medssl.finetune.regions`): with
  ``region_training="sigmoid"`` (default) the network has one output per region, trained as overlapping sigmoid
  channels with MONAI ``DiceLoss(sigmoid=True)`` + ``BCEWithLogitsLoss``; :meth:`predict_volume` thresholds them at
  0.5 and paints the original label values back (``RegionMap.to_labels``). With ``"classes"`` the network is the
  usual softmax over ``num_classes`` labels and only the evaluation is per region. Either way validation Dice is
  per region on the painted label map (the map ``medssl predict`` writes), ``val/dice`` their mean; a region
  absent from both prediction and reference of a case is left out of its mean (:func:`medssl.eval.metrics
  .summarize_cases`).
* Post-processing (``postprocess``, :mod:`medssl.finetune.postprocess`): :meth:`predict_volume` keeps the largest
  connected component of the foreground or of each label when asked (``fit_segmenter(postprocess="auto")`` picks it
  on the validation cases, as nnU-Net does); validation during training scores the raw maps.
* Channels: ``in_channels`` must be the card's (else :class:`~medssl.finetune.seg_cases.SegmentationDataError`
  naming both channel lists) unless ``adapt_channels`` (``"average"`` | ``"repeat"``) asks for an explicit
  first-layer adaptation (the load report then says so); with equal counts, ``channels`` (their names) must be
  the card's where both are known (:func:`medssl.models.hub.check_channels`:
  :class:`~medssl.models.hub.ChannelMismatchError` naming both lists).

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
from monai.losses import DiceCELoss, DiceLoss

from medssl.eval.metrics import region_metrics, segmentation_metrics, summarize_cases
from medssl.eval.probe import eval_mode
from medssl.finetune.seg_cases import SegmentationDataError
from medssl.finetune.layer_decay import adamw_warmup_cosine, layer_decay_groups
from medssl.finetune.seg_data import check_card_dims, resolve_plan
from medssl.finetune.regions import RegionMap
from medssl.finetune.postprocess import apply_postprocess, check_postprocess
from medssl.models.dense_transfer import card_decoder, load_whole_network
from medssl.models.hub import ChannelMismatchError, LoadReport, card_channels, check_channels, load_encoder, read_card
from medssl.models.segmenter import build_segmenter, segmenter_spec
from medssl.models.vit import freeze_unused_cross_attention_norms
from medssl.training.optim import OptimConfig

__all__ = ["MONITOR", "SegmentationFinetuner"]  # + train/evaluate/fit_segmenter, looked up lazily (below)

INITS = ("pretrained", "scratch")
#: what a pretrained init loads: the encoder alone, or encoder + pretrained decoder (all but the head)
TRANSFERS = ("encoder", "whole")
REGION_TRAINING = ("sigmoid", "classes")
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
        regions, region_labels, region_training: region targets and metrics (module docstring).
        channels: the data's channel names (checked against the card's when both are known).
        adapt_channels: ``"average"`` | ``"repeat"``: adapt the first layer when the channel counts differ.
        transfer: ``"encoder"`` or ``"whole"`` (encoder + the card's decoder; module docstring).
        postprocess: what :meth:`predict_volume` does to the label map (:mod:`medssl.finetune.postprocess`:
            ``none``, ``largest_foreground``, ``largest_per_label``); ``fit_segmenter(postprocess="auto")`` sets
            it from the validation cases after training.
        task, network: recorded values, given back by ``load_from_checkpoint`` and checked.
    """

    def __init__(self, num_classes: int, label_names: Sequence[str] | None = None, init: str = "pretrained",
                 encoder: str | None = None, architecture: dict[str, Any] | None = None, spatial_dims: int = 3,
                 in_channels: int | None = None, roi_size: Sequence[int] = (96, 96, 96),
                 plan: dict[str, Any] | None = None, override_plan: bool = False,
                 decoder: dict[str, Any] | None = None, freeze_encoder_epochs: int = 0, layer_decay: float = 1.0,
                 optim: OptimConfig | dict[str, Any] | None = None, sw_overlap: float = 0.25, sw_batch_size: int = 4,
                 seed: int = 0, regions: dict[str, list[int]] | None = None,
                 region_labels: dict[str, int] | None = None, region_training: str = "sigmoid",
                 channels: Sequence[str] | None = None, adapt_channels: str | None = None,
                 transfer: str = "encoder", postprocess: str = "none", task: str = "segmentation",
                 network: dict[str, Any] | None = None):
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
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
        check_postprocess(postprocess)
        if region_training not in REGION_TRAINING:
            raise ValueError(f"region_training must be one of {REGION_TRAINING}, got {region_training!r}")
        self.regions = RegionMap.from_config(regions, region_labels) if regions else None
        if self.regions is not None and self.regions.max_label >= num_classes:
            raise ValueError(f"regions name label {self.regions.max_label}, outside the {num_classes} classes")
        self.sigmoid = self.regions is not None and region_training == "sigmoid"
        channels = None if channels is None else [str(c) for c in channels]
        card = read_card(encoder)[0] if encoder is not None else None
        if card is None and init == "pretrained":
            raise ValueError("init='pretrained' needs an encoder card (encoder=PATH)")
        self._adapt = None
        if card is not None:
            check_card_dims(card, encoder, spatial_dims)
            if architecture is None:
                architecture = card["architecture"]
            elif init == "pretrained" and dict(architecture) != card["architecture"]:
                raise SegmentationDataError(f"architecture {architecture} differs from the card's "
                                            f"{card['architecture']}; leave it out to use the card's", [encoder])
            count = int(in_channels if in_channels is not None else len(channels) if channels is not None
                        else card["in_channels"])
            if init == "pretrained":  # scratch reads only the card's plan and architecture
                if count != int(card["in_channels"]) and adapt_channels is None:
                    raise SegmentationDataError(
                        f"in_channels={count} contradicts the card's {card['in_channels']} (data channels "
                        f"{channels or '(unnamed)'}, the card's {card_channels(card) or '(unnamed)'}); adapt the "
                        "encoder's first layer explicitly with adapt_channels: average | repeat", [encoder])
                self._adapt = check_channels(card, count, channels, adapt_channels, encoder)
            if count != int(card["in_channels"]):  # the network takes the data's channels (stem adapted on load)
                architecture = {**architecture, "kwargs": {**architecture["kwargs"], "in_channels": count}}
            in_channels = count
            if init == "pretrained" and transfer == "whole":  # the segmenter's decoder must be the pretrained one's
                upsample = card_decoder(card, encoder)["upsample"]
                if (decoder or {}).get("upsample", upsample) != upsample:
                    raise SegmentationDataError(
                        f"decoder upsample={decoder['upsample']!r} differs from the pretrained decoder's "
                        f"{upsample!r}; leave it out for whole-network transfer", [encoder])
                decoder = {**(decoder or {}), "upsample": upsample}
        if architecture is None:
            raise ValueError("init='scratch' needs architecture={'name', 'kwargs'} or an encoder card")
        in_channels = int(in_channels if in_channels is not None else architecture["kwargs"]["in_channels"])
        self.plan, self.plan_record = resolve_plan(card, encoder, plan, override_plan)
        self.transfer, self.postprocess = transfer, postprocess
        self.init, self.num_classes, self.label_names, self.spatial_dims = init, int(num_classes), names, spatial_dims
        self.roi_size = [int(r) for r in roi_size]
        self.freeze_encoder_epochs, self.layer_decay, self.seed = int(freeze_encoder_epochs), layer_decay, seed
        self.sw_overlap, self.sw_batch_size = float(sw_overlap), int(sw_batch_size)
        if layer_decay != 1.0 and architecture["name"] != "vit":
            raise ValueError(f"layer_decay is defined for UNETR (vit.blocks.i), not for {architecture['name']!r}")
        if channels is not None and len(channels) != in_channels:
            raise ChannelMismatchError(f"{len(channels)} channel names {channels} for {in_channels} input channel(s)",
                                       None if card is None else card_channels(card), channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            outputs = len(self.regions) if self.sigmoid else num_classes
            self.net = build_segmenter(architecture, num_classes=outputs, spatial_dims=spatial_dims,
                                       in_channels=in_channels, img_size=self.roi_size, options=decoder)
        if architecture["name"] == "vit":
            freeze_unused_cross_attention_norms(self.net.vit.blocks)  # as in ViTEncoder: unused, kept for the keys
        if network is not None and network != segmenter_spec(self.net):
            raise ValueError(f"the recorded network {network} differs from the one these arguments build")
        self.load_report: LoadReport | None = None
        self.encoder_sha256: str | None = None
        if init == "pretrained":
            load = load_whole_network if transfer == "whole" else load_encoder
            self.load_report = load(encoder, into=self.net, adapt_channels=self._adapt)
            self.encoder_sha256 = card["weights"]["sha256"]
        loaded = set(self.load_report.matched) if self.load_report else set()
        self._trainable = {n for n, p in self.net.named_parameters() if p.requires_grad}
        self._encoder_params = {n for n, _ in self.net.named_parameters() if n in loaded}
        self._encoder_modules = _loaded_modules(self.net, loaded)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        if self.sigmoid:
            self.region_dice, self.region_bce = DiceLoss(sigmoid=True), torch.nn.BCEWithLogitsLoss()
        self.val_history: list[dict[str, Any]] = []
        self._val_cases: list[dict[int, float]] = []
        self.save_hyperparameters(ignore=["optim"])
        self.hparams.update({"optim": asdict(self.optim), "architecture": dict(architecture),
                             "plan": self.plan.to_dict(), "label_names": names, "in_channels": in_channels,
                             "roi_size": self.roi_size, "task": "segmentation", "network": segmenter_spec(self.net),
                             "decoder": dict(decoder or {}), "encoder": None if encoder is None else str(encoder),
                             "regions": None if self.regions is None else self.regions.to_config(),
                             "region_labels": None if self.regions is None else self.regions.paint_labels(),
                             "region_training": region_training, "channels": channels,
                             "adapt_channels": self._adapt})
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

    def compute_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Softmax Dice + CE on the labels, or (sigmoid regions) Dice + BCE on each region channel."""
        if not self.sigmoid:
            return self.loss(logits, label)
        target = self.regions.batch_masks(label).to(logits.dtype)
        return self.region_dice(logits, target) + self.region_bce(logits, target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(self.net(batch["image"]), batch["label"])
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

    def logits_to_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """``(*spatial)`` int64 label map (original label values) of ``(outputs, *spatial)`` logits."""
        if self.sigmoid:
            return self.regions.to_labels(logits > 0).cpu()  # sigmoid > 0.5
        return logits.argmax(dim=0).to(torch.int64).cpu()

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """``(*spatial)`` int64 label map of one ``(C, *spatial)`` image (argmax of :meth:`predict_logits`, or its
        region channels thresholded and painted back to labels), post-processed by ``postprocess``."""
        labels = self.logits_to_labels(self.predict_logits(image))
        return labels if self.postprocess == "none" else apply_postprocess(labels, self.postprocess)

    def set_postprocess(self, method: str) -> None:
        """Apply ``method`` (:data:`~medssl.finetune.postprocess.POSTPROCESS`) from now on; recorded in hparams."""
        self.postprocess = check_postprocess(method)
        self.hparams["postprocess"] = method

    def case_metrics(self, pred_labels: torch.Tensor, true_labels: torch.Tensor,
                     spacing: Sequence[float] | None = None, hd95: bool = True) -> dict[str, Any]:
        """Dice and HD95 of one case: per region (:func:`region_metrics`) or per label (:func:`segmentation_metrics`);
        ``hd95=False`` skips the distance transforms (HD95 left NaN) where only Dice is read."""
        if self.regions is not None:
            return region_metrics(self.regions.masks(pred_labels), self.regions.masks(true_labels),
                                  self.regions.names, spacing=spacing, hd95=hd95)
        return segmentation_metrics(pred_labels, true_labels, self.num_classes, spacing=spacing, hd95=hd95)

    def on_validation_epoch_start(self) -> None:
        self._val_cases = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        for image, label in zip(batch["image"], batch["label"]):
            logits = self.predict_logits(image)
            self.log("val/loss", self.compute_loss(logits[None], label[None]), on_epoch=True, batch_size=1)
            # Dice only: validation logs and selects by Dice, HD95 would cost a distance transform per label
            self._val_cases.append(self.case_metrics(self.logits_to_labels(logits), label[0].cpu(), hd95=False))

    def on_validation_epoch_end(self) -> None:
        if not self._val_cases:
            return
        if self.regions is not None:
            summary = summarize_cases(self._val_cases, self.regions.names)
            per_region = {n: v for n, v in summary["dice"].items() if v is not None}
            mean = float(summary["mean_dice"]) if summary["mean_dice"] is not None else 0.0
            self.log(MONITOR, mean, prog_bar=True)
            for n, value in per_region.items():
                self.log(f"val/dice_{re.sub(r'[^0-9a-z]+', '_', n.lower())}", value)
            if not self.trainer.sanity_checking:
                self.val_history.append({"epoch": int(self.current_epoch), "dice": mean,
                                         "dice_per_region": summary["dice"], "absent": summary["absent"]})
            return
        cases = [m["dice"] for m in self._val_cases]
        per_label = {c: float(np.mean([d[c] for d in cases])) for c in cases[0]}
        mean = float(np.mean(list(per_label.values())))
        self.log(MONITOR, mean, prog_bar=True)
        for c, value in per_label.items():
            self.log(f"val/dice_{re.sub(r'[^0-9a-z]+', '_', self.label_names[c].lower())}", value)
        if not self.trainer.sanity_checking:
            self.val_history.append({"epoch": int(self.current_epoch), "dice": mean,
                                     "dice_per_label": {self.label_names[c]: v for c, v in per_label.items()}})

    # --- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["trained_as"] = {"init": self.init, "transfer": self.transfer,
                                    "encoder": self.hparams.get("encoder"), "encoder_sha256": self.encoder_sha256,
                                    "plan_record": self.plan_record}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("trained_as") or {}
        if record:
            self.init, self.encoder_sha256, self.plan_record = record["init"], record["encoder_sha256"], \
                record["plan_record"]
            self.transfer = record.get("transfer", "encoder")
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
