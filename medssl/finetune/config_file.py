"""Reading a YAML run or protocol config into a dataclass: one place for the file, YAML and field checks.

Errors are :class:`ProtocolConfigError` (reason ``bad_config``) naming the file and the field, so ``medssl
finetune`` / ``medssl evaluate`` can exit with a usage error that says what to fix.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from medssl.errors import MedsslError, Reason

__all__ = ["SELECTS", "ProtocolConfigError", "check_fields", "read_yaml_config"]

#: the ``select`` values of the fine-tuning configs: what :func:`medssl.finetune.trainer.fit_best` keeps, the best
#: validated checkpoint or the final epoch's weights (here, not in the trainer, so configs validate without torch)
SELECTS = ("best", "last")


class ProtocolConfigError(MedsslError):
    """A protocol or run config that cannot run; the message names the file and the field."""

    def __init__(self, field_name: str, message: str, source: str = ""):
        self.field = field_name
        where = f"{source}: " if source else ""
        super().__init__(Reason.BAD_CONFIG, f"{where}field '{field_name}': {message}")


def read_yaml_config(file: str | Path, overrides: dict[str, Any], option: str = "--config") -> dict[str, Any]:
    """The mapping in YAML ``file`` with the ``overrides`` that are not None applied on top."""
    import yaml

    file = Path(file)
    if not file.is_file():
        raise ProtocolConfigError(option, "file not found", str(file))
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProtocolConfigError("<yaml>", f"not valid YAML ({exc})", str(file)) from exc
    if not isinstance(data, dict):
        raise ProtocolConfigError("<top level>", "expected a mapping of fields", str(file))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def check_fields(cls: type, data: Any, source: str = "") -> None:
    """Raise unless ``data`` is a mapping whose keys are all fields of dataclass ``cls``."""
    if not isinstance(data, dict):
        raise ProtocolConfigError("<top level>", f"expected a mapping of fields, got {type(data).__name__}", source)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ProtocolConfigError(str(key), f"unknown field; known fields: {sorted(known)}", source)
