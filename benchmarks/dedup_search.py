#!/usr/bin/env python
"""Cost of the near-duplicate search of ``medssl index --dedup`` versus the number of series.

:func:`medssl.data.dedup.find_duplicates` compares each series' 511-bit perceptual hash with every hash kept so
far. The hashes are random here (no near duplicates, so every series is kept: the worst case, n²/2 comparisons);
decoding and hashing the volumes is not part of this measurement (``benchmarks/ingest.py`` covers reading).

Reference: the search as first written, which stacked the list of kept hashes into a fresh (kept, 511) boolean
array for every series (quadratic copying on top of the quadratic comparisons). Reported per size: seconds of
both, their ratio (reference / medssl), and nanoseconds per compared pair. Both must return the same rows; the
script checks that on every size it runs the reference for. The reference is skipped above ``--reference-max``
series (it takes minutes there).

Usage::

    python benchmarks/dedup_search.py                    # 1k/5k/20k series; writes results/dedup_search.{json,md}
    python benchmarks/dedup_search.py --quick --out /tmp # 200 / 400 series (the smoke test)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import code_line, code_state, machine, write_results  # shared by every benchmark

REPO = Path(__file__).resolve().parents[1]


class StackedKept:
    """The kept-hash search as first written (the reference): the list of kept hashes re-stacked into a new
    (kept, 511) boolean array for every series. It stands in for ``medssl.data.dedup._KeptBits`` in
    ``find_duplicates``, so both measurements share everything but the search."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.bits: list[np.ndarray] = []

    def nearest(self, bits: np.ndarray) -> tuple[int, int]:
        if not self.bits:
            return -1, len(bits) + 1
        dist = (np.stack(self.bits) != bits).sum(axis=1)
        best = int(np.argmin(dist))
        return best, int(dist[best])

    def add(self, key: str, bits: np.ndarray) -> None:
        self.keys.append(key)
        self.bits.append(bits)


def reference_search(order, prints, max_distance):
    """``find_duplicates`` with the first implementation's kept-hash search."""
    from unittest import mock

    from medssl.data import dedup

    with mock.patch.object(dedup, "_KeptBits", StackedKept):
        return dedup.find_duplicates(order, prints, max_distance)


def timed(fn, *args) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - t0, rows


def markdown(report: dict) -> str:
    lines = ["# Near-duplicate search of `medssl index --dedup`: seconds versus series", "",
             f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores), load average "
             f"{report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}. {code_line(report)}", "",
             "Random 511-bit hashes, every series kept (n²/2 comparisons). Reference: the kept hashes re-stacked "
             "for every series (the first implementation).", "",
             "| series | medssl s | ns per pair | reference s | reference / medssl |", "|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        ref = "–" if r["reference_s"] is None else f"{r['reference_s']:.2f}"
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(f"| {r['series']} | {r['medssl_s']:.2f} | {r['ns_per_pair']:.1f} | {ref} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--reference-max", type=int, default=5000, help="largest size the reference runs at")
    p.add_argument("--quick", action="store_true", help="200 / 400 series, results named dedup_search_quick")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from medssl.data.dedup import NEAR_BITS, NEAR_MAX_DISTANCE, Fingerprint, find_duplicates

    sizes = [200, 400] if args.quick else args.series
    report = {"machine": machine(), "code": code_state(), "sizes": sizes, "results": []}
    for n in sizes:
        rng = np.random.default_rng(n)
        prints = {f"s{i:06d}": Fingerprint(f"e{i}", rng.random(NEAR_BITS) < 0.5) for i in range(n)}
        order = list(prints)
        ours_s, rows = timed(find_duplicates, order, prints, NEAR_MAX_DISTANCE)
        ref_s = None
        if n <= args.reference_max:
            ref_s, ref_rows = timed(reference_search, order, prints, NEAR_MAX_DISTANCE)
            if rows != ref_rows:
                raise SystemExit(f"{n} series: find_duplicates and the reference disagree")
        if rows:  # random hashes are ~255 bits apart; a row here means the workload is not the worst case
            raise SystemExit(f"{n} series: {len(rows)} unexpected duplicates among random hashes")
        report["results"].append({"series": n, "medssl_s": ours_s, "reference_s": ref_s,
                                  "ratio": None if ref_s is None else ref_s / ours_s,
                                  "ns_per_pair": ours_s / (n * (n - 1) / 2) * 1e9})
        print(f"{n} series: {ours_s:.2f} s" + ("" if ref_s is None else f", reference {ref_s:.2f} s"), flush=True)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(write_results(Path(args.out), "dedup_search_quick" if args.quick else "dedup_search", report, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
