"""Runs side by side: same results, same order, as one after the other; errors keep their type across processes."""
from __future__ import annotations

import json
import pickle
import time

import pytest

from medssl.errors import MedsslError, Reason
from medssl.finetune.config_file import ProtocolConfigError
from medssl.finetune.parallel_runs import run_parallel
from medssl.finetune.seg_cases import SegmentationDataError
from medssl.finetune.seg_protocol import SegProtocolConfig, run_seg_protocol
from medssl.models.hub import ChannelMismatchError
from tests.finetune.test_seg_protocol import setup  # noqa: F401  (the module-scoped cubes + tiny encoder)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def square_or_fail(x: int) -> int:
    if x < 0:
        raise ProtocolConfigError("x", f"must be >= 0, got {x}", "calls.yaml")
    return x * x


def test_results_come_back_in_call_order_and_errors_keep_their_type():
    assert list(run_parallel(square_or_fail, [{"x": i} for i in (3, 1, 2)], workers=2)) == [9, 1, 4]
    assert list(run_parallel(square_or_fail, [], workers=2)) == []
    with pytest.raises(ProtocolConfigError, match="field 'x': must be >= 0") as info:
        list(run_parallel(square_or_fail, [{"x": 1}, {"x": -1}], workers=2))
    assert info.value.field == "x" and info.value.reason == Reason.BAD_CONFIG
    assert any("parallel run 2 of 2" in note for note in info.value.__notes__)
    with pytest.raises(ValueError):
        list(run_parallel(square_or_fail, [{"x": 1}], workers=0))


def test_a_caller_that_stops_early_does_not_wait_for_the_queued_runs():
    runs = run_parallel(nap, [{"seconds": 0.1}] + [{"seconds": 1.0}] * 30, workers=1)
    assert next(runs) == 0.1  # (starting the worker process takes a while: not timed)
    t0 = time.perf_counter()
    runs.close()  # e.g. the protocol failed writing its report: the 30 queued runs (30 s) must not all run first
    assert time.perf_counter() - t0 < 15.0  # the run started and those the pool had already handed over, at most


@pytest.mark.parametrize("error", [
    MedsslError(Reason.BAD_CONFIG, "plain", ["/a.nii.gz"]),
    SegmentationDataError("bad case", ["/b.nii.gz"]),
    ProtocolConfigError("lr", "must be > 0", "p.yaml"),
    ChannelMismatchError("2 vs 1", ["FLAIR", "T1c"], ["T1"], ["/card.json"]),
])
def test_typed_errors_pickle_as_themselves(error):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error) and again.args == error.args
    assert again.__dict__ == error.__dict__


def test_parallel_protocol_records_what_the_serial_one_does(setup, tmp_path):  # noqa: F811
    _, cfg = setup
    base = {**cfg, "methods": ["finetune", "scratch"], "counts": [1], "seeds": [0, 1], "epochs": 1, "plot": False}
    run_seg_protocol(SegProtocolConfig(**base).validate(), tmp_path / "serial", progress=False)
    run_seg_protocol(SegProtocolConfig(**base, workers=2).validate(), tmp_path / "parallel", progress=False)
    serial, parallel = (json.loads((tmp_path / d / "label_efficiency_cubes.json").read_text())
                        for d in ("serial", "parallel"))
    assert parallel["records"] == serial["records"] and len(serial["records"]) == 2 * 2 * 3
    assert [(r["method"], r["seed"]) for r in parallel["runs"]] == [(r["method"], r["seed"]) for r in serial["runs"]]
    assert parallel["config"]["workers"] == 2
    with pytest.raises(ProtocolConfigError, match="'workers'"):
        SegProtocolConfig(**base, workers=0).validate()
