"""``medssl predict``: run a fine-tuned segmenter or classifier on new scans.

* :func:`load_checkpoint` reads a Lightning checkpoint with ``torch.load(weights_only=True)`` and rebuilds the model
  its ``hparams["task"]`` names (a checkpoint without ``task`` but with the classifier's hparams is a classifier).
* :func:`predict_segmentation`: each case is loaded on its original grid, preprocessed with the plan the segmenter
  was trained with (``hparams["plan"]``), predicted, and the label map resampled back (nearest neighbour) onto the
  **original grid and affine**. Writes ``<case>_seg.nii.gz``, ``volumes.csv`` (voxels and mm³ per label, from the
  original spacing) and ``predict.json`` (checkpoint sha256, plan, counts, skipped inputs with reason codes). A
  segmenter trained on regions (``hparams["regions"]``) writes the original label values by the rule of
  :mod:`medssl.finetune.regions` (:data:`REGION_RULE`, also recorded in ``predict.json``). Multi-channel cases are
  MSD-named channel files (``case_0000.nii.gz``, ``case_0001.nii.gz`` ...): pass their folder, or the ``_0000``
  file, whose sibling channels are found.
* :func:`predict_classification`: class probabilities per item of a MedMNIST ``.npz`` split, or per volume
  preprocessed with the plan the classifier was trained with (recorded in its hparams or its encoder card).

Outputs name DICOM cases by salted series keys only (see :mod:`medssl.finetune.inputs`): no header identifiers.
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from medssl import __version__
from medssl.storage.atomic import atomic_write_text
from medssl.storage.hashing import file_sha256
from medssl.data.nifti import write_nifti
from medssl.data.plan import PreprocessPlan
from medssl.errors import MedsslError, Reason
from medssl.finetune.inputs import Inputs, PredictInputError, Skip, find_inputs, load_case

__all__ = ["SegmentationPredictor", "CheckpointError", "load_checkpoint", "classifier_plan", "to_original_grid",
           "predict_segmentation", "predict_classification", "run_predict"]

VOLUME_COLUMNS = ("case", "source", "label", "label_name", "voxels", "volume_mm3")
#: how a region-trained segmenter's output becomes the label map written (medssl.finetune.regions)
REGION_RULE = ("region channels thresholded at 0.5 (sigmoid), painted from the largest region to the smallest with "
               "each region's label (region_labels); labels that only a region distinguished are merged (BraTS: "
               "1 necrosis and 3 non-enhancing tumour are both written as the core label)")


class SegmentationPredictor(Protocol):
    """What :func:`predict_segmentation` needs (``SegmentationFinetuner`` is one)."""

    hparams: Mapping[str, Any]  # task="segmentation", plan, num_classes, label_names, in_channels, spatial_dims

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """(C, *spatial) preprocessed image -> (*spatial) int64 label map."""


class CheckpointError(MedsslError):
    """A checkpoint that is missing, unreadable, or holds no model ``medssl predict`` knows."""


# --------------------------------------------------------------------------------------------------- checkpoint
def load_checkpoint(path: str | Path) -> torch.nn.Module:
    """The fine-tuned model in ``path`` (eval mode, CPU), chosen by ``hparams["task"]``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(Reason.UNREADABLE, "checkpoint not found", [path])
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(Reason.UNREADABLE, f"not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})", [path]) from None
    hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    task = hparams.get("task") or ("classification" if {"num_classes", "architecture"} <= set(hparams) else None)
    if task == "segmentation":
        model = _segmenter(hparams, path)
    elif task == "classification":
        model = _classifier(ckpt, hparams, path)
    else:
        raise CheckpointError(Reason.BAD_CONFIG, f"checkpoint hparams name no known task (task={task!r}; "
                              "expected 'segmentation' or 'classification')", [path])
    return model.eval()


def _segmenter(hparams: dict[str, Any], path: Path) -> torch.nn.Module:
    """SegmentationFinetuner rebuilt from scratch (the encoder card need not exist any more), weights loaded."""
    from medssl.finetune.segmentation import SegmentationFinetuner

    try:
        model = SegmentationFinetuner.load_from_checkpoint(path, map_location="cpu", weights_only=True,
                                                           init="scratch", encoder=None)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, MedsslError):
            raise
        raise CheckpointError(Reason.BAD_CONFIG, f"segmenter hparams and weights do not fit "
                              f"({type(exc).__name__}: {str(exc)[:300]})", [path]) from None
    model.hparams.update(hparams)  # the record as trained (init, encoder card)
    return model


def _classifier(ckpt: dict, hparams: dict[str, Any], path: Path) -> torch.nn.Module:
    """Rebuild a ClassificationFinetuner from scratch (the encoder card need not exist any more), load weights."""
    from medssl.finetune.classification import ClassificationFinetuner

    accepted = set(inspect.signature(ClassificationFinetuner.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in hparams.items() if k in accepted} | {"init": "scratch", "encoder": None}
    try:
        model = ClassificationFinetuner(**kwargs)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(Reason.BAD_CONFIG, f"classifier hparams and weights do not fit "
                              f"({type(exc).__name__}: {str(exc)[:300]})", [path]) from None
    model.hparams.update({**hparams, "task": "classification"})  # the record as trained (init, encoder card)
    return model


def classifier_plan(hparams: Mapping[str, Any]) -> PreprocessPlan | None:
    """The plan a classifier's inputs were prepared with: ``hparams["plan"]``, else its encoder card's, else None."""
    if hparams.get("plan"):
        return PreprocessPlan.from_dict(hparams["plan"])
    if hparams.get("encoder"):
        from medssl.models.hub import read_card

        try:
            card, _ = read_card(hparams["encoder"])
        except MedsslError:
            return None
        pre = card.get("preprocessing") or {}
        if pre.get("kind") == "plan" and pre.get("plan"):
            return PreprocessPlan.from_dict(pre["plan"])
    return None


# ------------------------------------------------------------------------------------------------- segmentation
def to_original_grid(labels: torch.Tensor, affine: torch.Tensor, shape: tuple[int, ...],
                     dst_affine: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling of a label map from (``affine``) onto the grid ``shape`` / ``dst_affine``;
    voxels outside the predicted field of view become background (0)."""
    src, dst = torch.as_tensor(affine, dtype=torch.float64), torch.as_tensor(dst_affine, dtype=torch.float64)
    if tuple(labels.shape) == tuple(shape) and torch.allclose(src, dst, atol=1e-6):
        return labels.to(torch.int64)
    img = MetaTensor(labels[None].to(torch.float32), affine=src)
    out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
        img, dst_affine=dst, spatial_size=tuple(int(s) for s in shape))
    return torch.as_tensor(out)[0].round().to(torch.int64)


def _channels_first(volume: MetaTensor) -> torch.Tensor:
    """(X, Y, Z) -> (1, X, Y, Z); (X, Y, Z, C) -> (C, X, Y, Z); a plain tensor."""
    arr = torch.as_tensor(volume)
    return arr[None] if arr.ndim == 3 else arr.movedim(-1, 0)


def _predict_labels(model: SegmentationPredictor, image: torch.Tensor) -> torch.Tensor:
    """Whole-volume prediction (the segmenter owns tiling, and slicing a volume for a 2-D network)."""
    with torch.no_grad():
        return torch.as_tensor(model.predict_volume(image))


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _bar(items: list, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case", disable=not progress)


def _load(inputs: Inputs, case, skipped: list[Skip]) -> MetaTensor | None:
    """The case's volume, or None with a reason-coded skip when its files cannot be read."""
    try:
        return load_case(case, inputs.dicom_options)
    except PredictInputError:
        raise
    except MedsslError as exc:
        skipped.append(Skip(case.name, exc.reason.value, inputs.scrub(exc.detail)))
        return None


def _summary(task: str, out_dir: Path, checkpoint: str | Path | None, extra: dict[str, Any], inputs: Inputs,
             skipped: list[Skip], t0: float) -> dict[str, Any]:
    summary = {"medssl_version": __version__, "task": task,
               "checkpoint": None if checkpoint is None else {"file": Path(checkpoint).name,
                                                              "sha256": file_sha256(checkpoint)},
               **extra, "skipped": [s.to_dict() for s in skipped], "wall_s": round(time.perf_counter() - t0, 2)}
    summary["counts"]["skipped"] = len(skipped)
    atomic_write_text(out_dir / "predict.json", json.dumps(summary, indent=2) + "\n")
    return summary


def predict_segmentation(model: SegmentationPredictor, inputs: Inputs, out_dir: str | Path, *,
                         checkpoint: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Label maps on each case's original grid, ``volumes.csv`` and ``predict.json`` in ``out_dir``; returns the
    summary written to ``predict.json``."""
    t0 = time.perf_counter()
    hp = model.hparams
    if inputs.npz is not None:
        raise PredictInputError(Reason.BAD_CONFIG, "a segmenter needs NIfTI or DICOM volumes, not an .npz",
                                [inputs.npz])
    plan = PreprocessPlan.from_dict(hp["plan"])
    names = list(hp.get("label_names") or [])
    num_classes = int(hp["num_classes"])
    dtype = np.uint8 if num_classes <= 256 else np.int32
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped, rows, written = list(inputs.skipped), [], []
    for case in _bar(inputs.cases, progress, "predict"):
        volume = _load(inputs, case, skipped)
        if volume is None:
            continue
        shape, affine = tuple(volume.shape[:3]), torch.as_tensor(volume.affine, dtype=torch.float64)
        pre = plan.apply(volume)
        labels = _predict_labels(model, _channels_first(pre))
        if tuple(labels.shape) != tuple(pre.shape[:3]):
            raise ValueError(f"case {case.name!r}: the segmenter returned shape {tuple(labels.shape)} for an "
                             f"input of spatial shape {tuple(pre.shape[:3])}")
        labels = to_original_grid(labels, pre.affine, shape, affine).numpy()
        path = write_nifti(labels.astype(dtype), out_dir / f"{case.name}_seg.nii.gz", affine.numpy())
        written.append(path.name)
        voxel_mm3 = float(abs(np.linalg.det(affine.numpy()[:3, :3])))
        counts = np.bincount(labels.reshape(-1).clip(min=0), minlength=num_classes)
        for value in range(1, len(counts)):
            rows.append({"case": case.name, "source": case.source, "label": value,
                         "label_name": names[value] if value < len(names) else "", "voxels": int(counts[value]),
                         "volume_mm3": round(int(counts[value]) * voxel_mm3, 6)})
    atomic_write_text(out_dir / "volumes.csv", _csv(VOLUME_COLUMNS, rows))
    regions = hp.get("regions")
    extra = {"plan": plan.to_dict(), "plan_fingerprint": plan.fingerprint(), "label_names": names,
             **({"regions": regions, "region_labels": hp.get("region_labels"), "region_training":
                 hp.get("region_training"), "label_rule": REGION_RULE} if regions else {}),
             "channels": hp.get("channels"),
             "counts": {"cases": len(inputs.cases), "written": len(written)}, "outputs": written}
    return _summary("segmentation", out_dir, checkpoint, extra, inputs, skipped, t0)


# ----------------------------------------------------------------------------------------------- classification
def _npz_batches(inputs: Inputs, split: str, batch_size: int):
    from medssl.data.medmnist import MedMNISTDataset

    try:
        ds = MedMNISTDataset(inputs.npz, split, with_labels=False)
    except (OSError, ValueError) as exc:
        raise PredictInputError(Reason.UNREADABLE, inputs.scrub(str(exc)), [inputs.npz]) from None
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        yield ([f"{split}_{it['source_index']:05d}" for it in items],
               [f"{inputs.npz.name}:{split}:{it['source_index']}" for it in items],
               torch.stack([torch.as_tensor(it["image"]) for it in items]))


def predict_classification(model: torch.nn.Module, inputs: Inputs, out_dir: str | Path, *, split: str = "test",
                           checkpoint: str | Path | None = None, progress: bool = True,
                           batch_size: int = 64) -> dict[str, Any]:
    """``probabilities.csv`` (``case, source, prob_<class>..., predicted``) and ``predict.json`` in ``out_dir``."""
    t0 = time.perf_counter()
    hp = model.hparams
    out_dir = Path(out_dir)
    plan = classifier_plan(hp)
    if inputs.npz is None and plan is None:
        raise PredictInputError(Reason.BAD_CONFIG, "this classifier records no preprocessing plan (neither in its "
                                "hparams nor in its encoder card), so it can only read a MedMNIST-format .npz",
                                [inputs.root])
    names = [str(n) for n in hp.get("class_names") or range(int(hp["num_classes"]))]
    skipped, rows = list(inputs.skipped), []
    if inputs.npz is not None:
        batches = _npz_batches(inputs, split, batch_size)
    else:
        def volumes():
            for case in _bar(inputs.cases, progress, "predict"):
                volume = _load(inputs, case, skipped)
                if volume is not None:
                    yield [case.name], [case.source], _channels_first(plan.apply(volume))[None]
        batches = volumes()
    with torch.no_grad():
        for cases, sources, x in batches:
            probs = model(x.float()).float().softmax(dim=1).numpy()
            for case, source, p in zip(cases, sources, probs):
                rows.append({"case": case, "source": source, **{f"prob_{n}": round(float(v), 6)
                                                                for n, v in zip(names, p)},
                             "predicted": names[int(np.argmax(p))]})
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ("case", "source", *(f"prob_{n}" for n in names), "predicted")
    atomic_write_text(out_dir / "probabilities.csv", _csv(columns, rows))
    extra = {"plan": None if plan is None else plan.to_dict(), "class_names": names,
             "split": split if inputs.npz is not None else None,
             "counts": {"cases": len(rows) if inputs.npz is not None else len(inputs.cases), "written": len(rows)}}
    return _summary("classification", out_dir, checkpoint, extra, inputs, skipped, t0)


# ---------------------------------------------------------------------------------------------------- one call
def run_predict(checkpoint: str | Path, source: str | Path, out_dir: str | Path, *, split: str | None = None,
                progress: bool = True, tilt: str = "error", uneven: str = "error") -> dict[str, Any]:
    """Load ``checkpoint``, find the cases in ``source``, predict into ``out_dir``; the ``predict.json`` summary.

    DICOM case names are keyed with ``out_dir/salt.txt`` (created once), so re-runs into one folder agree.
    """
    from medssl.data.deid import load_or_create_salt

    model = load_checkpoint(checkpoint)
    task = model.hparams["task"]
    in_channels = int(model.hparams.get("in_channels") or
                      (model.hparams.get("architecture") or {}).get("kwargs", {}).get("in_channels", 1))
    salt = None if Path(source).suffix.lower() == ".npz" else load_or_create_salt(out_dir)
    inputs = find_inputs(source, in_channels=in_channels, salt=salt, tilt=tilt, uneven=uneven)
    if split is not None and inputs.npz is None:
        raise PredictInputError(Reason.BAD_CONFIG, f"--split {split} applies to a MedMNIST .npz input only",
                                [source])
    if task == "segmentation":
        return predict_segmentation(model, inputs, out_dir, checkpoint=checkpoint, progress=progress)
    return predict_classification(model, inputs, out_dir, split=split or "test", checkpoint=checkpoint,
                                  progress=progress)
