#!/usr/bin/env python
"""Memory: peak RSS (peak GPU memory on a GPU) of a few training steps per pretraining config, with and without
gradient checkpointing and bf16 mixed precision, and the largest batch that fits a memory cap per input size.

Every measurement runs in a fresh process (forked from a forkserver that has only imported torch, Lightning, MONAI
and medssl, to save seconds of imports per measurement), so peaks never mix: the child builds the config's method and data module as ``medssl pretrain`` does (:func:`pipeline.build_cli`), takes one real
batch from the data module (num_workers 0), repeats its samples up to the batch size, runs ``--steps`` optimizer
steps under ``L.Trainer.fit`` and reports its own peak resident set size (``VmHWM`` of ``/proc/self/status``, the
kernel's high-water mark; ``getrusage`` elsewhere) and, on CUDA, ``torch.cuda.max_memory_allocated``. Two steps are
the minimum that shows the true peak: the optimizer's state (AdamW: two tensors per weight) is allocated in the
first step and alive during every later backward pass.

Variants per config (``fp32`` / ``bf16-mixed`` x checkpointing off / on): checkpointing is switched on every module
of the built method that has a ``gradient_checkpointing`` flag (medssl's ViT, ResNet, CNN and U-Net encoders
recompute each block or stage in the backward pass); "n/a" where the method has none.

Max batch search (``--search-configs``, ``--sizes``): for the realistic 3D recipes (mae3d.yaml, simclr3d.yaml) at input sizes 64^3, 96^3
and 128^3 (MAE: ``img_size`` and ``patch_size``; SimCLR: the view size, views cut from a patch of the same size),
batch sizes 1, 2, 4, ... double until a probe exceeds ``--mem-cap-gib`` (the parent polls the child's RSS and
kills it as soon as it crosses the cap), then bisection between the last fit and the first failure for at most
``--bisect-steps`` probes. On CPU the search also stops at ``--max-batch``, after ``--search-budget`` seconds per
search and when a probe takes longer than ``--probe-timeout`` seconds; the table then says ">= N" and gives the
memory per sample and a linear extrapolation of the max batch from the probes that fit. On a CUDA machine (``--device cuda``) the cap applies to
``torch.cuda.max_memory_allocated`` instead (code path present; run it where a GPU is lent).

Usage::

    python benchmarks/memory.py                     # RSS table + max batch search, writes results/memory.{json,md}
    python benchmarks/memory.py --quick --out /tmp  # mae3d_demo only, 3 variants + a 2-probe search (smoke)
    python benchmarks/memory.py --device cuda --mem-cap-gib 80 --max-batch 1024   # on a GPU machine
"""
from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import code_line, code_state, machine, write_results  # shared by every benchmark

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
VARIANTS = [("32-true", False), ("32-true", True), ("bf16-mixed", False), ("bf16-mixed", True)]
#: configs of the RSS table: files, whether they read the phantom archive, batch size used (None: the config's)
RSS_CONFIGS: dict[str, dict[str, Any]] = {
    "simclr2d_pneumonia": {"files": ["configs/pretrain/medmnist/simclr.yaml",
                                     "configs/pretrain/medmnist/pneumonia2d_cpu.yaml"], "archive": False,
                           "batch": None},
    "mae3d_demo": {"files": ["configs/pretrain/mae3d_demo.yaml"], "archive": True, "batch": None},
    "simclr3d_quickstart": {"files": ["configs/quickstart/simclr_basicunet.yaml"], "archive": True, "batch": None},
    "mae3d": {"files": ["configs/pretrain/mae3d.yaml"], "archive": True, "batch": None},
    "simclr3d": {"files": ["configs/pretrain/simclr3d.yaml"], "archive": True, "batch": 4},
}
SEARCH_CONFIGS = ("mae3d", "simclr3d")


def size_overrides(config: str, size: int) -> list[str]:
    """Config overrides that make the network's input ``size``^3."""
    cube = f"[{size},{size},{size}]"
    if config.startswith("mae3d"):
        return [f"--model.init_args.img_size={cube}", f"--data.patch_size={cube}"]
    return [f"--data.patch_size={cube}", f"--data.views.init_args.global_size={cube}"]


# ------------------------------------------------------------------------------------------------- child
def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _rss_bytes(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tile(value: Any, n0: int, size: int) -> Any:
    """``value`` with every per-sample tensor (first dim ``n0``) repeated along dim 0 up to ``size`` samples."""
    import torch

    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n0:
        return value[torch.arange(size) % n0].clone()
    if isinstance(value, dict):
        return {k: tile(v, n0, size) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(tile(v, n0, size) for v in value)
    return value


def set_checkpointing(method: Any, on: bool) -> list[str]:
    """Set every ``gradient_checkpointing`` flag of ``method``'s modules; the names of the modules that have one."""
    names = []
    for name, module in method.named_modules():
        if isinstance(getattr(module, "gradient_checkpointing", None), bool):
            module.gradient_checkpointing = on
            names.append(name or type(module).__name__)
    return names


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process; returns the JSON-able result."""
    import lightning as L
    import torch
    from pipeline import batch_len, build_cli, quiet_lightning

    torch.set_num_threads(spec["threads"])
    quiet_lightning()
    os.chdir(REPO)
    cli = build_cli(spec["files"], [*spec["overrides"], f"--data.batch_size={min(2, spec['batch'])}"])
    dm, method = cli.datamodule, cli.model
    dm.num_workers = 0
    dm.prepare_data()
    dm.setup("fit")
    first = next(iter(dm.train_dataloader()))
    batch = tile(first, batch_len(first), spec["batch"])
    del first
    ckpt_modules = set_checkpointing(method, spec["checkpointing"])
    cuda = spec["device"] == "cuda"
    rss_build = _rss_bytes()
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, b, i):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, b, i):
            times.append(time.perf_counter() - self.t0)

    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_steps=spec["steps"], max_epochs=1,
                        precision=spec["precision"], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[Clock()])
    loader = torch.utils.data.DataLoader([batch] * spec["steps"], batch_size=None, shuffle=False)
    trainer.fit(method, train_dataloaders=loader)
    loss = trainer.callback_metrics.get("train/loss")
    return {"peak_rss_bytes": _peak_rss_bytes(), "rss_after_build_bytes": rss_build,
            "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "steps": trainer.global_step, "step_s": times, "loss": None if loss is None else float(loss),
            "checkpointing_modules": ckpt_modules, "params": sum(p.numel() for p in method.parameters())}


# ------------------------------------------------------------------------------------------------ parent
PRELOAD = ["torch", "lightning", "monai", "medssl.training.cli", "pipeline"]
_CONTEXT: Any = None


def _context() -> Any:
    """A forkserver that has imported torch, Lightning, MONAI and medssl once (seconds per child saved); every
    measurement is a fresh process forked from it, whose peak RSS starts at the server's resident imports."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _child_entry(spec: dict, conn: Any) -> None:
    """Forked child: run :func:`child` with its output silenced; send ("ok", result) or ("error", message)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        conn.send(("ok", child(spec)))
    except BaseException as exc:  # noqa: BLE001 - the parent reports it (out of memory is a result)
        conn.send(("error", f"{type(exc).__name__}: {exc}"[-600:]))
    finally:
        conn.close()


def probe(spec: dict, cap_bytes: int | None, timeout_s: float) -> dict:
    """Run one measurement in a fresh process; kill it when its RSS passes ``cap_bytes`` (CPU) or it runs past
    ``timeout_s``."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    # by module name (benchmarks/ is on sys.path), so the forkserver can import the target however this file was run
    target = importlib.import_module("memory")._child_entry
    t0 = time.perf_counter()
    proc = ctx.Process(target=target, args=(spec, send))
    proc.start()
    send.close()
    seen, status, message = 0, None, None
    while message is None and proc.is_alive():
        rss = _rss_bytes(proc.pid)
        seen = max(seen, rss)
        if cap_bytes is not None and spec["device"] == "cpu" and rss > cap_bytes:
            status = "over cap (killed)"
        elif time.perf_counter() - t0 > timeout_s:
            status = "timeout (killed)"
        if status:
            proc.kill()
            break
        if recv.poll(0.05):
            message = recv.recv()
    if message is None and status is None and recv.poll(1.0):
        message = recv.recv()
    proc.join()
    recv.close()
    result: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 2), "max_rss_seen_bytes": seen}
    if status is None and message is not None and message[0] == "ok":
        result.update(message[1], status="ok")
    else:
        error = message[1] if message else ""
        oom = "out of memory" in error.lower() or "can't allocate memory" in error.lower() or proc.exitcode == -9
        result["status"] = status or ("out of memory" if oom else f"failed (exit {proc.exitcode})")
        result["error_tail"] = error
    return result


def peak_of(result: dict) -> int | None:
    if result["status"] != "ok":
        return None
    return result["peak_cuda_bytes"] if result.get("peak_cuda_bytes") is not None else result["peak_rss_bytes"]


def fits(result: dict, cap_bytes: int) -> bool:
    peak = peak_of(result)
    return peak is not None and peak <= cap_bytes


def search(base: dict, cap_bytes: int, args: argparse.Namespace) -> dict:
    """Doubling then bisection on the batch size; every probe in a fresh process."""
    probes, lo, hi, stop = [], 0, None, None

    def run(batch: int) -> bool:
        r = probe({**base, "batch": batch}, cap_bytes, args.probe_timeout)
        ok = fits(r, cap_bytes)
        probes.append({"batch": batch, "fits": ok, "status": r["status"], "peak_bytes": peak_of(r),
                       "wall_s": r["wall_s"], "max_rss_seen_bytes": r["max_rss_seen_bytes"]})
        print(f"      batch {batch}: {r['status']}, peak "
              f"{(peak_of(r) or r['max_rss_seen_bytes']) / GIB:.2f} GiB, {r['wall_s']:.0f} s -> "
              f"{'fits' if ok else 'does not fit'}", file=sys.stderr, flush=True)
        return ok

    t0 = time.perf_counter()

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > args.search_budget

    batch = 1
    while True:
        ok = run(batch)
        if not ok:
            if probes[-1]["status"].startswith("timeout"):
                stop = f"probe over {args.probe_timeout:.0f} s"
            elif probes[-1]["status"].startswith("failed"):
                stop = probes[-1]["status"]
            else:
                hi = batch
            break
        lo = batch
        if batch * 2 > args.max_batch:
            stop = f"--max-batch {args.max_batch}"
            break
        if out_of_time():
            stop = f"--search-budget {args.search_budget:.0f} s"
            break
        batch *= 2
    steps = 0
    while hi is not None and hi - lo > 1 and steps < args.bisect_steps and not out_of_time():
        mid = (lo + hi) // 2
        if run(mid):
            lo = mid
        elif probes[-1]["status"].startswith(("timeout", "failed")):
            stop = probes[-1]["status"]
            break
        else:
            hi = mid
        steps += 1
    fitted = [(p["batch"], p["peak_bytes"]) for p in probes if p["fits"]]
    estimate = None
    if len(fitted) >= 2:  # peak = a + b * batch through the fitting probes (least squares): a rough extrapolation
        n = len(fitted)
        mx, my = sum(b for b, _ in fitted) / n, sum(p for _, p in fitted) / n
        var = sum((b - mx) ** 2 for b, _ in fitted)
        slope = sum((b - mx) * (p - my) for b, p in fitted) / var if var else 0.0
        if slope > 0:
            estimate = {"base_gib": round((my - slope * mx) / GIB, 3), "per_sample_mib": round(slope / 2**20, 2),
                        "max_batch": int((cap_bytes - (my - slope * mx)) // slope)}
    exact = hi is not None and hi - lo == 1
    return {"max_batch": lo, "first_failure": hi, "exact": exact, "stopped_by": stop, "probes": probes,
            "linear_estimate": estimate}


def run_rss(args: argparse.Namespace, archive: dict[str, str]) -> list[dict]:
    rows = []
    for name in args.rss_configs:
        cfg = RSS_CONFIGS[name]
        overrides = list(archive_overrides(name, archive) if cfg["archive"] else medmnist_overrides(args))
        batch = args.quick_batch if args.quick else cfg["batch"]
        if batch is None:
            batch = config_batch(cfg["files"])
        for precision, ckpt in args.variants:
            spec = {"files": cfg["files"], "overrides": overrides, "batch": batch, "precision": precision,
                    "checkpointing": ckpt, "steps": args.steps, "threads": args.threads, "device": args.device}
            r = probe(spec, None, args.probe_timeout * 2)
            row = {"config": name, "batch": batch, "precision": precision, "checkpointing": ckpt, **r}
            if r["status"] == "ok" and not r["checkpointing_modules"] and ckpt:
                row["status"] = "n/a (no checkpointing flag)"
            rows.append(row)
            peak = peak_of(r)
            print(f"    {name} batch {batch} {precision} ckpt={ckpt}: {r['status']}, "
                  f"peak {'-' if peak is None else f'{peak / GIB:.2f} GiB'} ({r['wall_s']:.0f} s)",
                  file=sys.stderr, flush=True)
    return rows


def config_batch(files: list[str]) -> int:
    import yaml

    batch = None
    for f in files:
        data = yaml.safe_load((REPO / f).read_text()) or {}
        batch = (data.get("data") or {}).get("batch_size", batch)
    return int(batch or 4)


def archive_overrides(name: str, archive: dict[str, str]) -> list[str]:
    return [f"--data.source.init_args.index_dir={archive['index']}",
            f"--data.source.init_args.archive_root={archive['root']}",
            f"--data.source.init_args.cache_dir={archive['cache']}"]


def medmnist_overrides(args: argparse.Namespace) -> list[str]:
    if args.quick:
        from pipeline import tiny_medmnist

        return [f"--data.source.init_args.path={tiny_medmnist(args.workdir, 96)}"]
    return [f"--data.source.init_args.path={args.medmnist}"] if args.medmnist else []


# --------------------------------------------------------------------------------------------- reporting
def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    unit = "peak GPU memory allocated" if s["device"] == "cuda" else "peak RSS"
    lines = ["# Memory: peak per config, checkpointing, mixed precision, max batch size", "",
             (f"Machine: {m['cpu']} ({m['cores_usable']} usable cores, {m['ram_gib']} GiB RAM), torch "
             f"{m['versions'].get('torch')}, device {s['device']}, {m['date']}; load average start "
             f"{m['loadavg_start']}, end {m.get('loadavg_end')}."), "",
             f"## {unit} (GiB) of {s['steps']} training steps, one fresh process per cell", "",
             ("| config | batch | fp32 | fp32 + checkpointing | bf16-mixed | bf16-mixed + checkpointing | "
             "RSS after build (GiB) | checkpointing saves (fp32) |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_config: dict[str, dict] = {}
    for r in report["rss"]:
        by_config.setdefault(r["config"], {})[(r["precision"], r["checkpointing"])] = r
    for name, cells in by_config.items():
        def cell(key: tuple[str, bool], cells: dict = cells) -> str:
            r = cells.get(key)
            if r is None:
                return "-"
            return _gib(peak_of(r)) if r["status"] == "ok" else r["status"]

        plain, ck = cells.get(("32-true", False)), cells.get(("32-true", True))
        saving = "-"
        if plain and ck and peak_of(plain) and peak_of(ck) and ck["status"] == "ok":
            saving = f"{100 * (1 - peak_of(ck) / peak_of(plain)):.0f}%"
        batch = next(iter(cells.values()))["batch"]
        build = _gib(next(iter(cells.values())).get("rss_after_build_bytes"))
        lines.append(f"| {name} | {batch} | " + " | ".join(cell(k) for k in VARIANTS) + f" | {build} | {saving} |")
    if report.get("search"):
        lines += ["", (f"## Max batch size under a {s['mem_cap_gib']} GiB cap ({unit}; config precision and "
                  "checkpointing)"), "",
                  ("| config | input | max batch that fit | first batch over the cap | peak at max batch (GiB) | "
                  "MiB per sample (fit) | linear estimate of max batch | stopped by |"),
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in report["search"]:
            best = max((p for p in r["probes"] if p["fits"]), key=lambda p: p["batch"], default=None)
            shown = str(r["max_batch"]) if r["exact"] or r["first_failure"] is not None else f">= {r['max_batch']}"
            est = r["linear_estimate"] or {}
            lines.append(f"| {r['config']} | {r['size']}^3 | {shown} | {r['first_failure'] or '-'} | "
                         f"{_gib(best['peak_bytes'] if best else None)} | {est.get('per_sample_mib', '-')} | "
                         f"{est.get('max_batch', '-')} | {r['stopped_by'] or 'bisection'} |")
    lines += ["", "Notes:", "", *[f"- {n}" for n in report["notes"]], "",
              f"Run: {report['wall_s']} s; settings: " + json.dumps(report["settings"]), "", code_line(report), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rss-configs", nargs="+", default=list(RSS_CONFIGS), choices=list(RSS_CONFIGS))
    p.add_argument("--search-configs", nargs="*", default=list(SEARCH_CONFIGS), choices=list(RSS_CONFIGS))
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="max batch search input sizes")
    p.add_argument("--mem-cap-gib", type=float, default=8.0, help="memory cap of the max batch search (default 8)")
    p.add_argument("--max-batch", type=int, default=64, help="stop doubling beyond this batch (default 64)")
    p.add_argument("--bisect-steps", type=int, default=2, help="bisection probes after doubling (default 2)")
    p.add_argument("--probe-timeout", type=float, default=90.0, help="seconds per search probe (default 90)")
    p.add_argument("--search-budget", type=float, default=60.0,
                   help="no new probe after this many seconds per (config, size) search (default 60)")
    p.add_argument("--steps", type=int, default=2, help="training steps per measurement (default 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--phantoms", type=int, default=4, help="phantom cases the 3D configs read (default 4)")
    p.add_argument("--medmnist", help="PneumoniaMNIST .npz (default: the path in the config)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medssl-bench-memory")
    p.add_argument("--quick", action="store_true", help="mae3d_demo at batch 2 (fp32, fp32 + checkpointing, bf16), "
                                                        "one search at 32^3 up to batch 2 (smoke test)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.quick_batch = 2
    args.variants = VARIANTS
    if args.quick:  # every child process costs seconds of imports: the fewest that exercise every code path
        args.rss_configs, args.search_configs, args.sizes = ["mae3d_demo"], ["mae3d_demo"], [32]
        args.variants = [("32-true", False), ("32-true", True), ("bf16-mixed", False)]
        args.max_batch, args.bisect_steps, args.phantoms = 2, 0, 2
    if args.steps < 2:
        p.error("--steps must be >= 2 (the optimizer state exists only from the second step's backward on)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline import phantom_archive

    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    t0 = time.perf_counter()
    root, index = phantom_archive(args.workdir, args.phantoms, (32, 32, 32) if args.quick else (64, 64, 48))
    archive = {"root": str(root), "index": str(index), "cache": str(args.workdir / "cache")}
    print("[peak memory per config]", file=sys.stderr, flush=True)
    rss = run_rss(args, archive)
    cap = int(args.mem_cap_gib * GIB)
    searches = []
    for name in args.search_configs:
        cfg = RSS_CONFIGS[name]
        for size in args.sizes:
            print(f"[max batch] {name} at {size}^3, cap {args.mem_cap_gib} GiB", file=sys.stderr, flush=True)
            base = {"files": cfg["files"], "overrides": [*archive_overrides(name, archive),
                                                         *size_overrides(name, size)],
                    "precision": "bf16-mixed" if name in ("mae3d", "simclr3d") else "32-true",
                    "checkpointing": name == "mae3d", "steps": args.steps, "threads": args.threads,
                    "device": args.device}
            searches.append({"config": name, "size": size, "precision": base["precision"],
                             "checkpointing": base["checkpointing"], **search(base, cap, args)})
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("out", "quick_batch", "variants")}
    settings["variants"] = [f"{p}{' + checkpointing' if c else ''}" for p, c in args.variants]
    report = {"benchmark": "memory", "machine": info, "code": code_state(),
              "settings": settings, "wall_s": round(time.perf_counter() - t0, 1),
              "rss": rss, "search": searches, "notes": [
                  ("Peak RSS is the whole process (Python, torch, Lightning, the data module with one real batch, "
                  "weights, gradients, AdamW state, activations); 'RSS after build' is the process after building the "
                  "method and data module and loading one batch, before any step."),
                  ("Batches are one real batch from the config's data module with its samples repeated up to the "
                  "batch size (identical shapes and keys to training). The 3D configs read phantom CT volumes "
                  "(medssl.data.phantoms, 64x64x48 voxels) through the index and preprocessing cache, padded up to "
                  "the patch size where smaller."),
                  ("simclr3d is measured at batch 4 in the first table (the recipe's 64 is a multi-GPU batch: one CPU "
                  "step would take minutes); the GPU recipes (mae3d, simclr3d) are run on CPU here, their bf16-mixed "
                  "through CPU autocast."),
                  ("Max batch search: the recipe's own precision (bf16-mixed) and checkpointing (mae3d: on); input "
                  "size = MAE img_size and patch; SimCLR view size (patch of the same size). 'first batch over the "
                  "cap' is the smallest batch measured above it; '>= N' means the search stopped before any batch "
                  "failed (max batch or time limit) and the linear estimate (peak = a + b * batch through the fitting "
                  "probes) is an extrapolation, not a measurement."),
                  ("On CUDA the cap and the table use torch.cuda.max_memory_allocated (the caching allocator's "
                   "reserve is higher); this run used " + args.device + ".")]}
    name = "memory_quick" if args.quick else "memory"
    print(write_results(args.out, name, report, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
