"""Archive crawler: one pass over a folder tree -> reason-coded manifests of every file and every usable volume.

:func:`build_index` writes into ``out_dir``:

- ``files.csv``: every path found under the archive exactly once — ``path`` (relative, POSIX), ``size``, ``status``
  (``indexed`` | ``skipped``), ``reason`` (a :class:`~medssl.errors.Reason` code, empty when indexed) and
  ``series_key`` (empty for files skipped before grouping; filled for localizers and files of rejected stacks; an
  enhanced multi-frame file that holds several stacks lists all their keys, separated by ``;``).
- ``series.csv``: usable volumes only (``ok``, or ``ok_with_warnings`` when tilt/uneven resampling was opted in),
  described from headers alone (no pixel decoding), one row per stack: an enhanced multi-frame file split by its
  dimension index gives one row per stack, its ``split`` column naming which (``echo2``, ``trigger3``; empty
  otherwise, see :mod:`medssl.data.dimensions`); ``rejected_series.csv``: stacks that failed validation.
- ``index.json``: counts (``seen == indexed + skipped``, asserted before anything is written), per-reason counts,
  settings, timings; ``salt.txt``; ``.headers.json``: the re-run cache (parsed headers, and the salted content
  digests ``--dedup`` computed, keyed by a salted hash of the relative path, reused while a file's
  ``(size, mtime_ns)`` is unchanged); ``.assessments.json``: each group of
  files' stack assessments (:mod:`medssl.data.assess_cache`), reused while its files, their stat keys and the
  settings are unchanged. A manifest whose content would not change is not rewritten (``unchanged_outputs``).
- with ``dedup=True`` (``medssl index --dedup``): ``duplicates.csv`` and duplicate statuses, see
  :mod:`medssl.data.dedup`.

Patients: each series.csv row has a ``patient_key``, a salted hash of the PatientID, falling back to the
StudyInstanceUID and then to the series itself when the ID is missing; ``patient_key_source`` says which
(``patient_id`` | ``study_uid`` | ``series``; counts in index.json). The raw PatientID is hashed as the header is
read and never stored, not even in the header cache. The ``ArchiveIndex`` source splits train/val by this key.

Concurrency: a run holds an exclusive lock on ``out_dir`` (:mod:`medssl.data.lock`) from before it reads the salt
until index.json is written; a second run on the same folder waits for it (up to ``lock_timeout_s``, then
:class:`~medssl.data.lock.IndexLockedError`, reason ``index_locked``).

Privacy: series keys are salted hashes (:meth:`Stack.public_key`); no names, IDs, dates, accession numbers or UIDs are
written, and the cache stores Series/Study/SOP Instance UIDs only as salted hashes (grouping needs equality only).
The one exception is ``files.csv``'s ``path`` column: the archive's own relative paths, which a user needs to find a
file. If the archive's folder names carry identifiers (e.g. patient names), so does ``files.csv``: share it as you
would share the archive's directory listing.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path

from pydicom.uid import UID

from medssl import __version__
from medssl.data.assess_cache import AssessCache, Outcome, group_base
from medssl.data.crawl import Found, crawl
from medssl.data.damage import Damaged, identify_damaged, uncovered
from medssl.data.dedup import (
    DUPLICATES_COLUMNS,
    NEAR_BITS,
    NEAR_MAX_DISTANCE,
    duplicate_files,
    mark_duplicates,
)
from medssl.data.deid import hash_identifier, load_or_create_salt
from medssl.data.dicom_header import (
    DicomHeader,
    decoder_available,
    read_header,
)
from medssl.data.geometry import (
    FourDPolicy,
    StackGeometry,
    TiltPolicy,
    UnevenPolicy,
    plan_stack,
)
from medssl.data.lock import DEFAULT_TIMEOUT_S, folder_lock
from medssl.data.names import archive_path, is_utf8_name, printable_name
from medssl.data.series import Stack, group_headers
from medssl.errors import DicomFileError, DicomSeriesError, Reason
from medssl.storage.atomic import atomic_write_text

FILES_COLUMNS = ("path", "size", "status", "reason", "series_key")
#: Separates the series keys of a file that holds several stacks (files.csv ``series_key``).
KEY_SEPARATOR = ";"
SERIES_COLUMNS = ("series_key", "modality", "body_part", "manufacturer", "rows", "columns", "n_slices",
                  "n_timepoints", "shape", "spacing", "n_files", "is_mosaic", "status", "patient_key",
                  "patient_key_source", "split")
#: series.csv statuses of volumes that datasets use (the others: dedup's ``duplicate`` / ``near_duplicate``)
USABLE_STATUSES = ("ok", "ok_with_warnings")
REJECTED_COLUMNS = ("series_key", "reason", "n_files", "message")
CACHE_FILE = ".headers.json"
CACHE_FORMAT = 3  # 2: entries keyed by salted hashes of the relative paths (folder names may hold PHI); 3: patient_hash
_INT_COLUMNS = {"size", "rows", "columns", "n_slices", "n_timepoints", "n_files"}
_UID_FIELDS = ("series_uid", "study_uid", "sop_instance_uid")
_HEADER_FIELDS = [f.name for f in fields(DicomHeader) if f.name != "path"]
#: File-level reasons that depend on the environment, not the content: never cached, retried on every run.
_TRANSIENT = {Reason.PERMISSION_DENIED.value, Reason.UNREADABLE.value}


@dataclass
class IndexResult:
    """What :func:`build_index` did. ``series`` holds the rows of ``series.csv`` (typed)."""

    archive: Path
    out_dir: Path
    seen: int
    indexed: int
    skipped: int
    reason_counts: dict[str, int]
    series: list[dict]
    rejected: list[dict]
    headers_read: int
    headers_reused: int
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)
    duplicates: list[dict] = field(default_factory=list)  # rows of duplicates.csv (dedup runs only)
    stacks_assessed: int = 0  # stacks grouped, planned and validated in this run
    stacks_reused: int = 0  # stacks whose assessment came from the assessment cache (unchanged files and settings)
    unchanged_outputs: list[str] = field(default_factory=list)  # manifests / caches not rewritten: same content
    non_utf8_names: int = 0  # paths whose names are not valid UTF-8 (written with \xNN escapes, see data/names.py)

    @property
    def files_csv(self) -> Path:
        return self.out_dir / "files.csv"

    @property
    def series_csv(self) -> Path:
        return self.out_dir / "series.csv"

    @property
    def rejected_csv(self) -> Path:
        return self.out_dir / "rejected_series.csv"

    @property
    def index_json(self) -> Path:
        return self.out_dir / "index.json"

    def summary(self) -> str:
        """One line for the CLI, including the accounting identity."""
        reasons = ", ".join(f"{k} {v}" for k, v in self.reason_counts.items()) or "none"
        return (f"seen {self.seen} = indexed {self.indexed} + skipped {self.skipped} ({reasons}); "
                f"{len(self.series)} series, {len(self.rejected)} rejected; headers read {self.headers_read}, "
                f"reused {self.headers_reused}; stacks assessed {self.stacks_assessed}, reused {self.stacks_reused}; "
                + (f"{len(self.duplicates)} duplicates; " if self.duplicates else "")
                + (f"{self.non_utf8_names} non-UTF-8 name(s) written with \\xNN escapes; " if self.non_utf8_names
                   else "")
                + f"{self.elapsed_s:.1f} s")


# ----------------------------------------------------------------------------------------------------- headers
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value):
    """A header value as JSON-able Python (pydicom DS/IS/MultiValue and numpy scalars unwrapped)."""
    if type(value) in _JSON_SCALARS:  # the common case first: ~40 fields per file, thousands of files
        return value
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return str(value)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _header_record(header: DicomHeader, salt: str) -> dict:
    """Header -> JSON record without the path, identifying UIDs replaced by salted hashes."""
    rec = {name: _plain(getattr(header, name)) for name in _HEADER_FIELDS}
    for name in _UID_FIELDS:
        rec[name] = hash_identifier(rec[name], salt) if rec[name] else ""
    return rec


def _header_from_record(rec: dict, path: str) -> DicomHeader:
    return DicomHeader(path=path, **{k: _tuples(v) for k, v in rec.items()})


def _read_chunk(items: list[tuple[str, str]], salt: str) -> list[tuple[str, dict | None, str]]:
    """Worker: ``(rel, path)`` -> ``(rel, record or None, reason)``. Never raises for a bad file."""
    out = []
    for rel, path in items:
        try:
            out.append((rel, _header_record(read_header(path, salt=salt), salt), ""))
        except DicomFileError as exc:
            out.append((rel, None, exc.reason.value))
        except Exception:  # noqa: BLE001 - a malformed header must cost one row, not the whole crawl
            out.append((rel, None, Reason.UNREADABLE.value))
    return out


def _read_all(items: list[tuple[str, str]], salt: str, workers: int, show: bool) -> dict[str, tuple]:
    """Read headers in chunks (a process pool when ``workers > 1``) behind a rich progress bar."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    results: dict[str, tuple] = {}
    size = max(1, min(256, -(-len(items) // max(1, workers * 4))))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    columns = (TextColumn("reading headers"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
        task = bar.add_task("headers", total=len(items))
        if workers <= 1 or len(chunks) < 2:
            for chunk in chunks:
                results.update((rel, (rec, reason)) for rel, rec, reason in _read_chunk(chunk, salt))
                bar.advance(task, len(chunk))
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(_read_chunk, chunk, salt): len(chunk) for chunk in chunks}
                for fut in as_completed(futures):
                    results.update((rel, (rec, reason)) for rel, rec, reason in fut.result())
                    bar.advance(task, futures[fut])
    return results


# ------------------------------------------------------------------------------------------------------- cache
def _cache_stamp(archive: Path, salt: str) -> dict:
    """What a cache must match to be reused: format, medssl version, header fields, archive and salt."""
    return {"format": CACHE_FORMAT, "version": __version__, "fields": _HEADER_FIELDS,
            "archive_key": hash_identifier(str(archive), salt),
            "salt_check": hash_identifier("medssl-header-cache", salt)}


def _load_cache(out_dir: Path, stamp: dict) -> dict | None:
    """The cached entries, or None when there is no usable cache (absent, corrupt, or another stamp)."""
    try:
        data = json.loads((out_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in stamp.items()):
        return None
    files = data.get("files")
    return files if isinstance(files, dict) else None


# ------------------------------------------------------------------------------------------------------ stacks
def _fmt(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _patient_key(stack: Stack, key: str, salt: str) -> tuple[str, str]:
    """(patient key, its source): the hashed PatientID, else the (hashed) StudyInstanceUID, else the series."""
    h = stack.first
    for source, value in (("patient_id", h.patient_hash), ("study_uid", h.study_uid), ("series", key)):
        if value:
            return hash_identifier(f"patient|{source}|{value}", salt), source
    raise AssertionError("a series key is never empty")


def _series_row(key: str, stack: Stack, geom: StackGeometry, salt: str) -> dict:
    h = stack.first
    patient_key, patient_source = _patient_key(stack, key, salt)
    return {"series_key": key, "modality": h.modality, "body_part": h.body_part, "manufacturer": h.manufacturer,
            "rows": geom.rows, "columns": geom.columns, "n_slices": geom.n_slices,
            "n_timepoints": geom.n_timepoints, "shape": "x".join(str(s) for s in geom.shape),
            "spacing": "x".join(_fmt(s) for s in geom.spacing), "n_files": len(stack.headers),
            "is_mosaic": h.is_mosaic, "status": "ok_with_warnings" if geom.warnings else "ok",
            "patient_key": patient_key, "patient_key_source": patient_source, "split": stack.split}


def _assess_stack(stack: Stack, key: str, salt: str, archive: Path, policy: dict,
                  damaged: list[Damaged]) -> tuple[str, str, dict | None, dict | None]:
    """One stack -> (status, reason, series row or None, rejected row or None); every file of the stack shares the
    status. ``damaged``: the truncated files that claim its (hashed) SeriesInstanceUID; one whose place no intact
    file takes (:mod:`medssl.data.damage`) refuses the stack as ``damaged_member``: never indexed one slice
    short, and its intact files are marked ``damaged_member``, not ``truncated``."""
    if stack.first.is_localizer:
        return "skipped", Reason.LOCALIZER.value, None, None
    try:
        if stack.n_orientations > 1:  # as the reader does: never index part of a series as if it were whole
            raise DicomSeriesError(Reason.MIXED_ORIENTATION,
                                   f"the series holds {stack.n_orientations} slice orientations")
        lost = uncovered(damaged, stack.headers)
        if lost:
            raise DicomSeriesError(Reason.DAMAGED_MEMBER, f"{len(lost)} truncated file(s) of this series leave a "
                                   "place that no intact file takes")
        bad = sorted({h.transfer_syntax for h in stack.headers if not decoder_available(h.transfer_syntax)})
        if bad:
            names = ", ".join(UID(ts).name or ts for ts in bad)
            raise DicomSeriesError(Reason.UNSUPPORTED_TRANSFER_SYNTAX, f"no pixel decoder available for {names}")
        geom = plan_stack(stack.headers, frames=stack.frame_group, **policy)
    except DicomSeriesError as exc:
        message = exc.detail.replace(str(archive), "<archive>")
        return "skipped", exc.reason.value, None, {"series_key": key, "reason": exc.reason.value,
                                                   "n_files": len(stack.headers), "message": message}
    return "indexed", "", _series_row(key, stack, geom, salt), None


def _assess_group(base: tuple, members: list[Found], records: dict[str, tuple], salt: str, archive: Path,
                  policy: dict, damaged: list[Damaged]) -> list[Outcome]:
    """Group the members' headers into stacks and assess each; the stacks must carry ``base`` (see
    :func:`~medssl.data.assess_cache.group_base`), else the cache would hold groups that grouping does not make."""
    headers = [_header_from_record(records[f.rel][0], f.path) for f in members]
    position = {f.path: i for i, f in enumerate(members)}
    outcomes = []
    for stack in group_headers(headers):
        if stack.raw_key[:len(base)] != base:  # (after it: the orientation rank, and an enhanced file's split)
            raise AssertionError(f"group_base {base!r} disagrees with group_headers {stack.raw_key[:len(base)]!r}")
        key = stack.public_key(salt, uids_hashed=True)  # (header records hold salted hashes of the UIDs)
        status, reason, row, rejected = _assess_stack(stack, key, salt, archive, policy, damaged)
        order = (stack.first.series_number or 0, stack.first.echo_number or 0, str(stack.raw_key))
        outcomes.append(Outcome(order, tuple(position[h.path] for h in stack.headers), status, reason, key, row,
                                rejected))
    return outcomes


def _assess(found: list[Found], records: dict[str, tuple], copies: dict, salt: str, archive: Path, policy: dict,
            damaged: dict[str, list[Damaged]], cache: AssessCache):
    """Every grouped file -> (per-path (status, reason, key), series rows, rejected rows), in the stack order of
    :func:`~medssl.data.series.group_headers`. Groups whose cache key (members with their stat keys, policy, damage
    count, decodable transfer syntaxes) is in ``cache`` are not assessed again; returns the numbers of stacks
    (assessed, reused) too."""
    groups: dict[tuple, list[Found]] = {}
    for f in found:  # found is sorted by relative path, and so is each group
        rec = records.get(f.rel, (None,))[0]
        if rec and f.rel not in copies:
            groups.setdefault(group_base(rec), []).append(f)
    decodable: dict[str, bool] = {}
    placed: dict[str, tuple[str, str, str]] = {}
    done: list[tuple[Outcome, list[Found]]] = []
    assessed = reused = 0
    for base, members in groups.items():
        syntaxes = sorted({records[f.rel][0]["transfer_syntax"] for f in members})
        for ts in syntaxes:  # installing a decoder plugin must re-assess the series it would decode
            if ts not in decodable:
                decodable[ts] = decoder_available(ts)
        claims = damaged.get(base[0], [])
        material = [sorted(policy.items()), [d.material() for d in claims], [(ts, decodable[ts]) for ts in syntaxes],
                    [(f.rel, f.size, f.mtime_ns) for f in members]]
        gkey = cache.group_key(material)
        outcomes = cache.get(gkey, len(members))
        if outcomes is None:
            outcomes = _assess_group(base, members, records, salt, archive, policy, claims)
            cache.put(gkey, outcomes)
            assessed += len(outcomes)
        else:
            reused += len(outcomes)
        done.extend((o, members) for o in outcomes)
    done.sort(key=lambda item: item[0].order)
    series, rejected = [], []
    for o, members in done:
        for i in o.members:
            path = members[i].path
            placed[path] = _merge_placement(placed[path], (o.status, o.reason, o.key)) if path in placed else (
                o.status, o.reason, o.key)
        if o.series_row is not None:
            series.append(dict(o.series_row))  # copies: dedup marks statuses in these rows, not in the cache's
        if o.rejected_row is not None:
            rejected.append(dict(o.rejected_row))
    return placed, series, rejected, assessed, reused


def _merge_placement(a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[str, str, str]:
    """One file that holds several stacks (an enhanced multi-frame object split by its dimension index): its
    files.csv row lists every stack's key, separated by ``;``; it is ``indexed`` when any of its stacks is usable,
    else skipped with the first stack's reason."""
    status = "indexed" if "indexed" in (a[0], b[0]) else "skipped"
    reason = "" if status == "indexed" else a[1] or b[1]
    return status, reason, f"{a[2]}{KEY_SEPARATOR}{b[2]}"


# ------------------------------------------------------------------------------------------------------ output
def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds exactly it (a re-index of an unchanged archive then
    leaves the manifests, and their modification times, alone); True when written."""
    data = text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def _typed(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        out[k] = int(v) if k in _INT_COLUMNS and v != "" else (v == "true") if k == "is_mosaic" else v
    return out


def _lookup(found: list[Found], cache: dict, keys: dict[str, str]
            ) -> tuple[dict[str, tuple], list[tuple[str, str]], dict[str, str]]:
    """Cached ``rel -> (record or None, reason)`` for files whose (size, mtime_ns) is unchanged, the rest to read,
    and the cached content digests (``--dedup``) of the unchanged files. ``keys``: each readable file's cache key
    (salted hash of its relative path)."""
    records, todo, digests = {}, [], {}
    for f in found:
        if f.reason:
            continue
        hit = cache.get(keys[f.rel])
        if (isinstance(hit, dict) and hit.get("size") == f.size and hit.get("mtime_ns") == f.mtime_ns
                and (hit.get("reason") or set(hit.get("header") or ()) == set(_HEADER_FIELDS))):
            records[f.rel] = (hit.get("header"), hit.get("reason", ""))
            if isinstance(hit.get("content"), str):
                digests[f.rel] = hit["content"]
        else:
            todo.append((f.rel, f.path))
    return records, todo, digests


def _cache_entries(found: list[Found], records: dict[str, tuple], keys: dict[str, str],
                   digests: dict[str, str]) -> dict[str, dict]:
    """Cache content: headers, content-determined skip reasons and content digests (:func:`~medssl.data.dedup.
    content_digest`, salted) of the files that exist now, keyed by a salted hash of the relative path (the cache
    holds no file or folder names)."""
    entries = {}
    for f in found:
        if f.reason:  # ruled out by the walk: never read, never cached
            continue
        rec, reason = records.get(f.rel, (None, ""))
        if rec is not None:
            entries[keys[f.rel]] = {"size": f.size, "mtime_ns": f.mtime_ns, "header": rec}
            if f.rel in digests:
                entries[keys[f.rel]]["content"] = digests[f.rel]
        elif reason and reason not in _TRANSIENT:
            entries[keys[f.rel]] = {"size": f.size, "mtime_ns": f.mtime_ns, "reason": reason}
    return entries


def build_index(archive: Path, out_dir: Path, *, workers: int = 2, tilt: TiltPolicy = "error",
                uneven: UnevenPolicy = "error", fourd: FourDPolicy = "stack", progress: bool = True,
                reuse: bool = True, dedup: bool = False, near_max_distance: int = NEAR_MAX_DISTANCE,
                lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> IndexResult:
    """Crawl ``archive``, read every file's header, validate every stack, and write the manifests to ``out_dir``.

    ``dedup`` also finds duplicate files, series and near-duplicate volumes (decoding every series once; see
    :mod:`medssl.data.dedup`). The run holds ``out_dir``'s lock throughout, waiting up to ``lock_timeout_s`` for
    another run to finish.
    """
    archive, out_dir = Path(archive).resolve(), Path(out_dir).resolve()
    if not archive.is_dir():
        raise NotADirectoryError(f"archive is not a directory: {archive}")
    for name, value, allowed in (("tilt", tilt, ("error", "correct")), ("uneven", uneven, ("error", "resample")),
                                 ("fourd", fourd, ("stack", "split", "error"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    with folder_lock(out_dir, timeout_s=lock_timeout_s):
        return _build(archive, out_dir, workers=workers, policy={"tilt": tilt, "uneven": uneven, "fourd": fourd},
                      progress=progress, reuse=reuse, dedup=dedup, near_max_distance=near_max_distance)


def _build(archive: Path, out_dir: Path, *, workers: int, policy: dict, progress: bool, reuse: bool, dedup: bool,
           near_max_distance: int) -> IndexResult:
    t0 = time.perf_counter()
    salt = load_or_create_salt(out_dir)
    timings: dict[str, float] = {}
    show = progress and sys.stderr.isatty()

    found = crawl(archive, exclude=out_dir)
    timings["crawl_s"] = time.perf_counter() - t0
    stamp = _cache_stamp(archive, salt)
    cached = _load_cache(out_dir, stamp) if reuse else None
    keys = {f.rel: hash_identifier(f.rel, salt, 32) for f in found if not f.reason}  # computed once: 20k HMACs
    records, todo, digests = _lookup(found, cached or {}, keys)
    t1 = time.perf_counter()
    timings["lookup_s"] = t1 - t0 - timings["crawl_s"]  # header cache load, path keys, stat comparison
    records.update(_read_all(todo, salt, workers, show))
    timings["read_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    # byte-identical copies are set aside before grouping (a copied slice is not a second slice at its position)
    copies: dict[str, str] = {}
    if dedup:
        copies, compared = duplicate_files([(f.rel, f.path, f.size) for f in found if records.get(f.rel, (None,))[0]],
                                           salt, known=digests)
        digests.update(compared)
    damaged: dict[str, list[Damaged]] = {}  # hashed SeriesInstanceUID -> its truncated files (hashed UIDs)
    for f in found:
        if records.get(f.rel, (None, ""))[1] == Reason.TRUNCATED.value and (d := identify_damaged(f.path)):
            d = d.hashed(salt)
            damaged.setdefault(d.series_uid, []).append(d)
    assessments = AssessCache(out_dir, archive=archive, salt=salt, reuse=reuse, series_columns=SERIES_COLUMNS,
                              rejected_columns=REJECTED_COLUMNS)
    placed, series, rejected, stacks_assessed, stacks_reused = _assess(found, records, copies, salt, archive, policy,
                                                                       damaged, assessments)
    timings["assess_s"] = time.perf_counter() - t2

    duplicates, not_compared = [], 0
    if dedup:
        t_d = time.perf_counter()
        duplicates, not_compared = mark_duplicates(found, placed, series, copies, salt, policy, workers=workers,
                                                   show=show, max_distance=near_max_distance)
        timings["dedup_s"] = time.perf_counter() - t_d

    rows = []
    path_of = {f.rel: f.path for f in found}
    for f in found:
        rec, reason = records.get(f.rel, (None, f.reason))
        if f.rel in copies:  # skipped, with the series key of the copy it duplicates (if that one was grouped)
            status, reason, key = "skipped", Reason.DUPLICATE_FILE.value, placed[path_of[copies[f.rel]]][2]
        else:
            status, reason, key = placed[f.path] if rec else ("skipped", reason, "")
        rows.append({"path": printable_name(f.rel), "size": f.size, "status": status, "reason": reason,
                     "series_key": key})
    seen, indexed = len(found), sum(r["status"] == "indexed" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    non_utf8 = sum(not is_utf8_name(f.rel) for f in found)
    if seen != indexed + skipped or len({r["path"] for r in rows}) != seen or any(
            r["status"] == "skipped" and not r["reason"] for r in rows):
        raise AssertionError(f"index accounting broken: seen {seen} != indexed {indexed} + skipped {skipped}")
    reason_counts = dict(sorted(Counter(r["reason"] for r in rows if r["status"] == "skipped").items()))

    t3 = time.perf_counter()
    outputs = {"files.csv": _csv_text(FILES_COLUMNS, rows), "series.csv": _csv_text(SERIES_COLUMNS, series),
               "rejected_series.csv": _csv_text(REJECTED_COLUMNS, rejected)}
    if dedup:
        outputs["duplicates.csv"] = _csv_text(DUPLICATES_COLUMNS, duplicates)
    else:
        (out_dir / "duplicates.csv").unlink(missing_ok=True)  # a stale report would contradict series.csv
    unchanged = [name for name, text in outputs.items() if not _write_if_changed(out_dir / name, text)]
    entries = _cache_entries(found, records, keys, digests)
    if entries != cached:  # None (no usable cache) never equals; an unchanged archive rebuilds the same entries
        atomic_write_text(out_dir / CACHE_FILE, json.dumps({**stamp, "files": entries}, separators=(",", ":")))
    else:
        unchanged.append(CACHE_FILE)
    if not assessments.save():
        unchanged.append(assessments.path.name)
    timings["write_s"] = time.perf_counter() - t3
    elapsed = time.perf_counter() - t0
    timings["total_s"] = elapsed
    result = IndexResult(archive=archive, out_dir=out_dir, seen=seen, indexed=indexed, skipped=skipped,
                         reason_counts=reason_counts, series=series, rejected=rejected, headers_read=len(todo),
                         headers_reused=len(found) - len(todo) - sum(bool(f.reason) for f in found),
                         elapsed_s=elapsed, timings={k: round(v, 4) for k, v in timings.items()},
                         duplicates=duplicates, stacks_assessed=stacks_assessed, stacks_reused=stacks_reused,
                         unchanged_outputs=sorted(unchanged), non_utf8_names=non_utf8)
    usable = [s for s in series if s["status"] in USABLE_STATUSES]
    kinds = Counter(r["kind"] for r in duplicates)
    summary = {
        # the archive by salted hash, not by path: folder names can hold patient names
        "medssl_version": __version__, "archive_key": hash_identifier(str(archive), salt),
        "counts": {"seen": seen, "indexed": indexed, "skipped": skipped, "n_series": len(series),
                   "n_usable_series": len(usable), "n_patients": len({s["patient_key"] for s in usable}),
                   "n_rejected_series": len(rejected), "headers_read": result.headers_read,
                   "headers_reused": result.headers_reused, "stacks_assessed": stacks_assessed,
                   "stacks_reused": stacks_reused, "non_utf8_names": non_utf8},
        # outputs left as they were because their content would not change (index.json is always written)
        "unchanged_outputs": result.unchanged_outputs,
        "reason_counts": reason_counts,
        "patient_key_sources": dict(sorted(Counter(s["patient_key_source"] for s in series).items())),
        "settings": {**policy, "workers": workers, "reuse": reuse, "dedup": dedup},
        "timings": result.timings,
    }
    if dedup:
        summary["dedup"] = {"duplicate_files": kinds["file"], "duplicate_series": kinds["series"],
                            "near_duplicate_series": kinds["near"], "not_compared": not_compared,
                            "near_max_distance": near_max_distance, "near_bits": NEAR_BITS}
    atomic_write_text(out_dir / "index.json", json.dumps(summary, indent=2) + "\n")
    return result


def load_index(index_dir: Path) -> tuple[list[dict], list[dict]]:
    """``(files rows, series rows)`` of an index folder, with integer and boolean columns typed."""
    def read(name: str) -> list[dict]:
        with open(Path(index_dir) / name, newline="", encoding="utf-8") as fh:
            return [_typed(r) for r in csv.DictReader(fh)]

    return read("files.csv"), read("series.csv")


def series_files(index_dir: Path, archive_root: Path) -> dict[str, list[Path]]:
    """Usable series -> their files (absolute, under ``archive_root``), in series.csv order."""
    files, series = load_index(index_dir)
    out: dict[str, list[Path]] = {s["series_key"]: [] for s in series if s["status"] in USABLE_STATUSES}
    for row in files:
        for key in row["series_key"].split(KEY_SEPARATOR) if row["status"] == "indexed" else ():
            if key in out:
                out[key].append(archive_path(Path(archive_root), row["path"]))
    return out
