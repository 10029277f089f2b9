"""Moved to :mod:`medssl.storage.hashing`: content hashing serves models, training and eval as much as the data layer.

This alias keeps ``medssl.data.hashing`` importing for the modules not yet moved over (medssl/finetune, under edit
elsewhere when the move was made); new code imports :mod:`medssl.storage.hashing`. Remove once nothing imports it.
"""
from medssl.storage.hashing import (  # noqa: F401
    CHUNK,
    RACY_WINDOW_NS,
    PathLike,
    Source,
    content_hash,
    file_sha256,
    source_files,
)
