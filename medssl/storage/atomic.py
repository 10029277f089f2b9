"""Atomic file replacement: write to a temp file in the same folder, fsync, then ``os.replace``.

A crash or a concurrent writer never leaves a half-written manifest, cache entry or image behind: readers see the
old file or the complete new one. Used by the index, the cache, the hash memo and the NIfTI writer (data), by
checkpoints and logs (training), encoder cards (models) and reports and figures (eval).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask can only be read by setting it (not thread-safe later)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` then atomically move the result to ``path``. ``suffix`` lets writers that infer the
    format from the name (``.nii.gz``) see the right extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN/inf become null (JSON has no NaN), numpy scalars and arrays lists,
    tuples lists, anything else unknown (paths ...) its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return jsonable(value.tolist())
    return str(value)


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int = 1) -> Path:
    """Write :func:`jsonable` ``value`` as JSON (strict: never a bare NaN token), atomically."""
    return atomic_write_text(path, json.dumps(jsonable(value), indent=indent, allow_nan=False) + "\n")
