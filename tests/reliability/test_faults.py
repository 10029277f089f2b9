"""Fault injection on real processes: SIGKILL mid-epoch then resume, SIGKILL inside a checkpoint write, a full
disk during a checkpoint save, and non-finite losses. Each test states what must survive.

The killed runs are separate ``python -m tests.reliability.fault_driver`` processes (the ``medssl pretrain``
command with faults injected, see that module) killed with SIGKILL: no exception handler, ``finally`` or atexit
runs, as with a power cut or the OOM killer. All runs use one thread so that runs in different processes are
bitwise comparable.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medssl.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from medssl.training.cli import PretrainCLI
from tests.conftest import REPO

CONFIG = REPO / "configs" / "pretrain" / "mae3d_tiny.yaml"
#: 3 training scans, batch 1 -> 3 steps per epoch, 3 epochs = 9 steps, a checkpoint after every step
COMMON = ("--trainer.max_epochs=3", "--data.batch_size=1", "--checkpoint_every_n_steps=1", "--validate_first=false",
          "--trainer.deterministic=true", "--monitor_every_n_epochs=100", "--data.augment.intensity_scale=0.2",
          "--trainer.enable_progress_bar=false")
TOTAL_STEPS = 9


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_data")
    return root / "phantoms", root / "cache"


def _args(run: Path, data_dirs, *extra: str) -> list[str]:
    phantoms, cache = data_dirs
    return ["--config", str(CONFIG), "--run_dir", str(run), f"--data.source.init_args.root={phantoms}",
            f"--data.source.init_args.cache_dir={cache}", *COMMON, *extra]


def _env(**faults: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **faults}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _driver(run: Path, data_dirs, *extra: str, **faults: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.fault_driver", *_args(run, data_dirs, *extra)],
                            cwd=REPO, env=_env(**faults), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def straight(data_dirs, tmp_path_factory):
    """The uninterrupted reference run (a separate process, like the killed ones)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    proc = _driver(run, data_dirs)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert _step(run / "checkpoints" / "last.ckpt") == TOTAL_STEPS
    return _weights(run)


def _resume_in_process(run: Path, data_dirs) -> dict:
    torch.set_num_threads(1)
    return PretrainCLI(args=_args(run, data_dirs, "--resume", "last")).summary


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(straight, data_dirs, tmp_path):
    run = tmp_path / "killed"
    proc = _driver(run, data_dirs, FAULT_THROTTLE_S="0.4")
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while _step(ckpt) < 4:  # step 4 is mid-epoch 1 (3 steps per epoch)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint of step 4 within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _step(ckpt)
    assert 4 <= killed_at < TOTAL_STEPS, killed_at
    summary = _resume_in_process(run, data_dirs)
    assert summary["global_step"] == TOTAL_STEPS and summary["resumed_from"].endswith("last.ckpt")
    resumed = _weights(run)
    assert resumed.keys() == straight.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, f"killed at step {killed_at}: {different[:5]} differ after resume"


def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(straight, data_dirs, tmp_path):
    run = tmp_path / "killed_in_save"
    proc = _driver(run, data_dirs, FAULT_KILL_IN_SAVE="5")  # dies while writing the 5th checkpoint
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    ckpts = run / "checkpoints"
    leftovers = [p.name for p in ckpts.iterdir() if p.name.startswith(".")]
    assert leftovers, "the partial temp file should still be there (nothing ran after SIGKILL)"
    previous = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")  # loads: not the partial one
    assert 1 <= previous["global_step"] < 5
    summary = _resume_in_process(run, data_dirs)  # the stray temp file does not disturb the resume
    assert summary["global_step"] == TOTAL_STEPS
    resumed = _weights(run)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_disk_full_during_checkpoint_save_is_a_clear_error_and_keeps_the_previous(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as info:
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    err = info.value
    assert err.reason.value == "write_failed" and err.files == [str(path)]
    assert "no space left" in str(err) and "previous checkpoint there is intact" in str(err) and "--resume last" in str(err)
    good = io.load_checkpoint(path)
    assert good["global_step"] == 1 and torch.equal(good["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # the temp file was removed


def test_disk_full_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match="no earlier checkpoint exists"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")


def test_disk_full_stops_training_with_the_clear_error(data_dirs, tmp_path, monkeypatch):
    """Through the whole engine: the run stops at the failing save with the typed error, and the checkpoint of the
    step before is intact and resumable."""
    real_save, saves = torch.save, [0]

    def fills_up(obj, f, *args, **kwargs):
        saves[0] += 1
        if saves[0] >= 3:  # the third checkpoint write (step 1 or 2, however many files a step writes) fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    torch.set_num_threads(1)
    run = tmp_path / "full"
    with pytest.raises(CheckpointWriteError, match="no space left"):
        PretrainCLI(args=_args(run, data_dirs))
    monkeypatch.undo()
    kept = _step(run / "checkpoints" / "last.ckpt")
    assert 1 <= kept < 3, kept  # the last checkpoint written before the disk filled up, loadable
    assert _resume_in_process(run, data_dirs)["global_step"] == TOTAL_STEPS


class CorruptAfterFirstEpoch:
    """Overwrites the first training scan with garbage when epoch 0 ends (a file damaged while training runs)."""

    def __init__(self):
        import lightning as L

        class _Callback(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                if trainer.current_epoch == 0:
                    path = Path(trainer.datamodule.train_set.sources[0])
                    path.write_bytes(b"\x00garbage, not gzip, not NIfTI" * 7)

        self.callback = _Callback()


def test_a_file_corrupted_mid_training_is_skipped_logged_and_counted(tmp_path, caplog):
    torch.set_num_threads(1)
    data = (tmp_path / "phantoms", tmp_path / "cache")
    cli = PretrainCLI(args=_args(tmp_path / "run", data), run=False)
    cli.trainer.callbacks.append(CorruptAfterFirstEpoch().callback)
    with caplog.at_level("WARNING", logger="medssl.data.dataset"):
        summary = cli.fit()
    assert summary["global_step"] == TOTAL_STEPS  # training went on
    assert summary["replaced_items"] == 2  # scan 0's item in epochs 1 and 2 (one item per scan per epoch)
    (reason, count), = summary["unreadable_scans"].items()
    assert count == 1 and reason in ("bad_nifti_header", "unreadable", "truncated")
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable" in r.getMessage()]
    assert len(warnings) == 1 and f"[{reason}]" in warnings[0] and "scan 0 of 3" in warnings[0]
    assert str(tmp_path) not in warnings[0]  # logs name the scan, not the (possibly identifying) path


def test_a_corrupted_file_stops_training_when_skipping_is_off(tmp_path):
    from medssl.errors import MedsslError

    torch.set_num_threads(1)
    data = (tmp_path / "phantoms", tmp_path / "cache")
    cli = PretrainCLI(args=_args(tmp_path / "run", data, "--data.skip_unreadable=false"), run=False)
    cli.trainer.callbacks.append(CorruptAfterFirstEpoch().callback)
    with pytest.raises(MedsslError) as info:
        cli.fit()
    assert info.value.files and Path(info.value.files[0]).name == Path(cli.datamodule.train_set.sources[0]).name


def test_nonfinite_loss_policies_are_covered():
    """NaN losses (stop, or skip per config, with a message) are tested in tests/training/test_checkpoint_nonfinite.py;
    this guards that those tests stay."""
    text = (REPO / "tests" / "training" / "test_checkpoint_nonfinite.py").read_text()
    for name in ("test_nonfinite_loss_stops_with_a_clear_message", "test_nonfinite_loss_skip_policy_skips_and_keeps_weights_finite",
                 "test_too_many_consecutive_nonfinite_losses_stop"):
        assert f"def {name}(" in text
