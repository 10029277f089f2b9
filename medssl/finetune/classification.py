"""Classification fine-tuning of an exported encoder (or of the same architecture from scratch) with Lightning.

:class:`ClassificationFinetuner` wraps an :class:`~medssl.models.classifier.EncoderClassifier`:

* ``init="pretrained"``: the card's architecture is rebuilt and the exported weights loaded into it with
  :func:`medssl.models.hub.load_encoder` (every encoder key must fit; the :class:`~medssl.models.hub.LoadReport`
  is kept as ``load_report`` and its summary logged); only the linear head starts random.
* ``init="scratch"``: the same architecture, randomly initialised from ``seed``; the weights file is never read.
* ``mode="finetune"`` trains everything, after ``freeze_encoder_epochs`` epochs of head-only training;
  ``mode="linear"`` keeps the encoder frozen throughout (a linear probe trained by SGD). A frozen encoder runs in
  eval mode (BatchNorm statistics are not updated) and without gradients.
* ``layer_decay`` < 1 (ViT encoders): layer-wise learning-rate decay as in BEiT / MAE fine-tuning. The head and
  the final norm get ``lr``, ``blocks.i`` get ``lr * layer_decay ** (depth - i)``, the patch and position
  embeddings ``lr * layer_decay ** (depth + 1)``.
* AdamW with linear warmup + cosine decay (:mod:`medssl.training.optim`), the usual no-weight-decay group
  (biases, norm weights, embeddings), cross-entropy loss (two classes: a two-way softmax).
* Validation accuracy, balanced accuracy and AUROC (:func:`medssl.eval.metrics.classification_metrics`) are
  computed at each epoch end on the whole validation set and logged as ``val/*``.

:func:`fit_classifier` is the one-call version used by the protocols: build, train on CPU with the best
checkpoint by validation AUROC (``ModelCheckpoint``) and ``EarlyStopping(patience)``, restore that checkpoint
(``torch.load(weights_only=True)``), and return the test metrics. Runs are deterministic given ``seed``: the model
is initialised and trained inside a forked torch random state seeded from it, and the data order comes from the
loader's own generator, so the caller's global random state is left as it was.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from medssl.eval.metrics import classification_metrics
from medssl.eval.probe import _collate, eval_mode
from medssl.finetune.layer_decay import adamw_warmup_cosine, layer_decay_groups
from medssl.finetune.trainer import check_budget, fit_best
from medssl.models.classifier import EncoderClassifier
from medssl.models.hub import LoadReport, load_encoder, read_card
from medssl.models.registry import build_encoder
from medssl.models.vit import ViTEncoder
from medssl.training.optim import OptimConfig

if TYPE_CHECKING:
    from medssl.data.medmnist import MedMNISTDataset

__all__ = ["ClassificationFinetuner", "fit_classifier", "labelled_set", "predict_proba", "train_classifier"]

INITS = ("pretrained", "scratch")
MODES = ("finetune", "linear")
MONITOR = "val/auroc"
log = logging.getLogger(__name__)


class ClassificationFinetuner(L.LightningModule):
    """A registry encoder + linear head trained with cross-entropy (see module docstring).

    Args:
        num_classes: classes of the single-label task.
        init: ``"pretrained"`` (load ``encoder``) or ``"scratch"`` (random init of the same architecture).
        encoder: path of an exported encoder card (``encoder.json`` or its folder). Required for
            ``init="pretrained"``; with ``init="scratch"`` only its architecture is read (unless ``architecture``).
        architecture: ``{"name", "kwargs"}`` registry spec; taken from the card when None.
        mode: ``"finetune"`` or ``"linear"`` (encoder frozen throughout).
        freeze_encoder_epochs: head-only epochs before the encoder is trained too (``mode="finetune"``).
        layer_decay: layer-wise LR decay for ViT encoders; 1.0 = off.
        encoder_lr_scale: the encoder's LR as a fraction of the head's (discriminative fine-tuning: a pretrained
            encoder moves less than the new head); 1.0 = one LR for all.
        optim: AdamW settings and schedule (``name`` must be ``"adamw"``).
        dropout: dropout on the pooled features before the head.
        seed: seed of the head (and, from scratch, the encoder) initialisation.
    """

    def __init__(self, num_classes: int, init: str = "pretrained", encoder: str | None = None,
                 architecture: dict[str, Any] | None = None, mode: str = "finetune",
                 freeze_encoder_epochs: int = 0, layer_decay: float = 1.0,
                 optim: OptimConfig | dict[str, Any] | None = None, dropout: float = 0.0, seed: int = 0,
                 encoder_lr_scale: float = 1.0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if freeze_encoder_epochs < 0 or not 0 < layer_decay <= 1 or not 0 < encoder_lr_scale <= 1:
            raise ValueError(f"need freeze_encoder_epochs >= 0, 0 < layer_decay <= 1 and 0 < encoder_lr_scale <= 1, "
                             f"got {freeze_encoder_epochs}, {layer_decay} and {encoder_lr_scale}")
        self.optim = OptimConfig(**optim) if isinstance(optim, dict) else (optim or OptimConfig(lr=1e-3))
        if self.optim.name != "adamw":
            raise ValueError(f"classification fine-tuning uses AdamW, got optim.name={self.optim.name!r}")
        card = None
        if encoder is not None:
            card, _ = read_card(encoder)  # the JSON only; weights are read below for init="pretrained"
        elif init == "pretrained":
            raise ValueError("init='pretrained' needs an encoder card (encoder=PATH)")
        if architecture is None:
            if card is None:
                raise ValueError("init='scratch' needs architecture={'name', 'kwargs'} or an encoder card")
            architecture = card["architecture"]
        elif init == "pretrained" and dict(architecture) != card["architecture"]:
            raise ValueError(f"architecture {architecture} differs from the card's {card['architecture']}; "
                             "leave it out to use the card's")
        self.mode, self.init = mode, init
        self.freeze_encoder_epochs, self.layer_decay, self.seed = int(freeze_encoder_epochs), layer_decay, seed
        self.encoder_lr_scale = float(encoder_lr_scale)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = EncoderClassifier(build_encoder(**architecture), num_classes=num_classes, dropout=dropout)
        if layer_decay != 1.0 and not isinstance(self.model.encoder, ViTEncoder):
            raise ValueError(f"layer_decay is defined for ViT encoders (blocks.i), not for "
                             f"{architecture['name']!r}; use layer_decay=1.0")
        self.load_report: LoadReport | None = None
        self.encoder_sha256: str | None = None
        if init == "pretrained":
            self.load_report = load_encoder(encoder, into=self.model)
            self.encoder_sha256 = card["weights"]["sha256"]
            log.info("encoder %s loaded into the classifier: %s", encoder, self.load_report.summary())
        #: parameters meant to train (MONAI's unused cross-attention norms stay frozen when the encoder thaws)
        self._trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        self.val_history: list[dict[str, Any]] = []
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self.save_hyperparameters(ignore=["optim"])
        self.hparams["optim"] = asdict(self.optim)  # plain containers: checkpoints load with weights_only=True
        self.hparams["architecture"] = dict(architecture)
        self.hparams["task"] = "classification"  # what `medssl predict` dispatches on
        self._set_encoder_frozen(self.encoder_frozen)

    # --- freezing ---------------------------------------------------------------------------------------------
    @property
    def encoder_frozen(self) -> bool:
        """Whether the encoder is frozen in the current epoch."""
        return self.mode == "linear" or self.current_epoch < self.freeze_encoder_epochs

    def _set_encoder_frozen(self, frozen: bool) -> None:
        for name, p in self.model.encoder.named_parameters():
            p.requires_grad_(not frozen and f"encoder.{name}" in self._trainable)
        if frozen:
            self.model.encoder.eval()
        elif self.training:
            self.model.encoder.train()

    def train(self, mode: bool = True) -> ClassificationFinetuner:
        super().train(mode)
        if mode and self.encoder_frozen:
            self.model.encoder.eval()  # a frozen encoder never updates its BatchNorm statistics
        return self

    def on_train_epoch_start(self) -> None:
        self._set_encoder_frozen(self.encoder_frozen)
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)  # an augmented train set draws new, reproducible perturbations

    # --- steps ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder_frozen:
            with torch.no_grad():
                features = self.model.encoder(x)
            return self.model.head(self.model.dropout(features))
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_probs, self._val_labels = [], []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self._val_probs.append(logits.float().softmax(dim=1).cpu())
        self._val_labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        y = torch.cat(self._val_labels).numpy()
        metrics = classification_metrics(y, torch.cat(self._val_probs).numpy())
        if math.isnan(metrics["auroc"]):
            raise ValueError(f"validation AUROC is undefined: the validation set holds only class {int(y[0])}; "
                             "best-checkpoint selection needs items of at least two classes")
        for name, value in metrics.items():
            self.log(f"val/{name}", value, prog_bar=name == "auroc")
        if not self.trainer.sanity_checking:
            self.val_history.append({"epoch": int(self.current_epoch), **metrics})

    # --- optimiser --------------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups by (layer-decay scale, weight decay); the encoder is left out in ``linear`` mode.

        Encoder parameters frozen only for the first ``freeze_encoder_epochs`` are included (AdamW skips them
        while their gradient is None), so that they train with the same optimiser and schedule afterwards.
        """
        depth = len(self.model.encoder.blocks) if isinstance(self.model.encoder, ViTEncoder) else 0
        params = [(n, p) for n, p in self.model.named_parameters()
                  if n in self._trainable and not (self.mode == "linear" and n.startswith("encoder."))]
        scale = self.encoder_lr_scale
        return layer_decay_groups(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay,
                                  layer_decay=self.layer_decay, depth=depth, layer_id=_layer_id,
                                  lr_scale=lambda n: scale if n.startswith("encoder.") else 1.0)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self.param_groups(), self.optim, self.trainer.estimated_stepping_batches)


def _layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, ``i + 1`` for ``encoder.blocks.i``, ``depth + 1`` for the final norm and the head."""
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith(("encoder.patch_embedding", "encoder.cls_token")):
        return 0
    return depth + 1


# --- training helpers -----------------------------------------------------------------------------------------
def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=_collate, num_workers=0,
                      generator=torch.Generator().manual_seed(int(seed)))


def predict_proba(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax probabilities (N, C), labels (N,))`` of ``model`` over ``dataset`` in eval mode, in order."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probs, labels = [], []
    with eval_mode(model), torch.no_grad():
        for x, y in _loader(dataset, batch_size, False, 0):
            probs.append(model(x.to(device)).float().softmax(dim=1).cpu())
            labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def train_classifier(module: ClassificationFinetuner, train_ds: Dataset, val_ds: Dataset, *, epochs: int,
                     batch_size: int, seed: int = 0, patience: int | None = None, val_every_n_epochs: int = 1,
                     run_dir: str | Path | None = None, accelerator: str = "cpu",
                     progress: bool = False, ema_decay: float = 0.0, select: str = "best") -> dict[str, Any]:
    """Train ``module`` and leave it holding its best checkpoint by validation AUROC; return what happened.

    ``run_dir`` keeps ``checkpoints/best.ckpt`` and a CSV log (``metrics.csv``); without it both go to a temporary
    folder that is removed afterwards. Validation (and checkpoint selection) runs every ``val_every_n_epochs``
    epochs; ``patience`` (validations without improvement) enables early stopping; None trains all ``epochs``.
    The loop is :func:`medssl.finetune.trainer.fit_best`.
    """
    check_budget(epochs, batch_size, val_every_n_epochs, patience)
    return fit_best(module, _loader(train_ds, batch_size, True, seed), _loader(val_ds, batch_size, False, 0),
                    monitor=MONITOR, mode="max", epochs=epochs, patience=patience,
                    val_every_n_epochs=val_every_n_epochs, run_dir=run_dir, seed=seed, accelerator=accelerator,
                    progress=progress, scratch_prefix="medssl-finetune-", ema_decay=ema_decay,
                    select=select)


def _num_classes(*datasets: Dataset) -> int:
    """``num_classes`` of the underlying MedMNIST dataset (through ``Subset``), else max label + 1."""
    base = datasets[0]
    while isinstance(base, Subset):
        base = base.dataset
    if hasattr(base, "num_classes"):
        return int(base.num_classes)
    found = 0
    for ds in datasets:
        for i in range(len(ds)):
            found = max(found, int(ds[i]["label"]))
    return found + 1


def labelled_set(train: MedMNISTDataset, indices: Sequence[int] | None, *, augment: bool, seed: int) -> Dataset:
    """The labelled items a fine-tuning run trains on: the positions ``indices`` of ``train`` (None: all of them).

    ``augment``: the items perturbed anew every epoch by
    :func:`~medssl.transforms.finetune_augment.finetune_augment` (small affine + intensity; no flips), drawn from
    ``seed`` and the epoch; otherwise the items as stored. Both the few-label protocol and ``medssl finetune``
    build their training set here, so they augment the same way.
    """
    if not augment:
        return train if indices is None else Subset(train, indices)
    from medssl.transforms.finetune_augment import finetune_augment

    return train.subset(range(len(train)) if indices is None else indices, seed=seed,
                        transform=finetune_augment(train.spatial_dims, train.image_shape[1:]))


def fit_classifier(card: str | Path | None, arch_spec: dict[str, Any] | None, train_ds: Dataset,
                   val_ds: Dataset, test_ds: Dataset, *, mode: str = "finetune", epochs: int = 20,
                   batch_size: int = 64, lr: float = 1e-3, seed: int = 0, patience: int | None = 5,
                   min_steps: int = 0, num_classes: int | None = None, freeze_encoder_epochs: int = 0,
                   layer_decay: float = 1.0, weight_decay: float = 0.05, warmup: float = 0.1, dropout: float = 0.0,
                   ema_decay: float = 0.0, select: str = "best", encoder_lr_scale: float = 1.0,
                   run_dir: str | Path | None = None, accelerator: str = "cpu",
                   progress: bool = False) -> dict[str, Any]:
    """Train a classifier and return its metrics on ``test_ds`` (one JSON-serialisable dict).

    ``card`` given: the encoder is loaded from it (``init="pretrained"``); None: ``arch_spec`` is built from
    scratch. ``mode`` is ``"finetune"`` or ``"linear"``. See :func:`train_classifier` for checkpointing and early
    stopping, and :class:`ClassificationFinetuner` for the rest.

    ``min_steps``: a small labelled set gives few optimizer steps per epoch (1% of PneumoniaMNIST is one batch),
    too few to train, or even to settle BatchNorm statistics, in ``epochs`` epochs. When ``epochs`` would give
    fewer than ``min_steps`` steps, every epoch count is stretched by the same whole factor ``k`` (``epochs``,
    ``freeze_encoder_epochs``) and validation runs every ``k`` epochs, so a run still validates ``epochs`` times
    and ``patience`` keeps its meaning. The result records ``max_epochs`` and ``val_every_n_epochs``.

    ``select="last"`` keeps the final epoch's weights, so nothing stops early: ``patience`` is not used.
    """
    t0 = time.perf_counter()
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    stretch = max(1, math.ceil(min_steps / (epochs * steps_per_epoch)))
    module = ClassificationFinetuner(
        num_classes=num_classes or _num_classes(train_ds, val_ds, test_ds),
        init="pretrained" if card is not None else "scratch",
        encoder=None if card is None else str(card), architecture=arch_spec if card is None else None, mode=mode,
        freeze_encoder_epochs=freeze_encoder_epochs * stretch, layer_decay=layer_decay, dropout=dropout, seed=seed,
        encoder_lr_scale=encoder_lr_scale,
        optim=OptimConfig(lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), warmup=warmup))
    info = train_classifier(module, train_ds, val_ds, epochs=epochs * stretch, batch_size=batch_size, seed=seed,
                            patience=None if select == "last" else patience, val_every_n_epochs=stretch,
                            run_dir=run_dir, accelerator=accelerator, progress=progress, ema_decay=ema_decay,
                            select=select)
    probs, labels = predict_proba(module.model, test_ds, batch_size=max(batch_size, 256))
    report = module.load_report
    return {
        "init": module.init, "mode": mode, "split": "test",
        "metrics": classification_metrics(labels, probs),
        **info,
        "max_epochs": epochs * stretch, "val_every_n_epochs": stretch, "steps_per_epoch": steps_per_epoch,
        "ema_decay": ema_decay, "select": select, "encoder_lr_scale": encoder_lr_scale,
        "n_train": len(train_ds), "n_val": len(val_ds), "n_test": len(test_ds),
        "encoder_sha256": module.encoder_sha256,
        "load_report": None if report is None else {"summary": report.summary(), "matched": len(report.matched),
                                                    "expected_missing": report.expected_missing,
                                                    "notes": report.notes},
        "wall_s": round(time.perf_counter() - t0, 2),
    }
