"""The quick start: the main job on embedded synthetic data, end to end, in one call.

:func:`run_quickstart` generates phantom CT scans as a DICOM archive (and a separate labelled study), indexes the
archive with the crawler, pretrains a small 3D encoder on it through the pretraining engine, fine-tunes a MONAI
segmenter from that encoder with two labelled cases against the same network from scratch, and writes
``metrics.json`` and ``report.md`` with figures. Modules: :mod:`~medssl.quickstart.settings` (the full and quick
presets), :mod:`~medssl.quickstart.stages` (one function per stage), :mod:`~medssl.quickstart.report` (figures and
report), :mod:`~medssl.quickstart.run` (the driver).
"""
from medssl.quickstart.run import run_quickstart
from medssl.quickstart.settings import FULL, QUICK, QuickstartSettings
from medssl.quickstart.stages import QuickstartError

__all__ = ["FULL", "QUICK", "QuickstartError", "QuickstartSettings", "run_quickstart"]
