"""atomic_write leaves files readable as a plain open() would (mkstemp alone makes them 0600)."""
from __future__ import annotations

import os
import stat

from medssl.storage.atomic import atomic_write_text


def test_atomic_files_get_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert path.read_text() == "x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.txt")]  # no temp file left behind


def test_atomic_json_is_strict_json(tmp_path):
    import json
    from pathlib import Path

    import numpy as np

    from medssl.storage.atomic import atomic_write_json

    value = {"nan": float("nan"), "inf": float("-inf"), "arr": np.array([1.5, 2.0]), "n": np.int64(3),
             "t": (1, 2), "p": Path("a/b"), "nested": [{"x": float("nan")}]}
    text = atomic_write_json(tmp_path / "v.json", value).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "arr": [1.5, 2.0], "n": 3, "t": [1, 2], "p": "a/b",
                                "nested": [{"x": None}]}
