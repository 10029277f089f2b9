#!/usr/bin/env python
"""Ingestion benchmark: DICOM archive -> volumes in memory, medssl vs SimpleITK vs dicom2nifti, measured in one run.

Workloads:
    real       the dcm_qa GE fMRI series ``mr_0004`` / ``mr_0007`` (150 files each, 4D) and the gantry-tilted GE CT
               (28 files, 512x512) from ``$MEDSSL_SHARED_DATA/dicom``, copied (``.dcm`` files only) into the workdir
    generated  ``--files / --slices`` CT phantom series of ``--size``^2 int16 slices written by
               :func:`medssl.data.phantoms.write_dicom_series`; generated once and reused while present

Tools, each over every series, sequentially and with 2 worker processes:
    medssl      ``build_index`` over the archive, then ``read_dicom_series`` on every indexed series (index + read)
    SimpleITK   ``ImageSeriesReader``: GetGDCMSeriesIDs + GetGDCMSeriesFileNames + Execute per series folder
    dicom2nifti ``common.read_dicom_directory`` + ``convert_dicom.dicom_array_to_nifti`` per folder (.nii to a tmp dir)

Usage::

    python benchmarks/ingest.py                  # full run (~5,000 generated files + the real series)
    python benchmarks/ingest.py --quick          # 3 x 20 slices of 64x64, no real data, one repeat (smoke test)
    python benchmarks/ingest.py --profile        # cProfile of medssl index + read on the generated archive
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import logging
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.5
HEADLINE = ("medssl_index_read_w2", "sitk_w2")
POLICY = {"tilt": "correct", "uneven": "resample"}  # the GE CT has a gantry tilt and uneven slices
REAL_SERIES = {"ge_fmri_mr_0004": "dcm_qa_nih/In/20180918GE/mr_0004",
               "ge_fmri_mr_0007": "dcm_qa_nih/In/20180918GE/mr_0007",
               "ge_ct_tilt": "dcm_qa_ct/In/GE"}
LABELS = {"medssl_index": "medssl build_index", "medssl_read": "medssl read_dicom_series",
          "medssl_index_read": "medssl index + read", "sitk": "SimpleITK ImageSeriesReader",
          "dicom2nifti": "dicom2nifti (to .nii)"}
NOTES = [
    ("Each measurement is the best of N repeats (N in settings); before timing, one untimed pass reads every byte of "
    "every file (page cache warm for all tools alike) and each tool reads one series untimed (imports, plugins)."),
    ("Throughput is over the series a tool actually read; MB = 10^6 bytes of DICOM files. Ratios are medssl "
    "throughput / other tool's throughput (> 1: medssl faster)."),
    ("medssl index + read = build_index (crawl, header of every file, stack validation, manifests and header cache "
    "written; reuse=False) then read_dicom_series on each indexed series (which parses the headers again). "
    "The re-index row is build_index(reuse=True) over an unchanged archive."),
    ("2 workers = a ProcessPoolExecutor (fork) of 2 over series, pool start-up inside the timing; workers return "
    "shapes only, volumes are not shipped back. build_index uses its own pool of `workers` processes. SimpleITK is "
    "pinned to 1 ITK thread per process so that 'N workers' means N cores for every tool."),
    ("dicom2nifti goes through its read-a-folder + convert path writing an uncompressed .nii to a temp dir (its GE 4D "
    "path needs an output file); dicom_series_to_nifti would also copy the folder first, so this is its fast path."),
    ("Real workload, read time compared honestly: medssl reads with tilt='correct', uneven='resample', so the GE CT "
    "(gantry tilt, 28 slices) is resampled onto a tilt-corrected equidistant grid, work the others do not do: "
    "SimpleITK reads the 28 slices as stored without any tilt handling (sheared geometry ignored) and dicom2nifti "
    "refuses the series (see outputs). The GE fMRI series are 4D: medssl returns X x Y x Z x T, SimpleITK one 3D "
    "stack of all 150 slices."),
]


# ------------------------------------------------------------------------------------------------ workloads
@dataclass
class Workload:
    name: str
    root: Path                                  # the archive medssl indexes
    series: dict[str, Path]                     # label -> folder of one series (what SimpleITK / dicom2nifti get)
    description: str
    n_files: int = 0
    n_bytes: int = 0

    def __post_init__(self) -> None:
        files = [p for d in self.series.values() for p in d.iterdir() if p.is_file()]
        self.n_files, self.n_bytes = len(files), sum(p.stat().st_size for p in files)

    def files(self) -> list[Path]:
        return sorted(p for d in self.series.values() for p in d.iterdir() if p.is_file())


def real_workload(shared: Path, workdir: Path) -> Workload | None:
    """Copy the three real series (``.dcm`` only: no README) into ``workdir/real``; None when the data is absent."""
    root = workdir / "real"
    series = {}
    for label, rel in REAL_SERIES.items():
        src = shared / "dicom" / rel
        if not src.is_dir():
            return None
        dst = root / label
        wanted = sorted(src.glob("*.dcm"))
        if not dst.is_dir() or len(list(dst.iterdir())) != len(wanted):
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            for f in wanted:
                shutil.copyfile(f, dst / f.name)
        series[label] = dst
    return Workload("real", root, series, "dcm_qa GE fMRI mr_0004 + mr_0007 (4D, 64x64), GE CT with gantry tilt "
                                          "(512x512), copied from the shared data folder")


def generated_workload(workdir: Path, n_files: int, size: int, slices: int) -> Workload:
    """``n_files / slices`` phantom CT series (axial, spacings cycling over 4 values, shuffled file names)."""
    from medssl.data.phantoms import SPACINGS, make_phantom, phantom_affine, write_dicom_series

    n_series = max(1, round(n_files / slices))
    root = workdir / f"generated-{n_series}x{slices}x{size}px"
    marker = workdir / f"{root.name}.json"  # beside the archive, not in it: the index would count it
    params = {"n_series": n_series, "slices": slices, "size": size, "generator": "medssl.data.phantoms"}
    if not (marker.is_file() and json.loads(marker.read_text()) == params):
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        for i in range(n_series):
            shape, spacing = (size, size, slices), SPACINGS[i % len(SPACINGS)]
            image, _ = make_phantom(shape, spacing, seed=i)
            write_dicom_series(image, phantom_affine(shape, spacing), root / f"series_{i:03d}", series_number=i + 1,
                               patient_id=f"BENCH-{i:04d}", seed=i)
            print(f"\r  generating {root.name}: series {i + 1}/{n_series}", end="", file=sys.stderr, flush=True)
        print(f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        marker.write_text(json.dumps(params))
    series = {d.name: d for d in sorted(root.iterdir()) if d.is_dir()}
    return Workload("generated", root, series, f"{n_series} phantom CT series x {slices} slices of {size}x{size} int16 "
                                               "(medssl.data.phantoms.write_dicom_series)")


# ---------------------------------------------------------------------------------------------------- tools
def _medssl(files: list[str]) -> dict:
    from medssl.data.dicom import read_dicom_series

    vol = read_dicom_series([Path(f) for f in files], **POLICY)
    return {"shape": list(vol.shape), "dtype": str(vol.dtype).replace("torch.", "")}


def _sitk(folder: str) -> dict:
    import SimpleITK as sitk

    reader, shapes = sitk.ImageSeriesReader(), []
    for uid in reader.GetGDCMSeriesIDs(folder):
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, uid))
        image = reader.Execute()
        shapes.append(list(image.GetSize()))
    if not shapes:
        raise RuntimeError("no DICOM series found")
    return {"shape": shapes[0] if len(shapes) == 1 else shapes, "dtype": image.GetPixelIDTypeAsString()}


def _dicom2nifti(folder: str) -> dict:
    from dicom2nifti import common, convert_dicom

    with tempfile.TemporaryDirectory() as tmp:
        out = convert_dicom.dicom_array_to_nifti(common.read_dicom_directory(folder), os.path.join(tmp, "s.nii"))
        return {"shape": list(out["NII"].shape), "dtype": str(out["NII"].get_data_dtype())}


TOOLS = {"medssl": _medssl, "sitk": _sitk, "dicom2nifti": _dicom2nifti}


def _quiet() -> None:
    """Per process: no SimpleITK warnings, 1 ITK thread, no dicom2nifti log noise."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    logging.getLogger("dicom2nifti").setLevel(logging.CRITICAL)


def _job(job: tuple[str, object]) -> dict:
    tool, item = job
    t0 = time.perf_counter()
    try:
        out = {"ok": True, **TOOLS[tool](item)}
    except Exception as exc:  # noqa: BLE001 - a refused series is a result to report, not a crash
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:240]}
    return {**out, "seconds": time.perf_counter() - t0}


def run_jobs(tool: str, items: list, workers: int) -> list[dict]:
    jobs = [(tool, item) for item in items]
    if workers <= 1:
        return [_job(j) for j in jobs]
    with ProcessPoolExecutor(workers, initializer=_quiet) as pool:
        return list(pool.map(_job, jobs))


# ------------------------------------------------------------------------------------------------- measuring
@dataclass
class Measure:
    key: str
    workers: int
    seconds: float
    n_files: int
    n_bytes: int
    series_ok: int
    series_total: int
    outputs: dict = field(default_factory=dict)        # series label -> shape or error
    extra: dict = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.n_files / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.n_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "files_per_s": round(self.files_per_s, 2), "mb_per_s": round(self.mb_per_s, 3)}


def _size(paths) -> tuple[int, int]:
    return len(paths), sum(os.path.getsize(p) for p in paths)


def _summarise(key, workers, seconds, labels, groups, results, extra=None) -> Measure:
    ok = [i for i, r in enumerate(results) if r["ok"]]
    n, b = _size([p for i in ok for p in groups[i]])
    outputs = {lab: (f"{'x'.join(map(str, r['shape']))} {r['dtype']}" if r["ok"] else r["error"])
               + f" ({r['seconds']:.2f} s)" for lab, r in zip(labels, results)}
    return Measure(key, workers, seconds, n, b, len(ok), len(results), outputs, extra or {})


def best_of(repeats: int, run) -> Measure:
    return min((run() for _ in range(repeats)), key=lambda m: m.seconds)


def medssl_pipeline(wl: Workload, index_dir: Path, workers: int) -> list[Measure]:
    """build_index (no reuse) then read every indexed series: [index, read, index + read]."""
    from medssl.data.index import build_index, series_files

    t0 = time.perf_counter()
    res = build_index(wl.root, index_dir, workers=workers, progress=False, reuse=False, **POLICY)
    t1 = time.perf_counter()
    series = series_files(index_dir, wl.root)
    groups = list(series.values())
    results = run_jobs("medssl", [[str(p) for p in g] for g in groups], workers)
    t2 = time.perf_counter()
    labels = [g[0].parent.relative_to(wl.root).as_posix() for g in groups]
    counts = {"seen": res.seen, "indexed": res.indexed, "skipped": res.skipped, "n_series": len(res.series),
              "headers_read": res.headers_read, "timings": res.timings}
    index = Measure(f"medssl_index_w{workers}", workers, t1 - t0, wl.n_files, wl.n_bytes, len(res.series),
                    len(res.series) + len(res.rejected), extra=counts)
    read = _summarise(f"medssl_read_w{workers}", workers, t2 - t1, labels, groups, results)
    both = _summarise(f"medssl_index_read_w{workers}", workers, t2 - t0, labels, groups, results,
                      {"index_s": round(t1 - t0, 4), "read_s": round(t2 - t1, 4)})
    return [index, read, both]


def measure_folders(tool: str, wl: Workload, workers: int) -> Measure:
    labels, dirs = list(wl.series), list(wl.series.values())
    groups = [[p for p in d.iterdir() if p.is_file()] for d in dirs]
    t0 = time.perf_counter()
    results = run_jobs(tool, [str(d) for d in dirs], workers)
    return _summarise(f"{tool}_w{workers}", workers, time.perf_counter() - t0, labels, groups, results)


def warm(wl: Workload) -> None:
    """Untimed: every byte of every file once (page cache), then one small series per tool (imports, plugins)."""
    for p in wl.files():
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass
    smallest = min(wl.series.values(), key=lambda d: sum(f.stat().st_size for f in d.iterdir()))
    files = sorted(str(p) for p in smallest.iterdir())
    for tool, item in (("medssl", files), ("sitk", str(smallest)), ("dicom2nifti", str(smallest))):
        _job((tool, item))


def bench_workload(wl: Workload, workdir: Path, repeats: int) -> dict:
    from medssl.data.index import build_index

    print(f"[{wl.name}] {wl.n_files} files, {wl.n_bytes / 1e6:.1f} MB, {len(wl.series)} series folders",
          file=sys.stderr)
    warm(wl)
    measures: dict[str, Measure] = {}
    for workers in (1, 2):
        index_dir = workdir / f"index-{wl.name}-w{workers}"
        runs = [medssl_pipeline(wl, index_dir, workers) for _ in range(repeats)]
        for m in min(runs, key=lambda r: r[2].seconds):  # the repeat with the best index + read
            measures[m.key] = m
        reuse_dir = index_dir
    t_reuse = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = build_index(wl.root, reuse_dir, workers=2, progress=False, reuse=True, **POLICY)
        t_reuse.append(time.perf_counter() - t0)
    measures["medssl_reindex_reuse_w2"] = Measure("medssl_reindex_reuse_w2", 2, min(t_reuse), wl.n_files, wl.n_bytes,
                                                  len(res.series), len(res.series) + len(res.rejected),
                                                  extra={"headers_read": res.headers_read,
                                                         "headers_reused": res.headers_reused})
    for tool in ("sitk", "dicom2nifti"):
        for workers in (1, 2):
            m = best_of(repeats, lambda tool=tool, workers=workers: measure_folders(tool, wl, workers))
            measures[m.key] = m
        print(f"  {tool} done", file=sys.stderr)

    def ratio(a: str, b: str) -> float | None:
        fa, fb = measures[a].files_per_s, measures[b].files_per_s
        return round(fa / fb, 3) if fa and fb else None

    ratios = {}
    for w in (1, 2):
        ratios[f"index_read_vs_sitk_w{w}"] = ratio(f"medssl_index_read_w{w}", f"sitk_w{w}")
        ratios[f"index_read_vs_dicom2nifti_w{w}"] = ratio(f"medssl_index_read_w{w}", f"dicom2nifti_w{w}")
        ratios[f"read_vs_sitk_w{w}"] = ratio(f"medssl_read_w{w}", f"sitk_w{w}")
        ratios[f"read_vs_dicom2nifti_w{w}"] = ratio(f"medssl_read_w{w}", f"dicom2nifti_w{w}")
    return {"description": wl.description, "n_files": wl.n_files, "n_bytes": wl.n_bytes, "n_series": len(wl.series),
            "results": {k: m.as_dict() for k, m in measures.items()}, "ratios": ratios}


# -------------------------------------------------------------------------------------------------- reporting
def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal")), 0)
    versions = {}
    for name in ("medssl", "torch", "pydicom", "SimpleITK", "dicom2nifti", "numpy", "monai"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "ram_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def code_state() -> dict:
    """The commit measured and which files under medssl/ differed from it (read-only git queries)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # (porcelain lines are "XY path"; git() strips the output, which eats the first line's leading blank status)
    changed = [ln.split(maxsplit=1)[-1] for ln in git("status", "--porcelain", "--", "medssl").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "uncommitted_medssl_files": changed}



def code_line(report: dict) -> str:
    """The markdown line naming the measured commit and any uncommitted medssl/ files (``report["code"]``)."""
    code = report.get("code") or {}
    return (f"Code: commit {code.get('commit')}, uncommitted changes under medssl/: "
            f"{', '.join(code.get('uncommitted_medssl_files') or []) or 'none'}.")


def write_results(out: Path, name: str, report: dict, markdown) -> str:
    """Write ``out/<name>.json`` (every number) and ``out/<name>.md`` (``markdown(report)``); return the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    return text

def _busy_cpu_s() -> float:
    """CPU seconds all processes on the machine spent so far (``/proc/stat``), or 0 where unavailable."""
    try:
        fields_ = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields_ + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    import resource

    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in own)


def _name(key: str) -> str:
    if key == "medssl_reindex_reuse_w2":
        return "medssl re-index (reuse=True)"
    return LABELS[key.rsplit("_w", 1)[0]]


def markdown(report: dict) -> str:
    m, head = report["machine"], report["headline"]
    lines = ["# Ingestion benchmark", "",
             (f"**Headline** ({head['workload']}): {head['medssl']} vs {head['reference']} = "
             f"**{head['ratio']}x** (target >= {TARGET}x): **{head['status']}**"), ""]
    for name, wl in report["workloads"].items():
        lines += [f"## {name}: {wl['description']}", "",
                  f"{wl['n_files']} files, {wl['n_bytes'] / 1e6:.1f} MB, {wl['n_series']} series", "",
                  "| measurement | workers | time (s) | files/s | MB/s | series read |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in wl["results"].values():
            lines.append(f"| {_name(r['key'])} | {r['workers']} | {r['seconds']:.3f} | {r['files_per_s']:.1f} | "
                         f"{r['mb_per_s']:.2f} | {r['series_ok']}/{r['series_total']} |")
        lines += ["", "| ratio (medssl / other, throughput) | 1 worker | 2 workers |", "|---|---:|---:|"]
        for what, title in (("index_read_vs_sitk", "index + read / SimpleITK"),
                            ("index_read_vs_dicom2nifti", "index + read / dicom2nifti"),
                            ("read_vs_sitk", "read only / SimpleITK"),
                            ("read_vs_dicom2nifti", "read only / dicom2nifti")):
            lines.append(f"| {title} | {wl['ratios'][what + '_w1']} | {wl['ratios'][what + '_w2']} |")
        if name == "real":
            lines += ["", "Outputs per series, 1 worker (shape, dtype or error; seconds for that series):", "",
                      "| series | medssl | SimpleITK | dicom2nifti |", "|---|---|---|---|"]
            res = wl["results"]
            for label in res["sitk_w1"]["outputs"]:
                cells = [res[k]["outputs"].get(label, "") for k in ("medssl_read_w1", "sitk_w1", "dicom2nifti_w1")]
                lines.append(f"| {label} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + ["", "## Machine", "",
              f"- CPU: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), RAM {m['ram_gib']} GiB",
              f"- Python {m['python']} on {m['platform']}",
              "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
              f"- date {m['date']}; load average start {m['loadavg_start']}, end {m['loadavg_end']}",
              (f"- other processes used {m['contention']['other_processes_cpu_s']} CPU-s during the "
              f"{m['contention']['wall_s']} s run (on average {m['contention']['other_processes_cores']} of "
              f"{m['cores']} cores busy with other work)"),
              f"- settings: {json.dumps(report['settings'])}",
              (f"- code: commit {report['code']['commit']}, uncommitted changes under medssl/: "
               f"{', '.join(report['code']['uncommitted_medssl_files']) or 'none'}"), ""]
    return "\n".join(lines)


def print_table(report: dict) -> None:
    for name, wl in report["workloads"].items():
        print(f"\n{name}: {wl['n_files']} files, {wl['n_bytes'] / 1e6:.1f} MB")
        print(f"  {'measurement':34s} {'w':>2s} {'time s':>9s} {'files/s':>9s} {'MB/s':>8s} {'series':>7s}")
        for r in wl["results"].values():
            print(f"  {_name(r['key']):34s} {r['workers']:2d} {r['seconds']:9.3f} {r['files_per_s']:9.1f} "
                  f"{r['mb_per_s']:8.2f} {r['series_ok']:>3d}/{r['series_total']:<3d}")
        print("  ratios (medssl / other):", ", ".join(f"{k} {v}" for k, v in wl["ratios"].items()))
    h = report["headline"]
    print(f"\nHEADLINE ({h['workload']}): {h['medssl']} vs {h['reference']}: {h['ratio']}x "
          f"(target >= {TARGET}x) -> {h['status']}")


# ---------------------------------------------------------------------------------------------------- profile
def profile(wl: Workload, workdir: Path, top: int = 20) -> None:
    """cProfile of medssl index (1 worker, no reuse) + sequential read of every series, in this process."""
    from medssl.data.dicom import read_dicom_series
    from medssl.data.index import build_index, series_files

    warm(wl)
    index_dir = workdir / f"index-{wl.name}-profile"
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    build_index(wl.root, index_dir, workers=1, progress=False, reuse=False, **POLICY)
    for files in series_files(index_dir, wl.root).values():
        read_dicom_series(files, **POLICY)
    prof.disable()
    print(f"medssl index + read of {wl.n_files} files under cProfile: {time.perf_counter() - t0:.2f} s")
    stats = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 2)


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=5000, help="generated archive: number of files (default 5000)")
    p.add_argument("--size", type=int, default=256, help="generated archive: slice size in pixels (default 256)")
    p.add_argument("--slices", type=int, default=200, help="generated archive: slices per series (default 200)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medssl-bench-ingest",
                   help="archives and indexes; reused across runs (default: $TMPDIR/medssl-bench-ingest)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results folder")
    p.add_argument("--repeats", type=int, default=2, help="best of N per measurement (default 2)")
    p.add_argument("--shared-data", type=Path,
                   default=Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--skip-real", action="store_true", help="only the generated archive")
    p.add_argument("--quick", action="store_true", help="3 series x 20 slices of 64x64, no real data, 1 repeat")
    p.add_argument("--profile", action="store_true", help="only profile medssl index + read (no results written)")
    args = p.parse_args(argv)
    if args.quick:
        args.files, args.size, args.slices, args.repeats, args.skip_real = 60, 64, 20, 1, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    _quiet()
    generated = generated_workload(args.workdir, args.files, args.size, args.slices)
    if args.profile:
        profile(generated, args.workdir)
        return 0
    info = machine()
    t_start, busy_start, own_start = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
    workloads = [] if args.skip_real else [real_workload(args.shared_data.resolve(), args.workdir)]
    if workloads and workloads[0] is None:
        print(f"real data not found under {args.shared_data}/dicom: real workload skipped", file=sys.stderr)
        workloads = []
    workloads.append(generated)
    report = {"benchmark": "ingest", "machine": info, "code": code_state(),
              "settings": {"repeats": args.repeats, "files": args.files, "size": args.size, "slices": args.slices,
                           "quick": args.quick, "policy": POLICY, "sitk_threads_per_process": 1,
                           "warmup": "one untimed read of every file + one untimed series per tool; best of repeats"},
              "workloads": {wl.name: bench_workload(wl, args.workdir, args.repeats) for wl in workloads}}
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    wall = time.perf_counter() - t_start
    other = max(0.0, _busy_cpu_s() - busy_start - (_own_cpu_s() - own_start))
    info["contention"] = {"wall_s": round(wall, 1), "other_processes_cpu_s": round(other, 1),
                          "other_processes_cores": round(other / wall, 2) if wall > 0 else 0.0}
    ratio = report["workloads"]["generated"]["ratios"]["index_read_vs_sitk_w2"]
    report["headline"] = {"workload": "generated", "medssl": "medssl index + read, 2 workers",
                          "reference": "SimpleITK ImageSeriesReader, 2 workers", "keys": list(HEADLINE),
                          "ratio": ratio, "target": TARGET,
                          "status": "PASS" if ratio is not None and ratio >= TARGET else "BELOW TARGET"}
    report["notes"] = NOTES if "real" in report["workloads"] else NOTES[:-1]
    write_results(args.out, "ingest", report, markdown)
    print_table(report)
    print(f"\nwrote {args.out / 'ingest.json'} and {args.out / 'ingest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
