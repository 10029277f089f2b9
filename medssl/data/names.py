"""File names that are not valid UTF-8: how they are written into manifests and found again.

POSIX file names are bytes. Python carries the bytes of a name that is not valid UTF-8 as lone surrogates (PEP 383,
``surrogateescape``), which no UTF-8 text file can hold. The index writes such a name with each undecodable byte
spelled ``\\xNN`` (:func:`printable_name`) and counts it (``non_utf8_names`` in index.json); :func:`archive_path`
turns a written name back into the path on disk. Keys (the header cache's path hashes) hash the original bytes
(:func:`medssl.data.deid.hash_identifier`), so no two names share a key.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_ESCAPED = re.compile(rb"\\x([0-9a-f]{2})")


def is_utf8_name(name: str) -> bool:
    """Whether ``name`` (as the file system gave it) is valid UTF-8 text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """``name`` as UTF-8 text: unchanged when valid, else each undecodable byte written ``\\xNN``."""
    if is_utf8_name(name):
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def archive_path(root: Path, written: str) -> Path:
    """The path on disk of a name written by :func:`printable_name` under ``root``."""
    path = Path(root) / written
    if "\\x" not in written or path.exists():
        return path
    raw = _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), written.encode("utf-8"))
    return Path(root) / os.fsdecode(raw)
