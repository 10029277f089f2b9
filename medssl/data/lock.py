"""An exclusive, cross-process lock on an index folder, so that two ``medssl index`` runs never interleave.

Every file of an index is replaced atomically (:mod:`medssl.data.atomic`), but a folder written by two runs at once
could still mix them: ``files.csv`` of one run beside ``series.csv`` of the other, a ``salt.txt`` created twice
(series keys hashed with a salt that is no longer on disk) or a header cache written by the slower run. So
:func:`build_index <medssl.data.index.build_index>` holds :func:`folder_lock` on ``<out>/.index.lock`` from before
it reads the salt until after ``index.json`` is written.

Policy: the second run **waits** for the first (polling every ``poll_s``) and then indexes with the folder the
first one left (its header cache makes that fast); after ``timeout_s`` it gives up with
:class:`IndexLockedError` (reason ``index_locked``) naming the folder, and writes nothing. The lock is
``fcntl.flock`` on an open file, so the kernel releases it when its holder exits, even on SIGKILL: a stale lock
file never blocks anyone, and it is never deleted (deleting it would let two runs lock two different inodes).
``flock`` is per open file description, so two threads of one process that each call :func:`folder_lock` also
exclude each other. On network file systems without ``flock`` support the lock may be advisory only.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medssl.errors import MedsslError, Reason

LOCK_FILE = ".index.lock"
#: How long a second ``medssl index`` on the same output folder waits for the first (seconds).
DEFAULT_TIMEOUT_S = 600.0


class IndexLockedError(MedsslError):
    """Another process held the index folder's lock for longer than the timeout."""


@contextmanager
def folder_lock(folder: str | os.PathLike, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                poll_s: float = 0.05) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block; yields the lock file.

    Waits up to ``timeout_s`` (0: try once) for another holder, then raises :class:`IndexLockedError`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise IndexLockedError(
                        Reason.INDEX_LOCKED, f"another medssl index run has held {folder} for more than "
                        f"{timeout_s:g} s; wait for it to finish or index into another folder", [folder]) from None
                time.sleep(poll_s)
        try:
            os.ftruncate(fd, 0)  # who holds it, for a person looking at a stuck folder (not read by medssl)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
