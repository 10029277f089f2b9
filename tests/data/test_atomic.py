"""atomic_write leaves files readable as a plain open() would (mkstemp alone makes them 0600)."""
from __future__ import annotations

import os
import stat

from medssl.data.atomic import atomic_write_text


def test_atomic_files_get_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert path.read_text() == "x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.txt")]  # no temp file left behind
