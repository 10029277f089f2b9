"""Moved to :mod:`medssl.storage.atomic`: atomic writes serve models, training and eval as much as the data layer.

This alias keeps ``medssl.data.atomic`` importing for the modules not yet moved over (medssl/finetune,
medssl/quickstart, medssl/data/phantoms.py, benchmarks/, all under edit elsewhere when the move was made); new code
imports :mod:`medssl.storage.atomic`. Remove once nothing imports it.
"""
from medssl.storage.atomic import atomic_write, atomic_write_json, atomic_write_text, jsonable  # noqa: F401
