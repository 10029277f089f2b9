"""Online probe: kNN and linear-probe quality of the encoder during pretraining, without a separate fine-tune.

As in solo-learn and lightly, :class:`OnlineProbe` watches representation quality while a method trains: at the
end of validation it extracts frozen features of a fixed, seeded subset of a labelled MedMNIST ``.npz`` (train
split: the probe's training set; val split: its evaluation set) with ``pl_module.encoder_module``, computes
:func:`medssl.eval.probe.probe_report` and logs ``probe/knn_acc``, ``probe/linear_auroc`` ...

It also runs when validation runs outside fitting: the pretraining CLI calls ``trainer.validate`` before
``trainer.fit``, which gives the step-0 (random initialisation) reference the later numbers are compared with.
Every run is appended to :attr:`OnlineProbe.history` and written to ``<run>/probe.json`` (rank zero; NaN written
as null); the history is also kept in checkpoints, so a resumed run continues the same file.

The probe does not disturb exact resume: the subset is drawn from its own ``numpy`` generator, features come
from the encoder in eval mode without gradients, and the loader has its own ``torch`` generator, so the global
random state is the same after a probe as before. Every rank computes the same (deterministic) numbers, which
keeps DDP simple; only rank zero logs and writes. An encoder that cannot take the images (e.g. a ViT built for
another image size) is reported once with both shapes and the probe is switched off; training goes on.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import Subset

from medssl.data.medmnist import MedMNISTDataset
from medssl.errors import MedsslError
from medssl.eval.precise_bn import recalibrated_copy
from medssl.eval.probe import extract_features, probe_report
from medssl.storage.atomic import atomic_write_text

PROBE_FILE = "probe.json"


class OnlineProbe(L.Callback):
    """kNN + linear probe of ``pl_module.encoder_module`` on a labelled MedMNIST file (see module docstring).

    Args:
        path: a MedMNIST ``.npz`` with single-label ``{split}_labels``.
        spatial_dims: 2 or 3, as for :class:`~medssl.data.medmnist.MedMNISTDataset`.
        train_split: split the probes are fitted on.
        eval_split: split they are evaluated on.
        max_train: size of the seeded random subset of ``train_split`` (all items if fewer).
        max_eval: same for ``eval_split``.
        every_n_epochs: probe after the validation of every n-th training epoch (validation outside fitting
            is always probed).
        k: neighbours of the weighted kNN.
        seed: seed of the subsets and of the logistic regression.
        batch_size: batch size of the feature extraction.
        precise_bn: re-estimate BatchNorm statistics on the probe's training images (``precise_bn_batches``
            batches) in a copy of the encoder before extracting features
            (:func:`medssl.eval.precise_bn.recalibrated_copy`); without it, the stale running statistics of a
            short run or of the initialisation distort both the "before" and the "after" numbers.
    """

    def __init__(self, path: str, spatial_dims: int = 2, train_split: str = "train", eval_split: str = "val",
                 max_train: int = 1000, max_eval: int = 500, every_n_epochs: int = 1, k: int = 20, seed: int = 0,
                 batch_size: int = 256, precise_bn: bool = True, precise_bn_batches: int = 8):
        if max_train < 1 or max_eval < 1 or every_n_epochs < 1 or k < 1 or batch_size < 1:
            raise ValueError(f"OnlineProbe needs positive sizes, got max_train={max_train}, max_eval={max_eval}, "
                             f"every_n_epochs={every_n_epochs}, k={k}, batch_size={batch_size}")
        self.path, self.spatial_dims = Path(path), spatial_dims
        self.train_split, self.eval_split = train_split, eval_split
        self.max_train, self.max_eval = max_train, max_eval
        self.every_n_epochs, self.k, self.seed, self.batch_size = every_n_epochs, k, seed, batch_size
        if precise_bn_batches < 1:
            raise ValueError(f"precise_bn_batches must be >= 1, got {precise_bn_batches}")
        self.precise_bn, self.precise_bn_batches = precise_bn, precise_bn_batches
        self.history: list[dict[str, Any]] = []
        self.disabled = False
        self._checked = False
        self._sets: tuple[Subset, Subset] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.path), train_split=self.train_split,
                                        eval_split=self.eval_split)

    @property
    def first(self) -> dict[str, Any] | None:
        """The first probe of the run (the pre-fit validation gives the random-initialisation reference)."""
        return self.history[0] if self.history else None

    @property
    def last(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None

    # --- data ---------------------------------------------------------------------------------------------------
    def _subset(self, split: str, limit: int, stream: int) -> Subset:
        dataset = MedMNISTDataset(self.path, split, spatial_dims=self.spatial_dims, with_labels=True)
        if dataset.multilabel:
            raise ValueError(f"{self.path}: OnlineProbe needs single-label classes, but {split}_labels are "
                             "multi-label")
        rng = np.random.default_rng([self.seed, stream])  # own generator: the global RNG is not touched
        n = len(dataset)
        picks = np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))
        return Subset(dataset, picks.tolist())

    def datasets(self) -> tuple[Subset, Subset]:
        """``(train subset, eval subset)``, loaded on first use."""
        if self._sets is None:
            self._sets = (self._subset(self.train_split, self.max_train, 0),
                          self._subset(self.eval_split, self.max_eval, 1))
        return self._sets

    # --- probing ------------------------------------------------------------------------------------------------
    def _accepts(self, encoder: Any, device: Any) -> bool:
        """One-item trial forward (first probe only); on a shape error warn (naming both shapes) and switch the
        probe off. Later errors are not swallowed."""
        if self._checked:
            return True
        train = self.datasets()[0]
        try:
            extract_features(encoder, Subset(train, [0]), batch_size=1, device=device)
            self._checked = True
            return True
        except (ValueError, RuntimeError, MedsslError) as err:
            expects = {a: getattr(encoder, a) for a in ("in_channels", "spatial_dims", "img_size")
                       if hasattr(encoder, a)}
            image_shape = tuple(train.dataset.image_shape)
            warnings.warn(f"OnlineProbe disabled: {type(encoder).__name__} {expects or ''} cannot encode the "
                          f"probe images of {self.path.name} with shape (B, {', '.join(map(str, image_shape))}) "
                          f"({err})", stacklevel=2)
            self.disabled = True
            return False

    def probe(self, pl_module: L.LightningModule) -> dict[str, float] | None:
        """Features of both subsets with ``pl_module.encoder_module`` and their :func:`probe_report`, or None
        when the probe is disabled."""
        encoder = pl_module.encoder_module
        if self.disabled or not self._accepts(encoder, pl_module.device):
            return None
        train, evaluation = self.datasets()
        if self.precise_bn:
            encoder = recalibrated_copy(encoder, train, batch_size=self.batch_size,
                                        num_batches=self.precise_bn_batches, device=pl_module.device)
        train_x, train_y = extract_features(encoder, train, self.batch_size, pl_module.device)
        eval_x, eval_y = extract_features(encoder, evaluation, self.batch_size, pl_module.device)
        return probe_report(train_x, train_y, eval_x, eval_y, k=self.k, seed=self.seed,
                            num_classes=train.dataset.num_classes)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.disabled:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        report = self.probe(pl_module)
        if report is None:
            return
        for key, value in report.items():
            pl_module.log(f"probe/{key}", value, rank_zero_only=True, sync_dist=False)
        self.history.append({"global_step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
                             "stage": "fit" if fitting else str(trainer.state.fn.value), **report})
        if trainer.is_global_zero:
            entries = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in e.items()}
                       for e in self.history]
            atomic_write_text(Path(trainer.default_root_dir) / PROBE_FILE,
                              json.dumps({"path": str(self.path), "train_split": self.train_split,
                                          "eval_split": self.eval_split, "history": entries}, indent=2) + "\n")

    # --- checkpoint state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(e) for e in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(e) for e in state_dict.get("history", [])]
