"""A cross-process lock on an index folder, so that two ``medssl index`` runs never interleave and no reader sees
a half-rewritten index.

Every file of an index is replaced atomically (:mod:`medssl.storage.atomic`), but a folder written by two runs at once
could still mix them: ``files.csv`` of one run beside ``series.csv`` of the other, a ``salt.txt`` created twice
(series keys hashed with a salt that is no longer on disk) or a header cache written by the slower run. So
:func:`build_index <medssl.data.index.build_index>` holds :func:`folder_lock` on ``<out>/.index.lock`` from before
it reads the salt until after ``index.json`` is written, and readers of the manifests
(:meth:`ScanDataset.from_index <medssl.data.dataset.ScanDataset.from_index>`) hold it shared while they read.

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
                poll_s: float = 0.05, shared: bool = False) -> Iterator[Path | None]:
    """Hold a lock on ``folder`` for the ``with`` block; yields the lock file.

    Exclusive (``medssl index``; the folder is created if missing) or ``shared`` (readers of a finished index:
    any number of them at once, none while an index run holds it exclusively, so a reader never mixes the
    ``series.csv`` of one run with the ``files.csv`` of the next). Waits up to ``timeout_s`` (0: try once) for an
    incompatible holder, then raises :class:`IndexLockedError`. A shared lock on a folder where the lock file
    cannot be created (a read-only copy of an index: nothing can be indexing into it) is skipped and yields None.
    """
    folder = Path(folder)
    if not shared:
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not shared or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield None
            return
    try:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    advice = ("read it once that run has finished" if shared else
                              "wait for it to finish or index into another folder")
                    raise IndexLockedError(Reason.INDEX_LOCKED, f"a medssl index run has held {folder} for more "
                                           f"than {timeout_s:g} s; {advice}", [folder]) from None
                time.sleep(poll_s)
        if not shared:
            try:
                os.ftruncate(fd, 0)  # who holds it, for a person looking at a stuck folder (not read by medssl)
                os.write(fd, f"pid {os.getpid()}\n".encode())
            except OSError:
                pass
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
