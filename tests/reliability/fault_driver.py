"""``python -m tests.reliability.fault_driver <medssl pretrain args>``: the pretraining command with faults injected
from the environment, for the fault-injection tests (a real process that really dies).

* ``FAULT_THROTTLE_S``: sleep this long in every training step (so a test can kill the process mid-epoch);
* ``FAULT_KILL_IN_SAVE=N``: inside the N-th checkpoint write, after part of the bytes reached the temp file, the
  process kills itself with SIGKILL (no Python cleanup, no ``finally``: what a power cut or the OOM killer does).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import torch

from medssl.ssl.base import SSLMethod


def main(argv: list[str]) -> int:
    throttle = float(os.environ.get("FAULT_THROTTLE_S", "0"))
    kill_in_save = int(os.environ.get("FAULT_KILL_IN_SAVE", "0"))
    if throttle > 0:
        step = SSLMethod.training_step

        def slow_step(self, batch, batch_idx):
            time.sleep(throttle)
            return step(self, batch, batch_idx)

        SSLMethod.training_step = slow_step
    if kill_in_save > 0:
        real_save, saves = torch.save, [0]

        def dying_save(obj, f, *args, **kwargs):
            saves[0] += 1
            if saves[0] == kill_in_save:
                with open(f, "wb") as fh:
                    fh.write(b"PK\x03\x04 the first bytes of a checkpoint")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save
    from medssl.training.cli import main as pretrain_main

    pretrain_main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
