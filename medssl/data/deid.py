"""De-identification helpers: salted hashing of identifiers and the allow-list of header fields we may output.

Outputs (manifests, logs, checkpoints, plots) never contain raw UIDs, names, IDs or dates. UIDs are replaced by
``HMAC-SHA256(salt, uid)`` truncated to 16 hex characters; the salt is random per archive index and stored beside
it (``salt.txt``), so the same archive re-indexed keeps its keys while keys cannot be reversed by hashing a list of
candidate UIDs without the salt.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_FILE = "salt.txt"

#: Header-derived metadata that may appear in outputs. Everything else is dropped.
SAFE_KEYS = frozenset(
    {
        "modality", "body_part", "manufacturer", "transfer_syntax", "rows", "columns", "n_files", "n_slices",
        "n_timepoints", "photometric", "bits_stored", "pixel_representation", "is_mosaic", "image_type",
        "slice_thickness", "spacing", "shape", "orientation", "series_key", "series_number", "echo_number",
        "gantry_tilt", "rescale_slope", "rescale_intercept", "space", "policy", "split",
    }
)


def new_salt() -> str:
    return secrets.token_hex(16)


def load_or_create_salt(directory: str | Path) -> str:
    """Salt stored in ``directory/salt.txt`` (created with 0600 permissions when missing)."""
    path = Path(directory) / SALT_FILE
    if path.exists():
        salt = path.read_text().strip()
        if salt:
            return salt
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = new_salt()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(salt + "\n")
    return salt


def hash_identifier(value: str | bytes, salt: str, length: int = 16) -> str:
    """Keyed hash of an identifier (UID, composite key, relative path); stable for a given salt.

    Text is hashed as its UTF-8 bytes; a file name that is not valid UTF-8 (which Python carries as lone surrogates,
    PEP 383) is hashed as its original bytes, so any name the file system holds has a key."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
    return hmac.new(salt.encode(), data, hashlib.sha256).hexdigest()[:length]


def safe_metadata(meta: dict) -> dict:
    """Keep only allow-listed keys (see :data:`SAFE_KEYS`)."""
    return {k: v for k, v in meta.items() if k in SAFE_KEYS}
