"""Every pretraining config parses against the typed signatures (realistic GPU configs are validated, not run)."""
from __future__ import annotations

import contextlib
import io

import pytest

from medssl.training.cli import PretrainCLI
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))


def test_there_is_a_tiny_and_a_realistic_config_per_method():
    names = {p.stem for p in CONFIGS}
    for method in ("mae3d", "mae2d", "simmim3d"):
        assert {method, f"{method}_tiny"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses(config):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PretrainCLI(args=["--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    resolved = out.getvalue()
    assert "class_path: medssl.ssl." in resolved and "source:" in resolved
