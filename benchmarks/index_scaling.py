#!/usr/bin/env python
"""Cost growth of the archive index: ``build_index`` time versus archive size, and re-index of an unchanged archive.

For each size (default 1,000, 5,000 and 20,000 files) a phantom CT archive of ``--size``^2 int16 slices,
``--slices`` per series (:func:`medssl.data.phantoms.write_dicom_series`, shuffled file names), is generated once
into ``--workdir`` and reused while present. Per archive, after one untimed read of every file (page cache warm):

    first index  ``build_index(reuse=False)`` into an empty index folder: crawl, every header, stack validation,
                 manifests and header cache written
    re-index     ``build_index(reuse=True)`` into the same folder with nothing changed: headers come from the
                 header cache (stat-keyed) and stack verdicts from the assessment cache
                 (:mod:`medssl.data.assess_cache`), and unchanged manifests are not rewritten, so the run costs a
                 crawl, a stat per file, loading the caches and comparing the manifests

Reported: seconds, files/s, the per-file cost relative to the smallest archive (linear growth = 1.0; above 1 the
cost per file grows with the archive) and re-index / first index. Each number is the best of ``--repeats``.

Usage::

    python benchmarks/index_scaling.py                        # 1k/5k/20k; writes results/index_scaling.{json,md}
    python benchmarks/index_scaling.py --files 1000 5000 10000  # a smaller top size on a slow machine
    python benchmarks/index_scaling.py --quick --out /tmp       # 100 / 200 / 400 files of 32x32 (the smoke test)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import code_line, code_state, generated_workload, machine, write_results  # shared by every benchmark

REPO = Path(__file__).resolve().parents[1]
#: verdict thresholds: per-file cost of the largest archive / the smallest, and re-index / first index
LINEAR_MAX = 1.25
REINDEX_MAX = 0.2


def archive(workdir: Path, n_files: int, slices: int, size: int) -> tuple[Path, int, int]:
    """(root, files, bytes) of a phantom archive of ``n_files`` files, written once and reused while current (the
    generator of benchmarks/ingest.py, so both benchmarks measure the same kind of archive)."""
    root = generated_workload(workdir, n_files, size, slices).root
    files = [p for p in root.rglob("*") if p.is_file()]
    return root, len(files), sum(p.stat().st_size for p in files)


def warm(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass


def measure(root: Path, index_dir: Path, workers: int, repeats: int) -> dict:
    """Best-of-``repeats`` first index (empty folder each time) and re-index (reuse=True) of ``root``."""
    from medssl.data.index import build_index

    first, again = [], []
    for _ in range(repeats):
        shutil.rmtree(index_dir, ignore_errors=True)
        t0 = time.perf_counter()
        res = build_index(root, index_dir, workers=workers, progress=False, reuse=False)
        first.append((time.perf_counter() - t0, res))
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = build_index(root, index_dir, workers=workers, progress=False, reuse=True)
        again.append((time.perf_counter() - t0, res))
    (t_first, r_first), (t_again, r_again) = min(first, key=lambda x: x[0]), min(again, key=lambda x: x[0])
    if r_again.headers_read:
        print(f"  note: the re-index read {r_again.headers_read} headers again", file=sys.stderr)
    return {"first_s": t_first, "first_all_s": [t for t, _ in first], "first_timings": r_first.timings,
            "reindex_s": t_again, "reindex_all_s": [t for t, _ in again], "reindex_timings": r_again.timings,
            "indexed": r_first.indexed, "series": len(r_first.series), "rejected": len(r_first.rejected),
            "reindex_headers_read": r_again.headers_read, "reindex_headers_reused": r_again.headers_reused}


def markdown(report: dict) -> str:
    m, s, v = report["machine"], report["settings"], report["verdict"]
    lines = ["# Cost growth: build_index time vs archive size, re-index of an unchanged archive", "",
             (f"Machine: {m['cpu']} ({m['cores_usable']} usable cores), {m['date']}; load average start "
             f"{m['loadavg_start']}, end {m.get('loadavg_end')}. build_index with {s['workers']} worker(s), best of "
             f"{s['repeats']}; archives of {s['size']}x{s['size']} int16 phantom CT slices, {s['slices']} per series."),
             "", ("| files | series | MB | first index (s) | files/s | per-file cost vs smallest | re-index (s) | "
             "re-index files/s | re-index / first |"), "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['files']} | {r['series']} | {r['bytes'] / 1e6:.1f} | {r['first_s']:.2f} | "
                     f"{r['first_files_per_s']:.0f} | {r['per_file_cost_ratio']:.3f} | {r['reindex_s']:.3f} | "
                     f"{r['reindex_files_per_s']:.0f} | {r['reindex_over_first']:.3f} |")
    lines += ["", (f"**Growth**: per-file cost of the {v['largest']}-file archive / the {v['smallest']}-file archive = "
              f"**{v['per_file_cost_ratio']:.3f}** (linear = 1.0; verdict <= {LINEAR_MAX}: **{v['growth']}**). "
              f"**Re-index** / first index on the largest archive = **{v['reindex_over_first']:.3f}** "
              f"(verdict <= {REINDEX_MAX}: **{v['reindex']}**)."), "",
              "Where the time goes (seconds of the best run; crawl / header read / stack validation / manifests):", "",
              "| files | first: crawl | read | assess | write | re-index: crawl | read | assess | write |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        f, g = r["first_timings"], r["reindex_timings"]
        cells = [f"{t.get(k, 0.0):.2f}" for t in (f, g) for k in ("crawl_s", "read_s", "assess_s", "write_s")]
        lines.append(f"| {r['files']} | " + " | ".join(cells) + " |")
    lines += ["", "Notes:", "", *[f"- {n}" for n in report["notes"]], "", code_line(report), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, nargs="+", default=[1000, 5000, 20000], help="archive sizes in files")
    p.add_argument("--slices", type=int, default=100, help="slices (files) per series (default 100)")
    p.add_argument("--size", type=int, default=64, help="slice size in pixels (default 64)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="build_index workers")
    p.add_argument("--repeats", type=int, default=2, help="best of N (default 2)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medssl-bench-index",
                   help="archives and indexes; reused across runs (default $TMPDIR/medssl-bench-index)")
    p.add_argument("--quick", action="store_true", help="100 / 200 / 400 files of 32x32, 20 per series, 1 repeat")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.files, args.slices, args.size, args.repeats = [100, 200, 400], 20, 32, 1
    args.files = sorted(set(args.files))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    archives = [archive(args.workdir, n, args.slices, args.size) for n in args.files]  # generation is not timed
    info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]  # after generating: the load while measuring
    results = []
    for root, n_files, n_bytes in archives:
        warm(root)
        r = measure(root, args.workdir / f"index-{root.name}", args.workers, args.repeats)
        r.update(files=n_files, bytes=n_bytes, archive=root.name, first_files_per_s=n_files / r["first_s"],
                 reindex_files_per_s=n_files / r["reindex_s"], first_s_per_file=r["first_s"] / n_files,
                 reindex_over_first=r["reindex_s"] / r["first_s"])
        results.append(r)
        print(f"  {n_files} files: first index {r['first_s']:.2f} s ({r['first_files_per_s']:.0f} files/s), "
              f"re-index {r['reindex_s']:.3f} s", file=sys.stderr, flush=True)
    base = results[0]["first_s_per_file"]
    for r in results:
        r["per_file_cost_ratio"] = r["first_s_per_file"] / base
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    small, large = results[0], results[-1]
    verdict = {"smallest": small["files"], "largest": large["files"],
               "per_file_cost_ratio": large["per_file_cost_ratio"],
               "growth": "linear" if large["per_file_cost_ratio"] <= LINEAR_MAX else "SUPERLINEAR",
               "reindex_over_first": large["reindex_over_first"],
               "reindex": "far below first index" if large["reindex_over_first"] <= REINDEX_MAX else "NOT far below"}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    report = {"benchmark": "index_scaling", "machine": info, "code": code_state(),
              "settings": settings, "results": results,
              "verdict": verdict, "notes": [
                  ("Archives are generated before any timing (not timed) and each is read once untimed, so the page "
                  "cache is warm: the numbers are CPU cost of the index, not disk speed."),
                  ("First index: reuse=False into an emptied index folder (every header parsed); re-index: "
                  "reuse=True on the unchanged archive (headers from the stat-keyed header cache, stack verdicts "
                  "from the assessment cache, unchanged manifests not rewritten)."),
                  (f"Verdicts: growth 'linear' when per-file cost largest/smallest <= {LINEAR_MAX}; re-index 'far "
                  f"below' when re-index/first <= {REINDEX_MAX} on the largest archive.")]}
    name = "index_scaling_quick" if args.quick else "index_scaling"
    print(write_results(args.out, name, report, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
