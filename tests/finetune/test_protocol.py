"""The few-label protocol end to end on a fake MedMNIST file, its config validation and the `medssl evaluate` CLI."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from medssl.cli import main
from medssl.finetune.protocol import METHODS, METRICS, ProtocolConfig, ProtocolConfigError, run_protocol
from medssl.finetune.subsets import label_subset

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "finetune" / "pneumoniamnist_tiny.yaml"


def test_protocol_end_to_end(fake_npz, tiny_card, tmp_path, one_thread):
    cfg = ProtocolConfig(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.25, 1.0], seeds=[0, 1],
                         epochs=2, batch_size=16, patience=None, knn_k=5)
    records = run_protocol(cfg, tmp_path, progress=False)
    assert len(records) == 2 * 2 * len(METHODS) * len(METRICS)
    keys = {"dataset", "method", "fraction", "count", "per_class", "n_labelled", "seed", "metric", "value", "split",
            "encoder_sha256"}
    assert all(set(r) == keys and r["split"] == "test" and r["dataset"] == "fakemnist" and r["per_class"] is None
               for r in records)
    combos = {(r["method"], r["fraction"], r["seed"], r["metric"]) for r in records}
    assert len(combos) == len(records)  # exactly one record per method x fraction x seed x metric
    assert {r["n_labelled"] for r in records} == {15, 60}
    sha = json.loads((tiny_card / "encoder.json").read_text())["weights"]["sha256"]
    assert {r["encoder_sha256"] for r in records if r["method"] != "scratch"} == {sha}
    assert all(0 <= r["value"] <= 1 for r in records)
    full_ft = [r["value"] for r in records if r["method"] == "finetune" and r["fraction"] == 1.0
               and r["metric"] == "auroc"]
    assert min(full_ft) > 0.7  # 2 epochs; learning itself is tested in test_classification.py

    result = json.loads((tmp_path / "label_efficiency_fakemnist.json").read_text())
    assert result["complete"] and result["records"] == records and result["config"]["fractions"] == [0.25, 1.0]
    assert result["encoder"]["sha256"] == sha and result["data"]["n_test"] == 30
    assert len(result["subsets"]) == 4 and len(result["runs"]) == 16
    train_y = __import__("numpy").load(fake_npz)["train_labels"]
    for sub in result["subsets"]:  # exactly which items were labelled, reproducible from the record
        assert sub["indices"] == label_subset(train_y, fraction=sub["fraction"], seed=sub["seed"]).tolist()
        assert sum(sub["class_counts"].values()) == sub["n_labelled"] == len(sub["indices"])
    finetune_runs = [r for r in result["runs"] if r["method"] == "finetune"]
    assert all(r["load_report"]["summary"].startswith(f"{r['load_report']['matched']} matched, 0 missing")
               for r in finetune_runs)

    md = (tmp_path / "label_efficiency_fakemnist.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "±" in line]
    assert len(rows) == len(METHODS) * 2 and "| finetune | 25% | 15 | 2 |" in md
    assert "test" in md and (tmp_path / "label_efficiency_fakemnist.png").stat().st_size > 1000


def test_config_from_yaml_and_field_errors(tmp_path):
    cfg = ProtocolConfig.from_yaml(TINY, encoder="enc", seeds=[3, 4])
    assert cfg.seeds == [3, 4] and cfg.fractions == [0.01] and cfg.methods == list(METHODS) and cfg.max_eval == 200
    for name in ("pneumoniamnist_protocol.yaml", "adrenalmnist3d_protocol.yaml"):
        shipped = ProtocolConfig.from_yaml(REPO / "configs" / "finetune" / name, encoder="enc")
        assert shipped.methods == list(METHODS) and shipped.seeds == [0, 1, 2]
    with pytest.raises(ProtocolConfigError, match=r"pneumoniamnist_protocol\.yaml: field 'encoder'"):
        ProtocolConfig.from_yaml(REPO / "configs" / "finetune" / "pneumoniamnist_protocol.yaml")

    def check(data: dict, field: str) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"path": "x.npz", "encoder": "enc", "fractions": [0.1], **data}))
        with pytest.raises(ProtocolConfigError, match=rf"bad\.yaml: field '{field}'") as err:
            ProtocolConfig.from_yaml(path)
        assert err.value.field == field and err.value.reason.value == "bad_config"

    check({"fractions": [0.0]}, "fractions")
    check({"fractions": [], "counts": []}, "fractions")
    check({"counts": ["many"]}, "counts")
    check({"methods": ["finetune", "dino"]}, "methods")
    check({"seeds": [0, 0]}, "seeds")
    check({"epochs": 0}, "epochs")
    check({"lr": "fast"}, "lr")
    check({"learning_rate": 0.1}, "learning_rate")
    check({"encoder": None, "methods": ["scratch"]}, "architecture")
    check({"ema_decay": 1.0}, "ema_decay")
    check({"select": "median"}, "select")
    check({"encoder_lr_scale": 2}, "encoder_lr_scale")
    check({"fractions": [], "per_class": [0]}, "per_class")
    check({"per_class": [5, 1, 5]}, "per_class")
    check({"per_class": [1.5]}, "per_class")
    check({"fractions": [], "counts": [], "per_class": []}, "fractions")
    only = ProtocolConfig.from_dict({"path": "x.npz", "encoder": "e", "per_class": [10, 1, 5], "counts": [20]})
    assert only.budgets() == [(None, 20, None), (None, None, 1), (None, None, 5), (None, None, 10)]
    assert ProtocolConfig.from_dict({"path": "x.npz", "encoder": "e", "fractions": [0.1], "lr": "1e-3"}).lr == 1e-3


def test_cli_evaluate_smoke(fake_npz, tiny_card, tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    args = ["evaluate", "--protocol", str(TINY), "--path", str(fake_npz), "--encoder", str(tiny_card),
            "--out", str(out), "--counts", "12", "--seeds", "5", "--quiet", "--no-plot"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| scratch | 12 items | 12 | 1 |" in printed and "12 records" in printed
    result = json.loads((out / "label_efficiency_fakemnist.json").read_text())
    assert result["config"]["seeds"] == [5] and result["config"]["max_eval"] == 200
    assert result["config"]["fractions"] == [] and {(r["count"], r["fraction"]) for r in result["records"]} == {
        (12, None)}
    assert not (out / "label_efficiency_fakemnist.png").exists()
    # a config error is a usage error (exit 2) naming the file and field
    assert main(["evaluate", "--protocol", str(TINY), "--path", str(fake_npz), "--out", str(out)]) == 2
    assert "pneumoniamnist_tiny.yaml: field 'encoder'" in capsys.readouterr().out.replace("\n", "")


def test_per_class_budgets_record_k_and_the_realised_count(fake_npz, tiny_card, tmp_path, one_thread):
    """per_class: k labelled items of every class, beside a fraction; 60 train items, 36 of class 0 and 24 of class
    1, so k=30 takes class 1 whole (54 labelled); every record has the same keys, one budget field set."""
    import numpy as np

    cfg = ProtocolConfig(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.25], per_class=[30, 2], seeds=[0, 1],
                         methods=["knn"], knn_k=3, plot=False)
    records = run_protocol(cfg, tmp_path, progress=False)
    keys = {"dataset", "method", "fraction", "count", "per_class", "n_labelled", "seed", "metric", "value", "split",
            "encoder_sha256"}
    assert all(set(r) == keys for r in records) and len(records) == 3 * 2 * len(METRICS)
    budgets = {(r["fraction"], r["count"], r["per_class"], r["n_labelled"]) for r in records}
    assert budgets == {(0.25, None, None, 15), (None, None, 2, 4), (None, None, 30, 54)}
    result = json.loads((tmp_path / "label_efficiency_fakemnist.json").read_text())
    assert result["config"]["per_class"] == [30, 2]
    assert {(r["per_class"], r["seed"], r["n_labelled"]) for r in result["runs"] if r["per_class"]} == {
        (2, 0, 4), (2, 1, 4), (30, 0, 54), (30, 1, 54)}
    train_y = np.load(fake_npz)["train_labels"]
    for sub in (s for s in result["subsets"] if s["per_class"] is not None):  # reproducible from the record
        assert sub["indices"] == label_subset(train_y, per_class=sub["per_class"], seed=sub["seed"]).tolist()
        assert sub["class_counts"] == ({"0": 2, "1": 2} if sub["per_class"] == 2 else {"0": 30, "1": 24})


def test_cli_per_class_replaces_the_budgets_of_the_file(fake_npz, tiny_card, tmp_path, one_thread):
    out = tmp_path / "out"
    assert main(["evaluate", "--protocol", str(TINY), "--path", str(fake_npz), "--encoder", str(tiny_card), "--out",
                 str(out), "--per-class", "3", "--seeds", "0", "--methods", "knn", "--quiet", "--no-plot"]) == 0
    result = json.loads((out / "label_efficiency_fakemnist.json").read_text())
    assert (result["config"]["fractions"], result["config"]["counts"], result["config"]["per_class"]) == ([], [], [3])
    assert {(r["fraction"], r["count"], r["per_class"], r["n_labelled"]) for r in result["records"]} == {
        (None, None, 3, 6)}


def test_pipeline_script(fake_npz, tiny_card, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--protocol", str(TINY), "--path", str(fake_npz), "--encoder",
                                      str(tiny_card), "--out", str(tmp_path), "--methods", "knn", "--quiet"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "pipelines" / "evaluate.py"), run_name="__main__")
    assert done.value.code == 0 and (tmp_path / "label_efficiency_fakemnist.png").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_pneumoniamnist_probes_of_a_random_encoder(tmp_path, one_thread):
    """Frozen random-init ResNet features on real PneumoniaMNIST, 10% labels: the reference any pretraining must
    beat (the random-feature probes are already far above chance on this task)."""
    import torch

    from medssl.models.hub import export_encoder
    from medssl.models.resnet import ResNetEncoder
    from tests.conftest import require_shared

    npz = require_shared("medmnist", "pneumoniamnist.npz")
    torch.manual_seed(0)
    encoder = ResNetEncoder(1, spatial_dims=2, layers=[1, 1, 1, 1], block_inplanes=[32, 64, 128, 256],
                            conv1_t_size=3, conv1_t_stride=1, no_max_pool=True)  # configs/pretrain/medmnist
    export_encoder(encoder, tmp_path / "encoder", method="random_init", preprocessing={"kind": "medmnist"})
    cfg = ProtocolConfig(path=str(npz), encoder=str(tmp_path / "encoder"), fractions=[0.1], seeds=[0],
                         methods=["linear_probe", "knn"])
    records = run_protocol(cfg, tmp_path / "out", progress=False)
    values = {(r["method"], r["metric"]): r["value"] for r in records}
    print(json.dumps({f"{m}/{k}": round(v, 4) for (m, k), v in values.items()}))
    assert {r["n_labelled"] for r in records} == {471} and {r["split"] for r in records} == {"test"}
    assert values["linear_probe", "auroc"] > 0.8 and values["knn", "auroc"] > 0.8


def test_augment_trains_on_perturbed_items_redrawn_each_epoch(fake_npz, tiny_card, tmp_path, one_thread,
                                                               monkeypatch):
    """augment: the fine-tuned and scratch runs see the labelled items through finetune_augment, a new draw per
    epoch (the module calls set_epoch), while probes and evaluation use the plain images."""
    import numpy as np

    from medssl.data.medmnist import MedMNISTDataset

    seen: list[tuple[int, int]] = []
    original = MedMNISTDataset.set_epoch

    def record(self, epoch):
        if self.transform is not None:
            seen.append((int(epoch), len(self)))
        original(self, epoch)

    monkeypatch.setattr(MedMNISTDataset, "set_epoch", record)
    cfg = ProtocolConfig(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.25], seeds=[0], epochs=3,
                         batch_size=16, patience=None, methods=["finetune", "scratch"], augment=True, plot=False)
    records = run_protocol(cfg, tmp_path, progress=False)
    assert {r["method"] for r in records} == {"finetune", "scratch"}
    assert sorted(e for e, _ in seen) == [0, 0, 1, 1, 2, 2]  # both methods, every epoch
    assert {n for _, n in seen} == {15}
    monkeypatch.undo()
    # the items themselves differ between epochs, reproducibly
    from medssl.transforms.finetune_augment import finetune_augment

    ds = MedMNISTDataset(fake_npz, "train", indices=[0, 1], seed=0, transform=finetune_augment(2, (28, 28)))
    first = ds[0]["image"].clone()
    ds.set_epoch(1)
    assert not np.allclose(first.numpy(), ds[0]["image"].numpy())
    ds.set_epoch(0)
    assert np.array_equal(first.numpy(), ds[0]["image"].numpy())
    with pytest.raises(ProtocolConfigError, match="augment"):
        ProtocolConfig(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.25], augment="yes").validate()


def test_select_last_and_ema_reach_every_trained_run(fake_npz, tiny_card, tmp_path, one_thread):
    """select: last trains every epoch (patience unused) and keeps the final weights; ema_decay reaches the fit."""
    cfg = ProtocolConfig(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.25], seeds=[0], epochs=3,
                         batch_size=16, patience=1, methods=["finetune", "scratch"], select="last", ema_decay=0.5,
                         plot=False)
    run_protocol(cfg, tmp_path, progress=False)
    runs = json.loads((tmp_path / f"label_efficiency_{Path(fake_npz).stem}.json").read_text())["runs"]
    assert len(runs) == 2
    for run in runs:
        assert (run["select"], run["ema_decay"], run["epochs_trained"], run["best_epoch"]) == ("last", 0.5, 3, 2)
        assert not run["stopped_early"]


def test_probe_precise_bn_recalibrates_on_the_train_split_only(fake_npz, tiny_card, tmp_path, one_thread,
                                                               monkeypatch):
    """probe_precise_bn: the probes' features come from a copy of the encoder whose BatchNorm statistics were
    re-estimated on the plain train split images (never val or test), and the encoder itself is left as loaded."""
    import torch

    from medssl.finetune import protocol

    calls = []
    original = protocol.recalibrated_copy

    def spy(encoder, dataset, **kwargs):
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        copy = original(encoder, dataset, **kwargs)
        assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the loaded one unchanged
        calls.append((dataset.split, len(dataset), dataset.transform, copy is not encoder))
        return copy

    monkeypatch.setattr(protocol, "recalibrated_copy", spy)
    base = dict(path=str(fake_npz), encoder=str(tiny_card), fractions=[0.5], seeds=[0], methods=["linear_probe", "knn"],
                plot=False)
    plain = run_protocol(ProtocolConfig(**base), tmp_path / "plain", progress=False)
    assert calls == []
    recal = run_protocol(ProtocolConfig(**base, probe_precise_bn=True), tmp_path / "recal", progress=False)
    n_train = json.loads((tmp_path / "recal" / f"label_efficiency_{fake_npz.stem}.json").read_text())["data"]["n_train"]
    assert calls == [("train", n_train, None, True)]
    value = {(r["method"], r["metric"]): r["value"] for r in plain}
    assert any(r["value"] != value[r["method"], r["metric"]] for r in recal)  # other statistics, other features
    with pytest.raises(ProtocolConfigError, match="probe_precise_bn"):
        ProtocolConfig(**base, probe_precise_bn="yes").validate()
