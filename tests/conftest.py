"""Shared fixtures. Real-data tests use ``shared_data``: skipped when the folder is absent, failed instead when
``MEDSSL_REQUIRE_REALDATA=1`` (CI) so a missing data mount can never turn into a silently green run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def require_shared(*parts: str) -> Path:
    """Path under the shared data folder, or skip/fail (see module docstring)."""
    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        msg = f"real data not found at {path} (set MEDSSL_SHARED_DATA)"
        if os.environ.get("MEDSSL_REQUIRE_REALDATA") == "1":
            pytest.fail(msg + " and MEDSSL_REQUIRE_REALDATA=1")
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture
def one_thread():
    """Tiny models train ~10x faster on one intra-op thread than on a contended pool (2-core CI)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
