"""Content hashing of scan sources (bytes, not paths or mtimes), with an optional stat-keyed memo.

See :mod:`medssl.data.cache` for why the memo is only a hint (``ctime`` and the racy-clean window).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence, Union

from medssl.errors import MedsslError, Reason
from medssl.storage.atomic import atomic_write as _atomic_write

#: Files changed this recently (mtime or ctime) are re-hashed instead of memoised (timestamp granularity).
RACY_WINDOW_NS = 2_000_000_000
CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]
#: A NIfTI file, a DICOM series folder, or a list of (DICOM) files forming one volume.
Source = Union[PathLike, Sequence[PathLike]]


def source_files(source: Source) -> list[Path]:
    """The files a source consists of, sorted by absolute path (a folder is walked recursively)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            if not files:
                raise MedsslError(Reason.EMPTY_SERIES, "source folder holds no files", [p])
        elif p.is_file():
            files = [p]
        else:
            raise MedsslError(Reason.UNREADABLE, "source does not exist", [p])
    else:
        files = [Path(f) for f in source]
        if not files:
            raise MedsslError(Reason.EMPTY_SERIES, "empty list of source files")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise MedsslError(Reason.UNREADABLE, "source file does not exist", missing)
    return sorted({Path(os.path.abspath(f)) for f in files}, key=str)


def _hash_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.digest()


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of one file's bytes (streamed)."""
    return _hash_file(Path(path)).hex()


def _stat_key(files: Sequence[Path]) -> tuple[str, bool]:
    """(sha256 of hashed paths + size/mtime/ctime/inode, whether any file changed within the racy window)."""
    h = hashlib.sha256()
    newest = 0
    for f in files:
        st = f.stat()
        h.update(hashlib.sha256(str(f).encode()).digest())
        h.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev};".encode())
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return h.hexdigest(), time.time_ns() - newest < RACY_WINDOW_NS


def content_hash(source: Source, memo_dir: PathLike | None = None) -> str:
    """sha256 over the bytes of every file of ``source`` (per-file digests, in sorted-path order).

    With ``memo_dir``, a JSON memo keyed on the files' stat fingerprint skips re-hashing unchanged files.
    """
    files = source_files(source)
    memo = None
    if memo_dir is not None:
        key, racy = _stat_key(files)
        memo = None if racy else Path(memo_dir) / f"{key}.json"
        if memo is not None and memo.is_file():
            try:
                return str(json.loads(memo.read_text())["content_hash"])
            except (ValueError, KeyError, OSError):
                memo.unlink(missing_ok=True)
    h = hashlib.sha256(f"{len(files)};".encode())
    for f in files:
        h.update(_hash_file(f))
    digest = h.hexdigest()
    if memo is not None and _stat_key(files)[0] == key:  # unchanged while we were reading it
        _atomic_write(memo, lambda tmp: Path(tmp).write_text(json.dumps({"content_hash": digest})))
    return digest
