"""MedMNIST v2 / MedMNIST+ datasets from the official ``.npz`` releases, as MONAI-style dict items.

An official file holds ``{train,val,test}_images`` (uint8; ``(N, H, W)`` 2D grey, ``(N, H, W, 3)`` 2D RGB,
``(N, D, H, W)`` 3D) and ``{train,val,test}_labels`` (``(N, 1)`` single-label or ``(N, k)`` multi-label).

Items match :class:`~medssl.data.dataset.ScanDataset`: ``{"image": MetaTensor (C, *spatial) float32 in [0, 1],
"label": long tensor, "source_index": int}``. MedMNIST has no physical spacing, so the affine is the identity
(4x4 in 3D, 3x3 in 2D). The optional ``transform`` is re-seeded per item from ``(seed, epoch, index)`` exactly as
in ``ScanDataset``, so an item is the same in whichever worker loads it and :meth:`MedMNISTDataset.set_epoch`
gives a new, reproducible draw per epoch.

An ``.npz`` cannot be memory-mapped, so the requested split is read into memory once (the largest MedMNIST+ 3D
train split, 64^3, is about 0.3 GB of uint8).
"""
from __future__ import annotations

import copy
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medssl.storage.atomic import atomic_write
from medssl.storage.hashing import PathLike

SPLITS = ("train", "val", "test")
#: Official MedMNIST v2 + MedMNIST+ record, as used by the ``medmnist`` package.
ZENODO_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"


def load_medmnist_split(path: PathLike, split: str = "train", *, with_labels: bool = True
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images, labels)`` of one split of an official MedMNIST ``.npz``, validated.

    ``images`` is the raw uint8 array; ``labels`` is ``(N, k)`` integer (a 1-D label vector becomes ``(N, 1)``),
    or None when ``with_labels`` is False. Raises FileNotFoundError for a missing file and ValueError (naming the
    file) for an unreadable archive, an unknown split, a missing key, a wrong dtype or mismatched lengths.
    """
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"{path}: split must be one of {SPLITS}, got {split!r}")
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of arrays, found a single .npy array")
    with npz:
        keys = [f"{split}_images"] + ([f"{split}_labels"] if with_labels else [])
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; the file has {sorted(npz.files)}")
        try:
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"] if with_labels else None
        except ValueError as err:  # object arrays need pickle: refused
            raise ValueError(f"{path}: cannot read split {split!r} without pickle ({err})") from err
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {split}_images must be uint8, got {images.dtype}")
    if images.ndim not in (3, 4):
        raise ValueError(f"{path}: {split}_images must be (N, H, W), (N, H, W, 3) or (N, D, H, W), "
                         f"got shape {images.shape}")
    if labels is not None:
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise ValueError(f"{path}: {split}_labels must be integer, got {labels.dtype}")
        labels = labels.reshape(-1, 1) if labels.ndim == 1 else labels
        if labels.ndim != 2 or len(labels) != len(images):
            raise ValueError(f"{path}: {split}_labels shape {labels.shape} does not match "
                             f"{len(images)} images (expected (N, 1) or (N, k))")
    return images, labels


def infer_spatial_dims(images: np.ndarray, spatial_dims: int | None = None, *, path: PathLike = "") -> int:
    """Spatial dims of a MedMNIST image array: 2 for ``(N, H, W)`` and ``(N, H, W, 3)``, 3 for ``(N, D, H, W)``.

    A 4-D array whose last axis is 3 is read as RGB unless ``spatial_dims=3`` says it is a volume; any other
    disagreement between ``spatial_dims`` and the array raises ValueError naming ``path``.
    """
    if spatial_dims is not None and spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if images.ndim == 3:
        inferred = 2
    elif images.ndim == 4:
        inferred = 2 if images.shape[-1] == 3 and spatial_dims != 3 else 3
    else:
        raise ValueError(f"{path}: cannot infer spatial dims from image array shape {images.shape}")
    if spatial_dims is not None and spatial_dims != inferred:
        raise ValueError(f"{path}: spatial_dims={spatial_dims} contradicts the file, whose images "
                         f"{images.shape} are {inferred}D")
    return inferred


class MedMNISTDataset(Dataset):
    """One split of an official MedMNIST ``.npz`` (see module docstring for the item format).

    Args:
        path: the ``.npz`` file (e.g. ``pneumoniamnist.npz``, ``adrenalmnist3d_64.npz``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        spatial_dims: 2 or 3; inferred from the array when None, ValueError if it contradicts the file.
        indices: optional subset of the split (e.g. a label fraction); ``source_index`` keeps the split index.
        transform: optional MONAI dictionary transform applied last (re-seeded per item if randomizable).
        seed: base seed of the transform randomness.
        with_labels: include ``"label"`` (single-label: scalar long; multi-label: ``(k,)`` long).
    """

    def __init__(self, path: PathLike, split: str = "train", *, spatial_dims: int | None = None,
                 indices: Sequence[int] | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, seed: int = 0,
                 with_labels: bool = True):
        self.path = Path(path)
        self.split = split
        self.images, self.labels = load_medmnist_split(self.path, split, with_labels=with_labels)
        self.spatial_dims = infer_spatial_dims(self.images, spatial_dims, path=self.path)
        n = len(self.images)
        if indices is None:
            self.indices = np.arange(n)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            bad = self.indices[(self.indices < 0) | (self.indices >= n)]
            if bad.size:
                raise ValueError(f"{self.path}: indices {bad[:5].tolist()} out of range for the {n} "
                                 f"{split} images")
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.with_labels = with_labels
        self._num_classes: int | None = None

    @property
    def rgb(self) -> bool:
        """Whether images are 2D RGB (3 channels, stored channel-last)."""
        return self.spatial_dims == 2 and self.images.ndim == 4

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)``: the shape of every item's ``"image"`` before the transform."""
        spatial = self.images.shape[1:-1] if self.rgb else self.images.shape[1:]
        return (3 if self.rgb else 1, *spatial)

    @property
    def multilabel(self) -> bool:
        """True for ``(N, k)`` labels with k > 1 (e.g. ChestMNIST)."""
        labels = self.labels if self.labels is not None else _file_labels(self.path).get(self.split)
        if labels is None:
            raise ValueError(f"{self.path}: no {self.split}_labels in the file")
        return labels.ndim == 2 and labels.shape[1] > 1

    @property
    def num_classes(self) -> int:
        """Multi-label: k; single-label: max label + 1 over all splits of the file (not only this one)."""
        if self._num_classes is None:
            labels = _file_labels(self.path)
            if self.multilabel:
                self._num_classes = int(labels[self.split].shape[1])
            else:
                self._num_classes = max(int(v.max(initial=0)) for v in labels.values()) + 1
        return self._num_classes

    def subset(self, indices: Sequence[int], *, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
               seed: int = 0) -> MedMNISTDataset:
        """The items at positions ``indices`` of this dataset, with their own ``transform`` and ``seed``; the arrays
        are shared, not read from the file again (``source_index`` stays the split index)."""
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if positions.size and not (0 <= positions.min() and positions.max() < len(self)):
            raise ValueError(f"{self.path}: subset positions out of range for {len(self)} items")
        out = copy.copy(self)
        out.indices, out.transform, out.seed, out.epoch = self.indices[positions], transform, seed, 0
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the transform randomness of this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        index %= n
        src = int(self.indices[index])
        arr = torch.from_numpy(np.ascontiguousarray(self.images[src]))
        arr = arr.movedim(-1, 0) if self.rgb else arr.unsqueeze(0)
        affine = torch.eye(self.spatial_dims + 1, dtype=torch.float64)
        image = MetaTensor(arr.to(torch.float32).div_(255.0), affine=affine)
        data: dict[str, Any] = {"image": image, "source_index": src}
        if self.labels is not None:
            label = torch.as_tensor(self.labels[src].astype(np.int64))
            data["label"] = label if self.labels.shape[1] > 1 else label[0]
        if self.transform is not None:
            transform_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)[1]
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=int(transform_seed))
            data = self.transform(data)
        return data



def _file_labels(path: Path) -> dict[str, np.ndarray]:
    """The label arrays of every split present in the file (small: read without the images)."""
    with np.load(path, allow_pickle=False) as npz:
        return {s: npz[f"{s}_labels"] for s in SPLITS if f"{s}_labels" in npz.files}


def download_medmnist(flag: str, size: int | None = None, root: PathLike = ".", *, overwrite: bool = False,
                      timeout: float = 60.0) -> Path:
    """Download ``{flag}.npz`` (size None or 28) or ``{flag}_{size}.npz`` from the official Zenodo record into
    ``root`` and check that its train split loads; an existing file is only checked unless ``overwrite``.

    ``flag`` is the MedMNIST name in lower case (``"pneumoniamnist"``, ``"adrenalmnist3d"``); ``size`` one of
    28, 64, 128, 224 (2D) or 28, 64 (3D). The file is written atomically, so an interrupted download leaves
    nothing behind.
    """
    if not flag.isidentifier() or flag != flag.lower():
        raise ValueError(f"flag must be a lower-case MedMNIST name such as 'pneumoniamnist', got {flag!r}")
    name = flag if size in (None, 28) else f"{flag}_{int(size)}"
    path = Path(root) / f"{name}.npz"
    if overwrite or not path.is_file():
        url = ZENODO_URL.format(name=name)

        def fetch(tmp: str) -> None:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
            load_medmnist_split(tmp, "train")  # an error page or a truncated file never replaces ``path``

        atomic_write(path, fetch, suffix=".npz")
    else:
        load_medmnist_split(path, "train")
    return path
