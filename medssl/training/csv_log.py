"""A CSV logger that survives resumes: ``<run>/metrics.csv`` keeps the history of the interrupted run.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` whenever its folder is not empty, so a resumed run would lose
its loss curve. :class:`ResumableCSVLogger` instead keeps the rows logged before the resumed step (rows written
after the checkpoint, by the run that died, are dropped: they are recomputed) and appends; a fresh run in an
existing folder starts a new file.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Optional

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from medssl.storage.atomic import atomic_write


class _ResumableWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_before_step: Optional[int]):
        self._keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # called by ExperimentWriter.__init__
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        if self._keep_before_step is None:
            os.remove(path)
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") not in (None, "") and
                    int(float(r["step"])) < self._keep_before_step]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/metrics.csv`` that appends after a resume from step ``resume_step``."""

    def __init__(self, save_dir: str, resume_step: Optional[int] = None, **kwargs: Any):
        super().__init__(save_dir, name="", version="", **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(self.log_dir, self.resume_step)
        return self._experiment
