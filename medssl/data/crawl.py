"""Walking an archive folder: every path once, no symlink loops, unreadable entries reported, never dropped.

The walk is iterative (no recursion limit on deep archives), enters each directory once by ``(st_dev, st_ino)``,
visits real directories before symlinked ones, and returns a :class:`Found` per path with a reason code where the walk
itself rules a path out (symlink loop, broken link, permission denied, special file).
"""
from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from medssl.errors import Reason


@dataclass(frozen=True)
class Found:
    """One path under the archive; ``reason`` is set when the walk itself rules it out (loop, broken link ...)."""

    rel: str
    path: str
    size: int = 0
    mtime_ns: int = 0
    reason: str = ""


def _stat_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return Reason.SYMLINK_LOOP.value
    return Reason.PERMISSION_DENIED.value if isinstance(exc, PermissionError) else Reason.UNREADABLE.value


def crawl(archive: Path, exclude: Path | None = None) -> list[Found]:
    """Every path under ``archive`` once, sorted by relative path; iterative (no recursion).

    Each directory is entered at most once, by ``(st_dev, st_ino)``. Real directories are walked before symlinked
    ones, so a symlink to a directory already seen (its parent: a loop; or elsewhere in the tree) becomes one
    ``symlink_loop`` row instead of a second copy. Broken links are ``unreadable``; unreadable directories one
    ``permission_denied`` row; fifos, sockets and devices ``unreadable`` (never opened). ``exclude`` (the index's own
    output folder, when it lies inside the archive) is left out silently.
    """
    root = os.stat(archive)
    visited = {(root.st_dev, root.st_ino)}
    if exclude is not None and exclude.is_dir():
        ex = os.stat(exclude)
        visited.add((ex.st_dev, ex.st_ino))
        excluded = {(ex.st_dev, ex.st_ino)}
    else:
        excluded = set()
    queue: deque = deque([(str(archive), "")])
    linked: deque = deque()
    found: list[Found] = []
    while queue or linked:
        if queue:
            path, rel = queue.popleft()
        else:
            path, rel, key = linked.popleft()
            if key in visited:
                if key not in excluded:
                    found.append(Found(rel, path, reason=Reason.SYMLINK_LOOP.value))
                continue
            visited.add(key)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.append(Found(rel or ".", path, reason=_stat_reason(exc)))
            continue
        for entry in entries:
            erel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = os.stat(entry.path) if entry.is_symlink() else entry.stat(follow_symlinks=False)
            except OSError as exc:
                found.append(Found(erel, entry.path, reason=_stat_reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if entry.is_symlink():
                    linked.append((entry.path, erel, key))
                elif key not in visited:
                    visited.add(key)
                    queue.append((entry.path, erel))
                elif key not in excluded:
                    found.append(Found(erel, entry.path, reason=Reason.SYMLINK_LOOP.value))
            elif stat.S_ISREG(st.st_mode):
                found.append(Found(erel, entry.path, st.st_size, st.st_mtime_ns))
            else:
                found.append(Found(erel, entry.path, reason=Reason.UNREADABLE.value))
    found.sort(key=lambda f: f.rel)
    return found
