"""Shared by the pretraining CLI tests: command lines on generated phantoms, and the crash-then-resume check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medssl.training.cli import PretrainCLI
from tests.conftest import REPO
from tests.training.crash import Crash

CONFIGS = REPO / "configs" / "pretrain"


def pretrain_args(config: str, run_dir: Path, data_dirs, *extra: str) -> list[str]:
    """``medssl pretrain`` arguments for ``configs/pretrain/<config>`` on the phantoms/cache folders ``data_dirs``."""
    phantoms, cache = data_dirs
    return ["--config", str(CONFIGS / config), "--run_dir", str(run_dir),
            f"--data.source.init_args.root={phantoms}", f"--data.source.init_args.cache_dir={cache}", *extra]


def assert_exact_resume(config: str, tmp_path: Path, data_dirs, common: tuple[str, ...], *, crash_after: int,
                        total_steps: int) -> dict[str, torch.Tensor]:
    """A run crashed after step ``crash_after`` and resumed with ``--resume last`` ends with bitwise the weights
    (and buffers) of the uninterrupted run; returns the resumed state dict for method-specific checks."""
    straight = PretrainCLI(args=pretrain_args(config, tmp_path / "a", data_dirs, *common))
    assert straight.summary["global_step"] == total_steps
    crashed = PretrainCLI(args=pretrain_args(config, tmp_path / "b", data_dirs, *common), run=False)
    crashed.trainer.callbacks.append(Crash(after=crash_after))
    with pytest.raises(RuntimeError, match="simulated kill"):
        crashed.fit()
    resumed = PretrainCLI(args=pretrain_args(config, tmp_path / "b", data_dirs, *common, "--resume", "last"))
    assert resumed.summary["global_step"] == total_steps
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    return b
