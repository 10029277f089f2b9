"""Independent fine-tuning runs side by side, one process and one torch thread each.

A few-label protocol is many small, independent runs (budgets x seeds x methods). On a CPU, a small 3-D network
gains little from a second intra-op thread, while two runs in two processes use two cores fully, so
:func:`run_parallel` spreads the runs over ``workers`` processes (``spawn``: no forked torch or Lightning state)
and hands the results back **in the order of the calls**, whatever order they finish in. Every run is seeded by its
own arguments, so a parallel protocol records what the serial one does with one torch thread (a different thread
count may change the last digits of CPU convolutions). An exception in a run is raised here as it was raised there,
with a note naming the run's position; runs not yet started are cancelled, also when the caller stops early.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["run_parallel"]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    from medssl.finetune.trainer import quiet_lightning

    with quiet_lightning():
        return fn(**kwargs)


def run_parallel(fn: Callable[..., Any], calls: Sequence[dict[str, Any]], workers: int, *,
                 threads: int = 1) -> Iterator[Any]:
    """Yield ``fn(**kwargs)`` for every ``kwargs`` of ``calls``, in order, computed by ``workers`` processes with
    ``threads`` torch threads each (``fn`` and the arguments must pickle: a module-level function, plain data).

    Results are yielded as soon as they and all before them are done, so a progress bar can follow.
    """
    if workers < 1 or threads < 1:
        raise ValueError(f"need workers >= 1 and threads >= 1, got {workers}, {threads}")
    if not calls:
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, len(calls)), mp_context=context, initializer=_init_worker,
                               initargs=(threads,))
    try:
        futures = [pool.submit(_call, fn, dict(kwargs)) for kwargs in calls]
        for i, future in enumerate(futures):
            try:
                yield future.result()
            except Exception as exc:  # the run's own exception (typed errors keep their type), with where it came from
                exc.add_note(f"in parallel run {i + 1} of {len(calls)}")
                raise
    finally:  # a failed run, or a caller that stops early: runs not started yet never start
        pool.shutdown(wait=True, cancel_futures=True)
