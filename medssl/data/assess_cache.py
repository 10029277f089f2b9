"""Re-index cache of stack assessments: an unchanged series is not grouped, planned and validated again.

On a re-index of an unchanged archive the header cache (:mod:`medssl.data.index`) already spares every header read;
what remained was rebuilding ~40 header objects per file, clustering orientations and planning every stack — about
half of a re-index. This cache keeps, per *group* (the files sharing :func:`group_base`, which
:func:`~medssl.data.series.group_headers` splits into one stack per orientation cluster), the outcome of assessing
each of its stacks: status, reason code, series key, the series.csv or rejected_series.csv row, which members form
the stack and where the stack sorts.

A group's entry is found under a salted hash (:meth:`AssessCache.group_key`) of everything the outcome depends on:
the members' relative paths with their ``(size, mtime_ns)`` (the header cache's own test of "unchanged"), the
policy (tilt / uneven / fourd), how many truncated files claim the series, which transfer syntaxes can be decoded
here, and — in the file's stamp — the cache format, the medssl version, a hash of the source of the modules that
assess (so an edited ``plan_stack`` never serves an old verdict, even without a version bump), the archive and the
salt. Any change to any of these changes the key: that group alone is assessed again, every other one is reused.

Safety, as for the header cache: the file (``.assessments.json``) is written atomically, holds no paths, names or raw
UIDs (keys are salted hashes; rows hold only what the manifests already publish), and a file that does not parse, or
an entry that does not validate, is ignored with a warning and rebuilt — it can cost time, never a wrong manifest or
a crash.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from medssl import __version__
from medssl.data.deid import hash_identifier
from medssl.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

ASSESS_CACHE_FILE = ".assessments.json"
ASSESS_FORMAT = 1
#: Modules whose code decides an assessment: grouping, geometry planning, decoder checks, reason codes, the rows.
_ASSESSING_MODULES = ("medssl.data.index", "medssl.data.assess_cache", "medssl.data.series", "medssl.data.geometry",
                      "medssl.data.damage", "medssl.data.dimensions", "medssl.data.geometry_values",
                      "medssl.data.mosaic", "medssl.data.dicom_header", "medssl.errors")
_STATUSES = ("indexed", "skipped")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the source of the assessing modules: a development checkout edits them without a version bump."""
    digest = hashlib.sha256()
    for name in _ASSESSING_MODULES:
        __import__(name)
        try:
            digest.update(Path(sys.modules[name].__file__).read_bytes())
        except (OSError, TypeError):  # no source file (a frozen or zipped install): the version has to do
            digest.update(name.encode())
    return digest.hexdigest()


def group_base(record: dict) -> tuple:
    """The grouping key of a header record, exactly as :func:`~medssl.data.series.group_headers` computes it for the
    header (``Stack.raw_key`` minus the orientation rank). The index checks the two agree on every group it assesses,
    so a drift between them fails loudly instead of mixing groups."""
    image_type = record["image_type"] or ()
    is_mosaic = record["mosaic_images"] is not None and "MOSAIC" in image_type  # DicomHeader.is_mosaic
    multiframe = record["sop_instance_uid"] if (record["number_of_frames"] > 1 and not is_mosaic) else ""
    return (record["series_uid"], record["series_number"] if record["series_number"] is not None else "",
            record["echo_number"] or "", "LOC" if "LOCALIZER" in image_type else "", multiframe)


@dataclass(frozen=True)
class Outcome:
    """The assessment of one stack. ``members`` index the group's files in relative-path order; ``order`` is the
    stack's sort key among all stacks (series number, echo number, raw key with hashed UIDs)."""

    order: tuple
    members: tuple[int, ...]
    status: str
    reason: str
    key: str
    series_row: dict | None = None
    rejected_row: dict | None = None

    def to_json(self) -> dict:
        return {"order": list(self.order), "members": list(self.members), "status": self.status,
                "reason": self.reason, "key": self.key, "series": self.series_row, "rejected": self.rejected_row}


def _row(value, columns: tuple[str, ...]) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or tuple(value) != columns or not all(
            v is None or isinstance(v, (str, int, float)) for v in value.values()):
        raise ValueError("malformed row")
    return dict(value)


def _outcomes(entry, n_members: int, series_columns: tuple[str, ...],
              rejected_columns: tuple[str, ...]) -> list[Outcome]:
    """A cached entry as outcomes, or ValueError when it is not exactly what :meth:`AssessCache.put` writes."""
    if not isinstance(entry, list) or not entry:
        raise ValueError("not a non-empty list")
    out, seen = [], []
    for item in entry:
        order, members = item["order"], item["members"]
        if not (isinstance(order, list) and len(order) == 3 and isinstance(order[2], str)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in order[:2])):
            raise ValueError("malformed order")
        if not (isinstance(members, list) and all(type(i) is int for i in members)):
            raise ValueError("malformed members")
        outcome = Outcome(tuple(order), tuple(members), item["status"], item["reason"], item["key"],
                          _row(item["series"], series_columns), _row(item["rejected"], rejected_columns))
        if (outcome.status not in _STATUSES or not isinstance(outcome.reason, str) or not isinstance(outcome.key, str)
                or (outcome.status == "indexed") != (outcome.series_row is not None)
                or (outcome.status == "indexed" and outcome.reason)
                or (outcome.status == "skipped" and not outcome.reason)):
            raise ValueError("inconsistent outcome")
        out.append(outcome)
        seen += members
    if sorted(set(seen)) != list(range(n_members)) or (len(seen) != n_members and n_members != 1):
        # (stacks partition a group's files; only a group of one enhanced file is shared by its split stacks)
        raise ValueError("members do not partition the group")
    return out


class AssessCache:
    """The per-group outcome store of one index run: :meth:`get` / :meth:`put` by group key, :meth:`save` at the end.

    ``reuse=False`` starts empty (everything is assessed) but still saves, so the next run can reuse. ``hits`` and
    ``misses`` count groups; :meth:`save` keeps only the groups of this run and writes nothing when the file on disk
    already says exactly that.
    """

    def __init__(self, out_dir: Path, *, archive: Path, salt: str, reuse: bool, series_columns: tuple[str, ...],
                 rejected_columns: tuple[str, ...]):
        self.path = Path(out_dir) / ASSESS_CACHE_FILE
        self._salt = salt
        self._columns = (series_columns, rejected_columns)
        self.stamp = {"format": ASSESS_FORMAT, "version": __version__, "code": code_fingerprint(),
                      "archive_key": hash_identifier(str(archive), salt),
                      "salt_check": hash_identifier("medssl-assessment-cache", salt)}
        self._stored: dict = self._load() if reuse else {}
        self._current: dict[str, list] = {}
        self._changed = not reuse
        self.hits = self.misses = self.invalid = 0

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._changed = True
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable assessment cache %s (%s); every series is assessed again",
                        self.path.name, type(exc).__name__)
            self._changed = True
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
            log.warning("ignoring the malformed assessment cache %s; every series is assessed again", self.path.name)
            self._changed = True
            return {}
        if any(data.get(k) != v for k, v in self.stamp.items()):  # another version, code, archive or salt: expected
            self._changed = True
            return {}
        return data["groups"]

    def group_key(self, material: list) -> str:
        """Salted hash of everything a group's outcome depends on (JSON-able ``material``)."""
        return hash_identifier(json.dumps(material, separators=(",", ":")), self._salt, 32)

    def get(self, key: str, n_members: int) -> list[Outcome] | None:
        """The cached outcomes of the group under ``key``, or None (never seen, or an entry that does not validate:
        then it is assessed again, with a warning)."""
        entry = self._stored.get(key)
        if entry is None:
            self.misses += 1
            return None
        try:
            outcomes = _outcomes(entry, n_members, *self._columns)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an invalid assessment cache entry (%s); its series is assessed again", exc)
            self.invalid += 1
            self.misses += 1
            self._changed = True
            return None
        self.hits += 1
        self._current[key] = entry
        return outcomes

    def put(self, key: str, outcomes: list[Outcome]) -> None:
        self._current[key] = [o.to_json() for o in outcomes]
        self._changed = True

    def save(self) -> bool:
        """Write this run's groups (atomically) unless the file already holds exactly them; True when written."""
        if not self._changed and self._current.keys() == self._stored.keys():
            return False
        atomic_write_text(self.path, json.dumps({**self.stamp, "groups": self._current}, separators=(",", ":")))
        return True
