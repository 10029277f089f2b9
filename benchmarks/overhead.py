#!/usr/bin/env python
"""Framework overhead: a training step of medssl's MAE and SimCLR modules (Lightning Trainer + the SSLMethod
engine) versus a hand-written PyTorch loop with the same modules, data, optimizer and LR schedule.

Both arms start from the same seeded weights and run the same number of steps over the same in-memory batches
(random images of MedMNIST size; data loading is not what is measured). The medssl arm is ``L.Trainer.fit`` with
the method as a LightningModule, as ``medssl pretrain`` runs it but without loggers, checkpoints or progress bar
(they are per-N-steps costs, reported elsewhere); it therefore includes Lightning's loop and hooks, the engine's
per-step seeded generator, non-finite check, ``self.log`` calls and, for SimCLR, the collapse diagnostics
(embedding std and RankMe) that the engine logs every step. The hand-written arm is ``zero_grad -> forward ->
loss -> backward -> step -> scheduler.step`` with the method's own modules and pure loss functions and nothing else.
Per-step time is the wall time of the steps after ``--warmup`` divided by their number; the arms alternate for
``--repeats`` rounds and the median is reported. Target: medssl / hand-written <= 1.05.

Usage::

    python benchmarks/overhead.py                     # both methods, writes benchmarks/results/overhead.{json,md}
    python benchmarks/overhead.py --quick --out /tmp  # a few tiny steps (the smoke test)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import machine, write_results  # noqa: E402  (one machine description for every benchmark)

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.05


def make_method(name: str, quick: bool):
    from medssl.ssl.mae import MAE
    from medssl.ssl.simclr import SimCLR
    from medssl.training.optim import OptimConfig

    optim = OptimConfig(lr=1e-3, weight_decay=1e-4, warmup=0.1)
    torch.manual_seed(0)
    if name == "mae":
        width = 32 if quick else 128
        return MAE(img_size=[28, 28], patch_size=4, spatial_dims=2, hidden_size=width, num_layers=2 if quick else 6,
                   num_heads=4, mlp_dim=2 * width, decoder_dim=width // 2, decoder_depth=1 if quick else 2,
                   decoder_heads=4, optim=optim)
    channels = [8, 8, 16, 16] if quick else [32, 64, 128, 256]
    return SimCLR(encoder="resnet", encoder_kwargs={"in_channels": 1, "spatial_dims": 2, "layers": [1, 1, 1, 1],
                                                    "block_inplanes": channels, "conv1_t_size": 3,
                                                    "conv1_t_stride": 1, "no_max_pool": True},
                  proj_hidden_dim=64 if quick else 512, proj_dim=32 if quick else 128, temperature=0.2,
                  gather_negatives=False, optim=optim)


def make_batches(name: str, n: int, batch_size: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    if name == "mae":
        return [{"image": torch.rand(batch_size, 1, 28, 28, generator=g)} for _ in range(n)]
    return [{"global_views": [torch.rand(batch_size, 1, 28, 28, generator=g) for _ in range(2)]} for _ in range(n)]


def hand_step_fn(method, name: str):
    """The hand-written forward + loss of ``method``'s own modules (no engine, no diagnostics)."""
    from medssl.losses.ntxent import nt_xent
    from medssl.losses.reconstruction import masked_patch_mse
    from medssl.models.patches import patchify
    from medssl.transforms.masking import random_masking

    if name == "mae":
        model = method.model

        def loss(batch: dict, generator: torch.Generator) -> torch.Tensor:
            x = batch["image"]
            mask = random_masking(x.shape[0], model.encoder.num_patches, method.mask_ratio, generator=generator)
            pred = model(x, mask)
            return masked_patch_mse(pred, patchify(x, model.patch_size), mask.mask, norm_pix=method.norm_pix_loss)
        return loss

    def loss(batch: dict, generator: torch.Generator) -> torch.Tensor:
        x1, x2 = batch["global_views"]
        z1, z2 = method.projector(method.encoder(torch.cat([x1, x2]))).chunk(2)
        return nt_xent(z1, z2, method.temperature, gather_negatives=False)
    return loss


class StepClock(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1 = time.perf_counter()


def run_medssl(name: str, batches: list[dict], steps: int, warmup: int, quick: bool) -> float:
    method = make_method(name, quick)
    clock = StepClock(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock], num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(batches[:steps], batch_size=None, shuffle=False)
    trainer.fit(method, train_dataloaders=loader)
    if trainer.global_step != steps:
        raise RuntimeError(f"medssl arm ran {trainer.global_step} of {steps} steps")
    return (clock.t1 - clock.t0) / (steps - warmup)


def run_hand(name: str, batches: list[dict], steps: int, warmup: int, quick: bool) -> float:
    from medssl.training.optim import build_optimizer

    method = make_method(name, quick)
    method.train()
    opt, sched = build_optimizer(method, method.optim, steps)
    loss_fn = hand_step_fn(method, name)
    t0 = None
    for i in range(steps):
        if i == warmup:
            t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(i)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(batches[i], generator)
        loss.backward()
        opt.step()
        sched.step()
    return (time.perf_counter() - t0) / (steps - warmup)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Framework overhead: medssl training step vs a hand-written PyTorch loop", "",
             f"Machine: {m['cpu']} ({m['cores_usable']} usable cores), torch {m['versions'].get('torch')}, "
             f"{report['settings']['threads']} thread(s), {m['date']}; load average start {m['loadavg_start']}, "
             f"end {m.get('loadavg_end')}.", "",
             "| method | batch | steps timed | medssl ms/step | hand-written ms/step | ratio | target <= 1.05 |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in report["results"]:
        lines.append(f"| {r['method']} | {r['batch_size']} | {r['timed_steps']} | {1000 * r['medssl_s']:.1f} | "
                     f"{1000 * r['hand_s']:.1f} | {r['ratio']:.3f} | {'PASS' if r['ratio'] <= TARGET else 'ABOVE TARGET'} |")
    lines += ["", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["mae", "simclr"], choices=["mae", "simclr"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="tiny models, 6 steps, 1 repeat (smoke test)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.repeats = 6, 2, 8, 1
    if not 0 <= args.warmup < args.steps:
        parser.error("need 0 <= --warmup < --steps")
    torch.set_num_threads(args.threads)
    info = machine()
    results = []
    for name in args.methods:
        batches = make_batches(name, args.steps, args.batch_size)
        medssl_times, hand_times = [], []
        for _ in range(args.repeats):  # alternate the arms so that drifts in machine load hit both
            hand_times.append(run_hand(name, batches, args.steps, args.warmup, args.quick))
            medssl_times.append(run_medssl(name, batches, args.steps, args.warmup, args.quick))
        med, hand = statistics.median(medssl_times), statistics.median(hand_times)
        results.append({"method": name, "batch_size": args.batch_size, "timed_steps": args.steps - args.warmup,
                        "medssl_s": med, "hand_s": hand, "ratio": med / hand, "medssl_all_s": medssl_times,
                        "hand_all_s": hand_times})
        print(f"{name}: medssl {1000 * med:.1f} ms/step, hand-written {1000 * hand:.1f} ms/step, "
              f"ratio {med / hand:.3f}", flush=True)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "results": results,
              "notes": ["Same seeded initial weights, batches, optimizer (AdamW) and warmup + cosine schedule in both "
                        "arms; MedMNIST-size random images (28x28) held in memory.",
                        "The medssl arm is Lightning's fit loop with the SSLMethod engine (seeded per-step generator, "
                        "non-finite check, logging calls; SimCLR also computes its per-step collapse diagnostics); "
                        "no loggers, checkpoints or progress bar in either arm.",
                        f"Median of {args.repeats} alternating rounds; per-step times of every round are in the JSON."]}
    name = "overhead_quick" if args.quick else "overhead"
    print(write_results(Path(args.out), name, report, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
