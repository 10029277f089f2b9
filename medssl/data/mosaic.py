"""Siemens mosaic images: several slices tiled into one frame.

A mosaic file stores ``n`` slices of ``r x c`` pixels as a ``ceil(sqrt(n))`` square grid of tiles. Its
ImagePositionPatient refers to the top-left corner of the *whole* mosaic, so the position of the first slice must be
shifted by half the size difference between mosaic and tile; the slice direction (and its sign) comes from the
CSA image header's ``SliceNormalVector``. The CSA header is parsed with nibabel's reader.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from medssl.errors import DicomFileError, Reason


def csa_value(ds, name: str):
    """A scalar (or vector) from the Siemens CSA *image* header, or None when absent/unparseable."""
    try:
        with warnings.catch_warnings():  # nibabel flags nicom as experimental; we only use its CSA parser
            warnings.simplefilter("ignore", UserWarning)
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
        if not csa:
            return None
        items = csa["tags"].get(name, {}).get("items") or []
    except Exception:  # noqa: BLE001 - private vendor header: absence or corruption just means "unknown"
        return None
    if not items:
        return None
    return items[0] if len(items) == 1 else list(items)


def mosaic_grid(rows: int, columns: int, n_images: int) -> tuple[int, int, int]:
    """(tiles per side, tile rows, tile columns) of a mosaic frame."""
    tiles = int(math.ceil(math.sqrt(n_images)))
    if rows % tiles or columns % tiles:
        raise ValueError(f"mosaic {rows}x{columns} is not divisible into {tiles}x{tiles} tiles")
    return tiles, rows // tiles, columns // tiles


def split_mosaic(frame: np.ndarray, n_images: int, path: str = "") -> np.ndarray:
    """(rows, columns) mosaic frame -> (n_images, tile_rows, tile_columns), slices in acquisition order."""
    try:
        tiles, tr, tc = mosaic_grid(frame.shape[0], frame.shape[1], n_images)
    except ValueError as exc:
        raise DicomFileError(Reason.UNDECODABLE, f"bad mosaic: {exc}", [path] if path else []) from None
    blocks = frame.reshape(tiles, tr, tiles, tc).transpose(0, 2, 1, 3).reshape(tiles * tiles, tr, tc)
    return np.ascontiguousarray(blocks[:n_images])


def mosaic_first_position(position, orientation, pixel_spacing, rows: int, columns: int, n_images: int):
    """LPS position of the first tile's top-left voxel centre from the mosaic's ImagePositionPatient."""
    _, tr, tc = mosaic_grid(rows, columns, n_images)
    row_dir = np.asarray(orientation[:3], dtype=np.float64)  # direction of increasing column index
    col_dir = np.asarray(orientation[3:], dtype=np.float64)  # direction of increasing row index
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
    shift = row_dir * dc * (columns - tc) / 2.0 + col_dir * dr * (rows - tr) / 2.0
    return np.asarray(position, dtype=np.float64) + shift


def mosaic_slice_normal(ds, orientation) -> np.ndarray:
    """Unit slice normal in acquisition order: the CSA SliceNormalVector, or row x column when absent."""
    cross = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    csa_normal = csa_value(ds, "SliceNormalVector")
    if csa_normal is not None and len(csa_normal) == 3:
        normal = np.asarray(csa_normal, dtype=np.float64)
        if np.linalg.norm(normal) > 0:
            normal = normal / np.linalg.norm(normal)
            return cross if normal @ cross >= 0 else -cross
    return cross
