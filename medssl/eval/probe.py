"""Representation quality of a frozen encoder: features, weighted kNN, a linear probe and their metrics.

Pure functions on arrays, shared by the online probe during pretraining
(:class:`medssl.training.online_probe.OnlineProbe`) and by the few-label protocols after it:

* :func:`extract_features` runs an encoder (protocol ``encoder(x) -> (B, feature_dim)``) over a dataset of
  ``{"image", "label"}`` items in eval mode without gradients and returns ``float32 (N, D)`` features and
  ``int64 (N,)`` labels (single-label classification only).
* :func:`knn_predict` is the weighted kNN of InstDisc (Wu et al., 2018) and DINO (Caron et al., 2021): cosine
  similarity of L2-normalised features, the ``k`` most similar training items vote for their class with weight
  ``exp(sim / T)``; the votes, normalised to sum 1, are the class probabilities.
* :func:`linear_probe_predict` is multinomial logistic regression on standardised features (scaler fitted on
  the training features only).
* :func:`classification_metrics` and :func:`probe_report` turn probabilities into accuracy, balanced accuracy
  and AUROC.

Nothing here draws from the global random generators (the DataLoader gets its own generator), so a probe run
inside training leaves exact resume intact.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["classification_metrics", "extract_features", "knn_predict", "linear_probe_predict", "probe_report"]

#: Entries of the similarity matrix computed at once by :func:`knn_predict` (64 MiB of float32).
KNN_CHUNK_ELEMENTS = 1 << 24


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module.eval()`` inside the block; afterwards every submodule gets back its own previous mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _label(value: Any, index: int) -> int:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).reshape(-1)
    if arr.size != 1:
        raise ValueError(f"item {index}: label has {arr.size} entries {arr[:8].tolist()}; only single-label "
                         "classification is supported (multi-label datasets such as ChestMNIST are not)")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_ or float(arr[0]).is_integer()):
        raise ValueError(f"item {index}: label {arr[0]!r} is not a class index")
    return int(arr[0])


def _collate(items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i, item in enumerate(items):
        if "label" not in item:
            raise ValueError(f"dataset items need a 'label' entry (found keys {sorted(item)}); "
                             "for MedMNIST pass with_labels=True")
        image = item["image"]
        images.append(image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))
        labels.append(_label(item["label"], i))
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def extract_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 256,
                     device: torch.device | str | None = None, num_workers: int = 0, *,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 (N, D), labels int64 (N,))`` of ``encoder`` over ``dataset``, in dataset order.

    The encoder runs in eval mode under ``torch.no_grad()``; the train/eval mode of each of its submodules is
    restored afterwards. ``device`` defaults to the device of the encoder's first parameter (CPU if it has none).
    Items are dicts with ``"image"`` (Tensor/MetaTensor ``(C, *spatial)``) and ``"label"`` (int, or a 1-element
    array/tensor); a multi-label item raises ValueError. ``progress`` shows a tqdm bar.
    """
    if device is None:
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, generator=torch.Generator())  # own generator: global RNG untouched
    batches: Any = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc="features", unit="batch")
    features, labels = [], []
    with eval_mode(encoder), torch.no_grad():
        for images, y in batches:
            out = encoder(images.to(device, non_blocking=True))
            if out.ndim != 2 or out.shape[0] != images.shape[0]:
                raise ValueError(f"the encoder must return pooled features (B, feature_dim); for input "
                                 f"{tuple(images.shape)} it returned {tuple(out.shape)}")
            features.append(out.detach().float().cpu())
            labels.append(y)
    if not features:
        raise ValueError("empty dataset: no features to extract")
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def _num_classes(num_classes: int | None, *labels: np.ndarray) -> int:
    found = max(int(np.max(y, initial=0)) for y in labels) + 1
    if num_classes is None:
        return found
    if found > num_classes:
        raise ValueError(f"label {found - 1} out of range for num_classes={num_classes}")
    return int(num_classes)


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: expected features (N, D) with N > 0 and N labels, got {x.shape} and {y.shape}")
    if np.any(y < 0):
        raise ValueError(f"{name}: labels must be class indices >= 0")
    return x, y.astype(np.int64)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None) -> np.ndarray:
    """Class probabilities ``(N_test, C)`` of the temperature-weighted cosine kNN (see module docstring).

    ``k`` is capped at the number of training items; ``C`` is ``num_classes`` or ``max(train_y) + 1``. The
    similarity matrix is computed in chunks of test rows, so 50k x 10k items fit in little memory.
    """
    train_x, train_y = _check_xy(train_x, train_y, "knn_predict train")
    test_x = np.asarray(test_x)
    if test_x.ndim != 2 or test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"test features {test_x.shape} do not match train features {train_x.shape}")
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    n_classes = _num_classes(num_classes, train_y)
    k = min(int(k), len(train_x))
    bank = nn.functional.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    queries = nn.functional.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    targets = torch.as_tensor(train_y)
    probs = torch.zeros(len(queries), n_classes, dtype=torch.float64)
    rows = max(1, KNN_CHUNK_ELEMENTS // len(bank))
    for start in range(0, len(queries), rows):
        sim, idx = (queries[start:start + rows] @ bank.T).topk(k, dim=1)
        # exp(sim / T), shifted by the row maximum for stability (cancels in the normalisation)
        weights = ((sim - sim[:, :1]) / temperature).exp().double()
        votes = probs[start:start + rows]
        votes.scatter_add_(1, targets[idx], weights)
        votes /= votes.sum(dim=1, keepdim=True)
    return probs.numpy()


def linear_probe_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, C: float = 1.0,
                         max_iter: int = 1000, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Class probabilities ``(N_test, C)`` of ``StandardScaler -> LogisticRegression`` (L2, inverse strength
    ``C``, lbfgs) fitted on the training features. Columns follow class indices ``0 .. num_classes - 1``; a class
    absent from ``train_y`` gets probability 0."""
    train_x, train_y = _check_xy(train_x, train_y, "linear_probe_predict train")
    n_classes = _num_classes(num_classes, train_y)
    present = np.unique(train_y)
    probs = np.zeros((len(test_x), n_classes), dtype=np.float64)
    if len(present) == 1:  # nothing to separate: LogisticRegression refuses a single class
        probs[:, present[0]] = 1.0
        return probs
    # sklearn is imported on use, so that `import medssl.eval` stays light
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(train_x, train_y)
    probs[:, model.classes_] = model.predict_proba(np.asarray(test_x))
    return probs


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in ``y_true``) and ``auroc``.

    AUROC: with two columns, ``roc_auc_score`` of the positive-class probability; with more, the macro average of
    one-vs-rest AUROCs over the classes present in ``y_true`` (sklearn's ``multi_class="ovr"`` when every class is
    present). NaN, without an error, when ``y_true`` holds fewer than two classes.
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y_true) or len(y_true) == 0:
        raise ValueError(f"expected probabilities (N, C) for N > 0 labels, got {probs.shape} for {y_true.shape}")
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}, got {y_true.min()}..{y_true.max()}")
    pred = probs.argmax(axis=1)
    present = np.unique(y_true)
    recalls = [float(np.mean(pred[y_true == c] == c)) for c in present]
    if len(present) < 2:
        auroc = math.nan
    elif probs.shape[1] == 2:
        auroc = float(roc_auc_score(y_true, probs[:, 1]))
    else:
        auroc = float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in present]))
    return {"accuracy": float(np.mean(pred == y_true)), "balanced_accuracy": float(np.mean(recalls)),
            "auroc": auroc}


def probe_report(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20,
                 temperature: float = 0.07, C: float = 1.0, max_iter: int = 1000, seed: int = 0,
                 num_classes: int | None = None) -> dict[str, float]:
    """kNN and linear-probe metrics of ``test`` given ``train``: ``knn_acc``, ``knn_balanced_acc``,
    ``knn_auroc``, ``linear_acc``, ``linear_balanced_acc``, ``linear_auroc``."""
    test_x, test_y = _check_xy(test_x, test_y, "probe_report test")
    n_classes = _num_classes(num_classes, np.asarray(train_y), test_y)
    short = {"accuracy": "acc", "balanced_accuracy": "balanced_acc", "auroc": "auroc"}
    report: dict[str, float] = {}
    for name, probs in (("knn", knn_predict(train_x, train_y, test_x, k, temperature, n_classes)),
                        ("linear", linear_probe_predict(train_x, train_y, test_x, C, max_iter, seed, n_classes))):
        report.update({f"{name}_{short[m]}": v for m, v in classification_metrics(test_y, probs).items()})
    return report
