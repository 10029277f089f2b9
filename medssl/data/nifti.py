"""NIfTI reading and writing with geometry checks at the boundary.

:func:`read_nifti` returns a :class:`monai.data.MetaTensor` holding the voxels exactly as stored (``X, Y, Z[, T|C]``)
and the nibabel affine (voxel index -> RAS+ mm). Broken files and unusable affines raise :class:`NiftiError` with a
stable :class:`Reason`. :class:`NiftiReader` plugs the same reader into ``monai.transforms.LoadImage(d)``.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import ImageReader, MetaTensor
from monai.data.utils import is_supported_format
from monai.utils import ensure_tuple
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from medssl.errors import NiftiError, Reason
from medssl.storage.atomic import atomic_write

__all__ = ["read_nifti", "write_nifti", "check_same_grid", "NiftiReader", "affine_spacing"]

_SUFFIXES = (".nii", ".nii.gz")
_WRITE_DTYPE = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}
_NIB_ERRORS = (
    nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError, ValueError,
    zlib.error, MemoryError,
)


def affine_spacing(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """Voxel sizes (mm) = norms of the first ``ndim`` direction columns of a 4x4 affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :ndim], axis=0))


def _check_affine(affine: np.ndarray, ndim: int, path: str, rtol: float = 1e-3) -> None:
    """Raise NON_ORTHONORMAL_AFFINE unless the spatial direction columns are finite, non-zero and orthogonal."""
    if not np.all(np.isfinite(affine)):
        raise NiftiError(Reason.NON_ORTHONORMAL_AFFINE, f"affine has non-finite entries: {affine.tolist()}", [path])
    cols = affine[:3, :ndim]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms <= 1e-12 * max(float(norms.max()), 1.0)):
        raise NiftiError(Reason.NON_ORTHONORMAL_AFFINE, f"singular affine (zero voxel size): {affine.tolist()}", [path])
    unit = cols / norms
    err = float(np.abs(unit.T @ unit - np.eye(ndim)).max())
    if err > rtol:
        raise NiftiError(
            Reason.NON_ORTHONORMAL_AFFINE,
            f"affine direction columns are not orthogonal (max |cos| = {err:.2e} > {rtol:g}); "
            "pass check_affine=False to accept sheared (e.g. tilted-gantry) grids",
            [path],
        )


def _load(path: str) -> nib.Nifti1Image:
    """Load header + voxels into memory, mapping every nibabel failure to a :class:`NiftiError`."""
    if not (path.endswith(_SUFFIXES)):
        raise NiftiError(Reason.BAD_NIFTI_HEADER, "not a .nii/.nii.gz file name", [path])
    try:
        img = nib.load(path, mmap=False)
    except FileNotFoundError as e:
        raise NiftiError(Reason.UNREADABLE, f"no such file: {e}", [path]) from e
    except PermissionError as e:
        raise NiftiError(Reason.PERMISSION_DENIED, str(e), [path]) from e
    except _NIB_ERRORS as e:
        raise NiftiError(Reason.BAD_NIFTI_HEADER, f"nibabel cannot read {path}: {e}", [path]) from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(Reason.BAD_NIFTI_HEADER, f"{path} is a {type(img).__name__}, not NIfTI-1/2", [path])
    if len(img.shape) < 2 or any(int(s) <= 0 for s in img.shape):
        raise NiftiError(Reason.BAD_NIFTI_HEADER, f"{path}: invalid dims {tuple(img.shape)} in header", [path])
    return img


def _voxels(img: nib.Nifti1Image, path: str) -> np.ndarray:
    """Stored voxels with scl_slope/scl_inter applied; integers stay integers when the scaling is the identity."""
    try:
        raw = np.asarray(img.dataobj.get_unscaled())
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except _NIB_ERRORS as e:
        raise NiftiError(Reason.BAD_NIFTI_HEADER, f"cannot read voxel data of {path}: {e}", [path]) from e
    if slope == 1.0 and inter == 0.0 and (np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.float32):
        return raw if raw.dtype.isnative else raw.astype(raw.dtype.newbyteorder("="))
    return (raw.astype(np.float64) * slope + inter).astype(np.float32)


def _to_canonical(arr: np.ndarray, affine: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to the closest RAS+ axes (like ``nib.as_closest_canonical``) without touching the dtype."""
    work = arr.reshape(arr.shape[:ndim] + (1,) * (3 - ndim) + arr.shape[ndim:]) if ndim < 3 else arr
    ornt = io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return arr, affine
    out = np.ascontiguousarray(apply_orientation(work, ornt))
    new_affine = affine @ inv_ornt_aff(ornt, work.shape[:3])
    if ndim < 3 and np.all(ornt[ndim:, 0] >= ndim):  # padded singleton axes stayed last: give back the 2D shape
        out = out.reshape(out.shape[:ndim] + out.shape[3:])
    return out, new_affine


def read_nifti(
    path: str | os.PathLike, *, dtype: np.dtype | str | None = None, canonical: bool = False, check_affine: bool = True
) -> MetaTensor:
    """Read a NIfTI-1/2 file into a :class:`MetaTensor` (array as stored, affine = nibabel RAS affine, float64).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        dtype: cast the result to this dtype (default: stored integers when unscaled, else float32).
        canonical: reorient to the closest RAS+ orientation (voxel axes permuted/flipped, affine updated).
        check_affine: reject singular and non-orthogonal (sheared) affines. Non-finite affines are always
            rejected.

    Raises:
        NiftiError: ``BAD_NIFTI_HEADER`` (unreadable, broken header, truncated data, zero/negative dims),
            ``NON_ORTHONORMAL_AFFINE``, ``UNREADABLE`` (missing file), ``PERMISSION_DENIED``.
    """
    name = str(path)
    img = _load(name)
    ndim = min(len(img.shape), 3)
    affine = np.array(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or check_affine:
        _check_affine(affine, ndim, name)
    arr = _voxels(img, name)
    original_affine = affine.copy()
    if canonical:
        arr, affine = _to_canonical(arr, affine, ndim)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    ndim = min(arr.ndim, 3)
    meta: dict[str, Any] = {
        "spacing": affine_spacing(affine, ndim),
        "space": "RAS",
        "filename_or_obj": name,
        "original_affine": original_affine,
        "spatial_shape": tuple(int(s) for s in arr.shape[:ndim]),
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=torch.from_numpy(affine), meta=meta)


def _grid(x: MetaTensor | str | os.PathLike, ndim: int | None = None) -> tuple[tuple[int, ...], np.ndarray, str]:
    """(spatial shape, affine, name) of a MetaTensor or of a file (header only)."""
    if isinstance(x, (str, os.PathLike)):
        img = _load(str(x))
        return tuple(int(s) for s in img.shape[: min(len(img.shape), 3)]), np.asarray(img.affine, float), str(x)
    meta = getattr(x, "meta", {}) or {}
    shape = meta.get("spatial_shape")
    shape = tuple(int(s) for s in (shape if shape is not None else x.shape[: ndim or min(x.ndim, 3)]))
    affine = np.asarray(x.affine if isinstance(x, MetaTensor) else np.eye(4), dtype=np.float64)
    return shape, affine, str(meta.get("filename_or_obj", "<array>"))


def check_same_grid(image: MetaTensor | str | os.PathLike, label: MetaTensor | str | os.PathLike, *,
                    atol: float = 1e-3) -> None:
    """Raise ``NiftiError(SHAPE_MISMATCH)`` unless image and label share spatial shape and affine (within ``atol``).

    The image may carry extra trailing channel/time dimensions; only its spatial part is compared.
    """
    l_shape, l_aff, l_name = _grid(label)
    i_shape, i_aff, i_name = _grid(image, len(l_shape))
    if i_shape[: len(l_shape)] != l_shape:
        raise NiftiError(Reason.SHAPE_MISMATCH, f"spatial shape {i_shape} of {i_name} != {l_shape} of {l_name}",
                         [i_name, l_name])
    if not np.allclose(i_aff, l_aff, atol=atol, rtol=0):
        diff = float(np.abs(i_aff - l_aff).max())
        raise NiftiError(Reason.SHAPE_MISMATCH, f"affines of {i_name} and {l_name} differ (max |diff| {diff:.3g})",
                         [i_name, l_name])


def _as_numpy(data: Any) -> np.ndarray:
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def write_nifti(
    data: MetaTensor | torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray | torch.Tensor | None = None,
    *,
    dtype: np.dtype | str | None = None,
    scl: tuple[float, float] | None = None,
) -> Path:
    """Write ``data`` (``X, Y, Z[, ...]``) atomically to ``.nii``/``.nii.gz`` with qform = sform = ``affine`` (code 1).

    Args:
        data: voxels; a MetaTensor supplies the affine when ``affine`` is None (plain arrays default to identity).
        affine: 4x4 voxel -> RAS mm. Stored as float32 in the header (the NIfTI format's precision).
        dtype: on-disk dtype (default: the data's dtype; bool -> uint8, float16 -> float32).
        scl: ``(slope, inter)``: store ``round((data - inter) / slope)`` as integers (``dtype``, default int16) with
            scl_slope/scl_inter set, like dcm2niix does for CT; readers recover ``raw * slope + inter``.

    Returns:
        The written path.
    """
    path = Path(path)
    name = path.name
    if not name.endswith(_SUFFIXES):
        raise ValueError(f"NIfTI path must end with .nii or .nii.gz, got {name!r}")
    if affine is None:
        affine = data.affine if isinstance(data, MetaTensor) else np.eye(4)
    aff = np.asarray(_as_numpy(affine), dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {aff.shape}")
    arr = _as_numpy(data)
    if scl is not None:
        slope, inter = float(scl[0]), float(scl[1])
        if slope == 0 or not np.isfinite([slope, inter]).all():
            raise ValueError(f"invalid scl (slope, inter) = {scl}")
        out = np.dtype(dtype or np.int16)
        if not np.issubdtype(out, np.integer):
            raise ValueError(f"scl storage needs an integer dtype, got {out}")
        raw = np.round((arr.astype(np.float64) - inter) / slope)
        info = np.iinfo(out)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise ValueError(f"scaled values [{raw.min()}, {raw.max()}] overflow {out}")
        arr = raw.astype(out)
    else:
        slope, inter = 1.0, 0.0
        out = np.dtype(dtype) if dtype is not None else _WRITE_DTYPE.get(arr.dtype, arr.dtype)
        arr = arr.astype(out, copy=False)
    img = nib.Nifti1Image(arr, aff, dtype=out)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(slope, inter)  # explicit: nibabel then writes the raw values unscaled
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=suffix)


class NiftiReader(ImageReader):
    """MONAI ``ImageReader`` backed by :func:`read_nifti` (same validation, same arrays, same affine).

    Usage: ``LoadImaged(keys, reader=NiftiReader())``. Metadata mirrors MONAI's ``NibabelReader``: ``affine``,
    ``original_affine``, ``spatial_shape``, ``original_channel_dim`` (``nan`` = no channel, ``-1`` for 4D), plus
    ``spacing`` and ``space``. No header fields are copied (``descrip``/``aux_file`` may hold free text).
    """

    def __init__(self, *, canonical: bool = False, check_affine: bool = True, dtype: np.dtype | str | None = None,
                 channel_dim: int | str | None = None) -> None:
        super().__init__()
        self.canonical, self.check_affine, self.dtype = canonical, check_affine, dtype
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        return is_supported_format(filename, ["nii", "nii.gz"])

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs: Any) -> MetaTensor | list[MetaTensor]:
        imgs = [read_nifti(f, dtype=self.dtype, canonical=self.canonical, check_affine=self.check_affine)
                for f in ensure_tuple(data)]
        return imgs if len(imgs) > 1 else imgs[0]

    def get_data(self, img: MetaTensor | Sequence[MetaTensor]) -> tuple[np.ndarray, dict]:
        imgs = list(img) if isinstance(img, (list, tuple)) else [img]
        arrays, meta = [], {}
        for t in imgs:
            arr = t.as_tensor().numpy()
            shape = np.asarray(t.meta["spatial_shape"])
            m = {
                "affine": t.affine.numpy().copy(),
                "original_affine": np.asarray(t.meta["original_affine"]).copy(),
                "spatial_shape": shape,
                "spacing": np.asarray(t.meta["spacing"]),
                "space": "RAS",
                "as_closest_canonical": self.canonical,
                "original_channel_dim": (float("nan") if arr.ndim == len(shape) else -1)
                if self.channel_dim is None else self.channel_dim,
            }
            if meta and not (np.allclose(m["affine"], meta["affine"]) and np.array_equal(shape, meta["spatial_shape"])):
                raise NiftiError(Reason.SHAPE_MISMATCH, "files stacked as channels must share shape and affine",
                                 [t.meta["filename_or_obj"] for t in imgs])
            meta = meta or m
            arrays.append(arr)
        if len(arrays) == 1:
            return arrays[0], meta
        meta["original_channel_dim"] = 0
        return np.stack(arrays, axis=0), meta
