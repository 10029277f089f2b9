"""benchmarks/label_efficiency.py: the --quick run end to end on real MedMNIST, and its report arithmetic."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def load_bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # machine() from ingest.py, the peer from lightly_peer.py
    spec = importlib.util.spec_from_file_location("medssl_bench_label_efficiency",
                                                  REPO / "benchmarks" / "label_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _record(method, arm, evaluation, seed, value, fraction=0.01):
    return {"method": method, "arm": arm, "evaluation": evaluation, "fraction": fraction, "count": None,
            "n_labelled": 47, "seed": seed, "metric": "auroc", "value": value, "wall_s": 2.0,
            "pretrain_wall_s": None if arm == "scratch" else 10.0}


def test_markdown_ratio_to_peer_and_mean_std():
    bench = load_bench()
    records = ([_record("scratch", "scratch", "scratch", s, v) for s, v in enumerate([0.80, 0.82, 0.84])]
               + [_record("lightly_simclr finetune", "lightly_simclr", "finetune", s, v)
                  for s, v in enumerate([0.90, 0.90, 0.90])]
               + [_record("simclr finetune", "simclr", "finetune", s, v) for s, v in enumerate([0.93, 0.95, 0.94])])
    report = {"dataset": "toy", "kind": "cls", "metric": "auroc", "records": records,
              "machine": {"cpu": "x", "cores": 2, "versions": {"torch": "t", "lightly": "l"}, "date": "d",
                          "loadavg_start": [0, 0, 0]},
              "settings": {"epochs": 5, "batch_size": 128, "seeds": [0, 1, 2],
                           "arms": ["scratch", "lightly_simclr", "simclr"]},
              "pretraining": {"simclr": {"epochs": 5, "steps": 185, "wall_s": 10.0, "val_loss_before": 2.7,
                                         "val_loss_after": 2.1}},
              "command": "label_efficiency.py"}
    text, _, paired = bench.markdown(report).partition("## Paired gain over scratch")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith("| ") and "finetune" in line or line.startswith("| scratch")}
    assert rows["simclr finetune"][4] == "0.940 ± 0.010"
    # the paired section: gains over scratch on the same seeds (0.13, 0.13, 0.10), all won
    gain = next(line for line in paired.splitlines() if line.startswith("| simclr finetune |"))
    assert "+0.120 [" in gain and "| 3/3 | better |" in gain
    peer = next(line for line in paired.splitlines() if line.startswith("| lightly_simclr finetune |"))
    assert "+0.080 [" in peer
    assert float(rows["simclr finetune"][5]) == pytest.approx(0.94 / 0.90, abs=1e-3)
    assert float(rows["scratch"][5]) == pytest.approx(0.82 / 0.90, abs=1e-3)
    assert rows["lightly_simclr finetune"][5] == "1.000"
    assert float(rows["simclr finetune"][6]) == pytest.approx(0.94 / 0.82, abs=1e-3) and rows["scratch"][6] == "1.000"
    # the peer row precedes the medssl row (arm order), scratch first
    order = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "%" in line]
    assert order == ["scratch", "lightly_simclr finetune", "simclr finetune"]


def test_markdown_keeps_per_class_budgets_apart_with_their_label():
    """Per-class budgets (fraction and count None) are rows of their own, after the fractions, labelled k/class,
    each compared with the peer at the same k."""
    bench = load_bench()

    def rec(method, arm, seed, value, per_class=None, n=47):
        return {**_record(method, arm, method.split()[-1], seed, value, None if per_class else 0.01),
                "per_class": per_class, "n_labelled": n}

    records = []
    for k, base in ((1, 0.6), (5, 0.7)):
        records += [rec("lightly_simclr finetune", "lightly_simclr", s, base, k, 2 * k) for s in range(5)]
        records += [rec("simclr finetune", "simclr", s, base + 0.01 * s, k, 2 * k) for s in range(5)]
    records += [rec("simclr finetune", "simclr", 0, 0.9), rec("lightly_simclr finetune", "lightly_simclr", 0, 0.9)]
    report = {"dataset": "toy", "kind": "cls", "metric": "auroc", "records": records,
              "machine": {"cpu": "x", "cores": 2, "versions": {}, "date": "d", "loadavg_start": [0, 0, 0]},
              "settings": {"epochs": 5, "batch_size": 128, "seeds": [0, 1, 2, 3, 4],
                           "arms": ["lightly_simclr", "simclr"]},
              "pretraining": {}, "command": "label_efficiency.py --per-class 1 5"}
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in bench.markdown(report).splitlines()
            if line.startswith("| ") and "finetune" in line]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("lightly_simclr finetune", "1%", "47", "1"), ("simclr finetune", "1%", "47", "1"),
        ("lightly_simclr finetune", "1/class", "2", "5"), ("simclr finetune", "1/class", "2", "5"),
        ("lightly_simclr finetune", "5/class", "10", "5"), ("simclr finetune", "5/class", "10", "5")]
    assert [r[4] for r in rows if r[0] == "simclr finetune"] == ["0.900", "0.620 ± 0.016", "0.720 ± 0.016"]
    assert [float(r[5]) for r in rows if r[0] == "simclr finetune"] == pytest.approx([1.0, 0.62 / 0.6, 0.72 / 0.7],
                                                                                       abs=1e-3)


def test_seed_warning_for_few_labels_per_class():
    bench = load_bench()
    assert "use >= 5 seeds" in bench.seed_warning([1, 20], [0, 1, 2]) and "[1]" in bench.seed_warning([1], [0])
    assert bench.seed_warning([1, 5, 10], [0, 1, 2, 3, 4]) is None
    assert bench.seed_warning([11, 50], [0]) is None and bench.seed_warning([], [0]) is None
    assert "labelled-case budget(s) [1, 2]" in bench.seed_warning([], [0, 1, 2], [1, 2, 20])
    assert bench.seed_warning([], [0, 1, 2, 3, 4], [1]) is None and bench.seed_warning([], [0], [20]) is None


def test_per_class_reaches_every_arm_and_replaces_the_default_fractions(tmp_path, monkeypatch, capsys):
    """--per-class goes to the classification protocol of every arm, the peer included; given alone it replaces the
    dataset's fractions; fewer than 5 seeds at <= 10 per class: a warning on stderr. Pretraining and protocol are
    stand-ins here (the real protocol's per-class records are tested in tests/finetune/test_protocol.py)."""
    bench = load_bench()
    (tmp_path / "data" / "medmnist").mkdir(parents=True)
    (tmp_path / "data" / "medmnist" / "pneumoniamnist.npz").write_bytes(b"")
    monkeypatch.setenv("MEDSSL_SHARED_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(bench, "pretrain_arm", lambda arm, *a, **k: {
        "card": f"{arm}.json", "epochs": 1, "steps": 1, "wall_s": 1.0})
    calls = {}

    def fake_evaluate(arm, ds, data_path, card, seeds, fractions, work, quick, extra, reuse, label, per_class=()):
        calls[arm] = (list(fractions), list(per_class), list(seeds))
        method = "scratch" if arm == "scratch" else "finetune"
        runs = [{"method": method, "fraction": None, "count": None, "per_class": k, "seed": s, "wall_s": 1.0}
                for k in per_class for s in seeds]
        records = [{"method": method, "fraction": None, "count": None, "per_class": k, "n_labelled": 2 * k,
                    "seed": s, "metric": "auroc", "value": 0.5 + 0.01 * k, "split": "test"}
                   for k in per_class for s in seeds]
        return {"data": {"n_train": 100}, "runs": runs, "records": records}

    monkeypatch.setattr(bench, "evaluate_cls", fake_evaluate)
    assert bench.main(["--arms", "scratch", "lightly_simclr", "simclr", "--per-class", "1", "5", "--seeds", "0", "1",
                       "--out", str(tmp_path / "res"), "--workdir", str(tmp_path / "work")]) == 0
    assert calls == {arm: ([], [1, 5], [0, 1]) for arm in ("scratch", "lightly_simclr", "simclr")}
    assert "use >= 5 seeds" in capsys.readouterr().err
    report = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist.json").read_text())
    assert report["settings"]["per_class"] == [1, 5] and report["settings"]["fractions"] == []
    assert {(r["per_class"], r["wall_s"]) for r in report["records"]} == {(1, 1.0), (5, 1.0)}
    text = (tmp_path / "res" / "label_efficiency_pneumoniamnist.md").read_text()
    assert "| simclr finetune | 5/class | 10 | 2 |" in text and "| lightly_simclr finetune | 1/class | 2 | 2 |" in text
    assert bench.main(["--arms", "scratch", "--seeds", "0", "--out", str(tmp_path / "res"),
                       "--workdir", str(tmp_path / "work")]) == 0
    assert calls["scratch"] == ([0.01, 0.1], [], [0]) and capsys.readouterr().err == ""  # the dataset's defaults


def test_finished_evaluation_reuse_tolerates_fields_added_at_their_default(tmp_path):
    from dataclasses import asdict

    from medssl.finetune.protocol import ProtocolConfig

    bench = load_bench()
    cfg = ProtocolConfig(path="x.npz", architecture={"name": "resnet", "kwargs": {}}, fractions=[0.1],
                         methods=["scratch"])
    old = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k != "ema_decay"}  # before the field
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"complete": True, "config": old, "encoder": None}))
    assert bench._finished(path, cfg, None) is not None
    cfg.ema_decay = 0.9  # not the default: a different protocol, evaluated anew
    assert bench._finished(path, cfg, None) is None
    path.write_text(json.dumps({"complete": False, "config": old, "encoder": None}))
    cfg.ema_decay = 0.0
    assert bench._finished(path, cfg, None) is None  # an interrupted evaluation is never reused


def test_arm_records_relabel_and_carry_wall_times():
    bench = load_bench()
    result = {"runs": [{"method": "finetune", "fraction": 0.01, "count": None, "seed": 1, "wall_s": 3.5}],
              "records": [{"method": "finetune", "fraction": 0.01, "count": None, "seed": 1, "metric": "auroc",
                           "value": 0.9, "n_labelled": 47}]}
    (r,) = bench.arm_records("simclr", result, {"wall_s": 12.0})
    assert (r["method"], r["arm"], r["evaluation"], r["wall_s"], r["pretrain_wall_s"]) == \
        ("simclr finetune", "simclr", "finetune", 3.5, 12.0)
    (s,) = bench.arm_records("scratch", {**result, "runs": [{**result["runs"][0], "method": "scratch"}],
                                         "records": [{**result["records"][0], "method": "scratch"}]}, None)
    assert (s["method"], s["pretrain_wall_s"], s["wall_s"]) == ("scratch", None, 3.5)


@pytest.mark.realdata
def test_quick_run_scratch_and_medssl_arm(tmp_path, shared_data, monkeypatch, capsys):
    bench = load_bench()
    monkeypatch.setenv("MEDSSL_SHARED_DATA", str(shared_data))
    assert bench.main(["--quick", "--arms", "scratch", "simclr", "--out", str(tmp_path / "res"),
                       "--workdir", str(tmp_path / "work")]) == 0
    report = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist_quick.json").read_text())
    assert report["complete"] and report["settings"]["quick"]
    methods = {r["method"] for r in report["records"]}
    assert methods == {"scratch", "simclr finetune", "simclr linear_probe", "simclr knn"}
    for r in report["records"]:
        assert r["split"] == "test" and r["fraction"] == 0.01 and r["seed"] == 0
        assert r["value"] is None or 0.0 <= r["value"] <= 1.0
        assert r["wall_s"] is not None and r["wall_s"] >= 0
    assert report["pretraining"]["simclr"]["steps"] == 2
    assert math.isfinite(report["pretraining"]["simclr"]["wall_s"])
    assert (tmp_path / "work" / "pneumoniamnist" / "pretrain_simclr" / "encoder.json").is_file()
    text = (tmp_path / "res" / "label_efficiency_pneumoniamnist_quick.md").read_text()
    assert text.startswith("# Label efficiency side by side: pneumoniamnist") and "| simclr finetune | 1% |" in text
    assert (tmp_path / "res" / "label_efficiency_pneumoniamnist_quick.png").stat().st_size > 1000

    # --reuse: the same arm and budget is not pretrained again; --tag keeps the first results
    card = (tmp_path / "work" / "pneumoniamnist" / "pretrain_simclr" / "encoder.json").read_bytes()
    assert bench.main(["--quick", "--arms", "simclr", "--reuse", "--tag", "again", "--protocol-override",
                       "augment=true", "--out", str(tmp_path / "res"), "--workdir", str(tmp_path / "work")]) == 0
    again = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist_again_quick.json").read_text())
    assert again["pretraining"]["simclr"]["reused"] is True
    assert again["settings"]["protocol_overrides"] == ["augment=true"]
    assert (tmp_path / "work" / "pneumoniamnist" / "pretrain_simclr" / "encoder.json").read_bytes() == card
    first = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist_quick.json").read_text())
    assert "scratch" in {r["method"] for r in first["records"]}  # the untagged results were not overwritten

    # --pretrain-override: a different recipe is pretrained again, in its own folder, and recorded
    assert bench.main(["--quick", "--arms", "simclr", "--reuse", "--tag", "t05", "--pretrain-override",
                       "model.init_args.temperature=0.5", "--out", str(tmp_path / "res"),
                       "--workdir", str(tmp_path / "work")]) == 0
    t05 = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist_t05_quick.json").read_text())
    pre = t05["pretraining"]["simclr"]
    assert "reused" not in pre and pre["overrides"] == ["model.init_args.temperature=0.5"]
    assert t05["settings"]["pretrain_overrides"] == ["model.init_args.temperature=0.5"]
    run_dir = Path(pre["card"]).parent
    assert run_dir.name.startswith("pretrain_simclr_") and run_dir.parent.name == "pneumoniamnist"
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["init_args"]["temperature"] == 0.5
    assert (tmp_path / "work" / "pneumoniamnist" / "pretrain_simclr" / "encoder.json").read_bytes() == card
    assert "`model.init_args.temperature=0.5`" in (tmp_path / "res" / "label_efficiency_pneumoniamnist_t05_quick.md"
                                                   ).read_text()

    # --reuse of the first invocation: both finished evaluations are taken as they are (same config and weights)
    capsys.readouterr()
    assert bench.main(["--quick", "--arms", "scratch", "simclr", "--reuse", "--out", str(tmp_path / "res2"),
                       "--workdir", str(tmp_path / "work")]) == 0
    assert capsys.readouterr().out.count("reuse evaluation") == 2
    second = json.loads((tmp_path / "res2" / "label_efficiency_pneumoniamnist_quick.json").read_text())
    assert second["records"] == first["records"]

    # --pretrain-seeds: seed 0 is the run above (reused, as are its evaluations), seed 1 is pretrained in its own
    # folder with seed_everything=1; the table pools both; scratch has no pretraining seed and runs once
    capsys.readouterr()
    assert bench.main(["--quick", "--arms", "scratch", "simclr", "--reuse", "--pretrain-seeds", "0", "1",
                       "--out", str(tmp_path / "res2"), "--workdir", str(tmp_path / "work")]) == 0
    assert capsys.readouterr().out.count("reuse evaluation") == 2
    seeded = json.loads((tmp_path / "res2" / "label_efficiency_pneumoniamnist_quick.json").read_text())
    assert seeded["pretraining"]["simclr"]["reused"] is True and seeded["settings"]["pretrain_seeds"] == [0, 1]
    pre1 = seeded["pretraining"]["simclr seed 1"]
    assert Path(pre1["card"]).parent.name == "pretrain_simclr_s1" and pre1["seed"] == 1
    assert yaml.safe_load((Path(pre1["card"]).parent / "config.yaml").read_text())["seed_everything"] == 1
    finetune = [r for r in seeded["records"] if r["method"] == "simclr finetune" and r["metric"] == "auroc"]
    assert sorted(r["pretrain_seed"] for r in finetune) == [0, 1]
    assert [r["pretrain_seed"] for r in seeded["records"] if r["method"] == "scratch" and r["metric"] == "auroc"] \
        == [None]
    text = (tmp_path / "res2" / "label_efficiency_pneumoniamnist_quick.md").read_text()
    assert "| simclr finetune | 1% | 47 | 2 |" in text and "pretraining seeds 0, 1" in text


@pytest.mark.realdata
def test_quick_run_lightly_peer(tmp_path, shared_data, monkeypatch):
    if os.environ.get("MEDSSL_REQUIRE_BENCH") == "1":  # .ci/run's bench environment: the peer must run
        import lightly  # noqa: F401
    else:
        pytest.importorskip("lightly", reason="the lightly peer needs the bench extra (see benchmarks/README.md)")
    bench = load_bench()
    monkeypatch.setenv("MEDSSL_SHARED_DATA", str(shared_data))
    assert bench.main(["--quick", "--arms", "lightly_simclr", "--out", str(tmp_path / "res"),
                       "--workdir", str(tmp_path / "work")]) == 0
    report = json.loads((tmp_path / "res" / "label_efficiency_pneumoniamnist_quick.json").read_text())
    peer = report["pretraining"]["lightly_simclr"]
    assert peer["steps"] == 2 and math.isfinite(peer["loss_last_epoch"])
    card = json.loads((tmp_path / "work" / "pneumoniamnist" / "pretrain_lightly_simclr" / "encoder.json").read_text())
    assert card["method"] == "lightly_simclr" and card["training"]["library"] == "lightly"
    assert {r["method"] for r in report["records"]} == {f"lightly_simclr {e}" for e in bench.CLS_EVALS}


@pytest.mark.realdata
def test_lightly_peer_3d_uses_the_overlay_views(tmp_path, shared_data):
    """3D: lightly has no volumetric transforms, so the peer takes the medssl overlay's views at the volume size."""
    if os.environ.get("MEDSSL_REQUIRE_BENCH") == "1":
        import lightly  # noqa: F401
    else:
        pytest.importorskip("lightly", reason="the lightly peer needs the bench extra (see benchmarks/README.md)")
    bench = load_bench()
    from lightly_peer import pretrain_lightly_simclr

    ds = bench.DATASETS["adrenalmnist3d"]
    views = bench._overlay_views(ds)
    overlay = yaml.safe_load((bench.PRETRAIN / ds.overlay).read_text())["data"]["views"]["init_args"]
    assert views == overlay and views["spatial_dims"] == 3
    assert views["flip_axes"] and views["rotate90_prob"] > 0  # the step below runs through flips and quarter turns
    done = pretrain_lightly_simclr(shared_data / ds.data, bench._cls_architecture(ds), tmp_path / "peer", epochs=1,
                                   batch_size=4, views_3d=views, max_items=8, max_steps=1)
    assert done["steps"] == 1 and math.isfinite(done["loss_last_epoch"])
    card = json.loads((tmp_path / "peer" / "encoder.json").read_text())
    assert card["spatial_dims"] == 3 and card["method"] == "lightly_simclr"
    with pytest.raises(ValueError, match="views_3d"):
        pretrain_lightly_simclr(shared_data / ds.data, bench._cls_architecture(ds), tmp_path / "peer2", epochs=1,
                                batch_size=4, max_items=8, max_steps=1)


def test_view_overrides_reach_the_peer_on_3d_only():
    """--pretrain-override data.views.init_args.*: the peer's 3D views (medssl's MultiViewTransform) take them, so
    every arm sees the same augmentations; method settings stay with medssl; on 2D the peer keeps lightly's views."""
    bench = load_bench()
    adrenal, pneumonia = bench.DATASETS["adrenalmnist3d"], bench.DATASETS["pneumoniamnist"]
    given = ["data.views.init_args.global_scale=[0.7, 1.0]", "model.init_args.temperature=0.5",
             "data.views.init_args.flip_axes=[0, 1, 2]"]
    views = ["data.views.init_args.global_scale=[0.7, 1.0]", "data.views.init_args.flip_axes=[0, 1, 2]"]
    assert bench._peer_overrides(adrenal, given) == views
    assert bench._peer_overrides(pneumonia, given) == [] and bench._peer_views(pneumonia, []) is None
    base = bench._overlay_views(adrenal)
    assert bench._peer_views(adrenal, []) == base
    merged = bench._peer_views(adrenal, views)
    assert merged == {**base, "global_scale": [0.7, 1.0], "flip_axes": [0, 1, 2]}
    from medssl.transforms.views import MultiViewTransform

    MultiViewTransform(**{**merged, "spatial_dims": 3})  # valid transform arguments


def test_reuse_of_a_pretraining_run_requires_unchanged_config_files(tmp_path, monkeypatch):
    """--reuse takes a pretraining run only while the YAML files that configured it hold what they held then; a
    summary from before config hashes were recorded is taken as made with the files as they are."""
    import shutil

    bench = load_bench()
    pretrain = tmp_path / "configs"
    shutil.copytree(bench.PRETRAIN, pretrain)
    monkeypatch.setattr(bench, "PRETRAIN", pretrain)
    monkeypatch.setattr(bench, "REPO", tmp_path)
    ds = bench.DATASETS["adrenalmnist3d"]
    assert [p.name for p in bench._config_files("simclr", ds)] == ["simclr.yaml", "adrenal3d_cpu.yaml"]
    assert [p.name for p in bench._config_files("lightly_simclr", ds)] == ["adrenal3d_cpu.yaml"]
    ran = []

    def fake_pretrain(arm, ds_, data_path, run_dir, tmp, epochs, quick, overrides, seed):
        ran.append(arm)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "encoder.json").write_text("{}")
        return {"card": str(run_dir / "encoder.json"), "steps": 1}

    monkeypatch.setattr(bench, "pretrain_medssl", fake_pretrain)
    args = ("simclr", ds, tmp_path / "data.npz", tmp_path / "work", tmp_path, 5, False)
    first = bench.pretrain_arm(*args, reuse=True)
    assert ran == ["simclr"] and first["config_sha256"] == bench._config_sha256("simclr", ds)
    assert bench.pretrain_arm(*args, reuse=True)["reused"] is True and ran == ["simclr"]
    summary = tmp_path / "work" / "pretrain_simclr" / "bench_pretrain.json"
    legacy = {k: v for k, v in json.loads(summary.read_text()).items() if k != "config_sha256"}
    summary.write_text(json.dumps(legacy))
    assert bench.pretrain_arm(*args, reuse=True)["reused"] is True  # recorded before hashes: taken
    summary.write_text(json.dumps(first))
    overlay = pretrain / "medmnist" / "adrenal3d_cpu.yaml"
    settings = yaml.safe_load(overlay.read_text())
    settings["data"]["views"]["init_args"]["global_scale"] = [0.5, 1.0]  # another view recipe
    overlay.write_text(yaml.safe_dump(settings))
    assert bench._config_sha256("simclr", ds) != first["config_sha256"]
    assert "reused" not in bench.pretrain_arm(*args, reuse=True) and ran == ["simclr", "simclr"]  # run again


def test_merge_keeps_every_part_and_refuses_a_budget_measured_twice(tmp_path):
    """Two runs on one dataset (a 1% budget with the peer, a later 1/class budget): one report whose records are
    both runs', whose header names each part's command and seeds, and whose paired section covers both budgets."""
    bench = load_bench()

    def report(records, arms, seeds, command, date):
        return {"dataset": "toy", "kind": "cls", "metric": "auroc", "records": records,
                "data": {"sha256": "abc", "n_train": 4708},
                "machine": {"cpu": "x", "cores": 2, "versions": {}, "date": date, "loadavg_start": [0, 0, 0]},
                "settings": {"epochs": 5, "batch_size": 128, "seeds": seeds, "arms": arms},
                "pretraining": {"simclr": {"epochs": 5, "steps": 185, "wall_s": 10.0, "val_loss_before": 2.7,
                                           "val_loss_after": 2.1}},
                "command": command, "complete": True}

    pct = report([_record("scratch", "scratch", "scratch", s, 0.8) for s in range(3)]
                 + [_record("lightly_simclr finetune", "lightly_simclr", "finetune", s, 0.85) for s in range(3)]
                 + [_record("simclr finetune", "simclr", "finetune", s, 0.9) for s in range(3)],
                 ["scratch", "lightly_simclr", "simclr"], [0, 1, 2], "run A", "2026-11-30")
    per_class = [{**_record(m, a, m.split()[-1], s, v + 0.01 * s, None), "per_class": 1, "n_labelled": 2}
                 for s in range(5) for m, a, v in (("scratch", "scratch", 0.6), ("simclr finetune", "simclr", 0.7))]
    merged = bench.merge_reports([pct, report(per_class, ["scratch", "simclr"], [0, 1, 2, 3, 4], "run B",
                                              "2026-12-07")])
    assert len(merged["records"]) == 9 + 10 and merged["settings"]["arms"] == ["scratch", "lightly_simclr", "simclr"]
    assert set(merged["pretraining"]) == {"simclr", "simclr (part 2)"} and merged["complete"]
    bench.write_report(merged, tmp_path, name="label_efficiency_toy")
    text = (tmp_path / "label_efficiency_toy.md").read_text()
    assert "1. `run A` (2026-11-30" in text and "2. `run B` (2026-12-07" in text and "seeds [0, 1, 2, 3, 4]" in text
    paired = text.partition("## Paired gain over scratch")[2]
    assert "| simclr finetune | 1/class |" in paired and "| simclr finetune | 1% |" in paired
    again = bench.merge_reports([merged, report([_record("scratch", "scratch", "scratch", 9, 0.5, 0.1)],
                                                ["scratch"], [9], "run C", "2026-12-08")])
    assert [p["command"] for p in again["parts"]] == ["run A", "run B", "run C"]  # parts of parts stay flat
    assert set(again["pretraining"]) == {"simclr", "simclr (part 2)", "simclr (part 3)"}  # none lost or renamed
    assert again["pretraining"]["simclr (part 2)"] is merged["pretraining"]["simclr (part 2)"]
    with pytest.raises(ValueError, match="budget"):
        bench.merge_reports([pct, pct])
    with pytest.raises(ValueError, match="data"):
        bench.merge_reports([pct, {**report(per_class, ["scratch"], [0], "x", "d"), "data": {"sha256": "other", "n_train": 1}}])
