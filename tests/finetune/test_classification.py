"""ClassificationFinetuner / fit_classifier on a tiny exported ResNet and a learnable fake MedMNIST file."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from medssl.data.medmnist import MedMNISTDataset
from medssl.finetune import classification
from medssl.finetune.classification import ClassificationFinetuner, fit_classifier, predict_proba, train_classifier
from medssl.models.hub import load_encoder_state
from medssl.models.vit import ViTEncoder


@pytest.fixture(scope="module")
def splits(fake_npz):
    return tuple(MedMNISTDataset(fake_npz, s) for s in ("train", "val", "test"))


def _encoder_state(module: ClassificationFinetuner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.model.encoder.state_dict().items()}


def test_pretrained_init_loads_every_encoder_key(tiny_card):
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card))
    report = module.load_report
    state, card = load_encoder_state(tiny_card)
    assert sorted(report.matched) == sorted(f"encoder.{k}" for k in state)  # 100% of the card's tensors
    assert not report.missing and not report.unexpected and not report.mismatched
    assert report.expected_missing == ["head.weight", "head.bias"]
    assert module.encoder_sha256 == card["weights"]["sha256"]
    assert all(torch.equal(module.model.encoder.state_dict()[k], v) for k, v in state.items())


def test_scratch_never_reads_the_weights(tiny_card, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("scratch must not load the encoder weights")

    monkeypatch.setattr(classification, "load_encoder", refuse)
    module = ClassificationFinetuner(num_classes=2, init="scratch", encoder=str(tiny_card), seed=1)
    assert module.load_report is None and module.encoder_sha256 is None
    state, card = load_encoder_state(tiny_card)
    assert module.hparams["architecture"] == card["architecture"]
    assert not torch.equal(module.model.encoder.conv1.weight, state["conv1.weight"])
    same = ClassificationFinetuner(num_classes=2, init="scratch", architecture=card["architecture"], seed=1)
    assert torch.equal(same.model.encoder.conv1.weight, module.model.encoder.conv1.weight)  # seeded init


def test_linear_mode_leaves_the_encoder_alone_and_finetune_changes_it(tiny_card, splits, one_thread):
    train, val, _ = splits
    for mode in ("linear", "finetune"):
        module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), mode=mode,
                                         optim={"lr": 1e-2, "warmup": 0.0})
        before, head = _encoder_state(module), module.model.head.weight.clone()
        train_classifier(module, train, val, epochs=2, batch_size=16, seed=0)
        after = module.model.encoder.state_dict()
        unchanged = all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
        assert unchanged == (mode == "linear"), mode
        assert not torch.equal(head, module.model.head.weight)
    assert {g["weight_decay"] for g in module.param_groups()} == {0.05, 0.0}


def test_freeze_encoder_epochs_train_the_head_first(tiny_card, splits, one_thread):
    train, val, _ = splits
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), freeze_encoder_epochs=2)
    assert module.encoder_frozen and not any(p.requires_grad for p in module.model.encoder.parameters())
    assert sum(len(g["params"]) for g in module.param_groups()) == len(list(module.model.parameters()))
    before = _encoder_state(module)
    module.train()
    assert not module.model.encoder.training and module.model.head.training  # frozen: eval-mode BatchNorm
    train_classifier(module, train, val, epochs=1, batch_size=16, seed=0)
    assert all(torch.equal(before[k], v) for k, v in module.model.encoder.state_dict().items())


def test_best_checkpoint_is_restored(tiny_card, splits, tmp_path, one_thread):
    train, val, _ = splits
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), optim={"lr": 3e-3})
    info = train_classifier(module, train, val, epochs=3, batch_size=16, seed=0, run_dir=tmp_path)
    assert info["epochs_trained"] == 3 and len(module.val_history) == 3
    best = max(module.val_history, key=lambda h: h["auroc"])  # the first of equal maxima
    assert info["best_epoch"] == best["epoch"] and info["best_val"] == best
    ckpt = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in ckpt["state_dict"].items())
    probs, labels = predict_proba(module.model, val)
    assert classification.classification_metrics(labels, probs) == pytest.approx(
        {k: best[k] for k in ("accuracy", "balanced_accuracy", "auroc")})
    assert (tmp_path / "metrics.csv").is_file()


def test_fit_classifier_learns_and_is_deterministic(tiny_card, splits, one_thread):
    train, val, test = splits
    kwargs = {"mode": "finetune", "epochs": 3, "batch_size": 16, "lr": 3e-3, "seed": 0, "patience": 2}
    torch.manual_seed(123)
    a = fit_classifier(tiny_card, None, Subset(train, list(range(40))), val, test, **kwargs)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    b = fit_classifier(tiny_card, None, Subset(train, list(range(40))), val, test, **kwargs)
    assert torch.equal(after_a, torch.rand(1))  # the caller's random stream is untouched
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]
    assert a["split"] == "test" and a["n_train"] == 40 and a["n_test"] == len(test) and a["init"] == "pretrained"
    assert a["load_report"]["matched"] == len(load_encoder_state(tiny_card)[0])
    assert a["metrics"]["auroc"] > 0.9  # bright vs dark centre square


def test_layer_decay_scales_vit_blocks(tmp_path):
    from medssl.models.hub import export_encoder

    vit = ViTEncoder(1, img_size=28, patch_size=7, hidden_size=16, mlp_dim=32, num_layers=3, num_heads=2,
                     spatial_dims=2)
    export_encoder(vit, tmp_path, method="test", preprocessing={})
    module = ClassificationFinetuner(num_classes=3, encoder=str(tmp_path), layer_decay=0.5, optim={"lr": 1.0})
    lr_of = {id(p): g["lr"] for g in module.param_groups() for p in g["params"]}
    params = dict(module.model.named_parameters())
    for i in range(3):  # blocks.i: lr * decay ** (depth - i)
        assert lr_of[id(params[f"encoder.blocks.{i}.mlp.linear1.weight"])] == 0.5 ** (3 - i)
    assert lr_of[id(params["encoder.patch_embedding.position_embeddings"])] == 0.5 ** 4
    assert lr_of[id(params["encoder.norm.weight"])] == lr_of[id(params["head.weight"])] == 1.0
    assert not any(id(p) in lr_of for n, p in params.items() if "norm_cross_attn" in n)  # frozen by design


def test_invalid_settings(tiny_card):
    with pytest.raises(ValueError, match="layer_decay is defined for ViT"):
        ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), layer_decay=0.7)
    with pytest.raises(ValueError, match="needs an encoder card"):
        ClassificationFinetuner(num_classes=2)
    with pytest.raises(ValueError, match="mode"):
        ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), mode="partial")
    with pytest.raises(ValueError, match="AdamW"):
        ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), optim={"name": "sgd"})


def test_min_steps_stretches_small_subsets(tiny_card, splits, one_thread):
    train, val, test = splits
    # 15 items in batches of 16: one step per epoch; 2 epochs < 6 steps, so every count is stretched 3x
    out = fit_classifier(tiny_card, None, Subset(train, list(range(15))), val, test, epochs=2, batch_size=16,
                         min_steps=6, patience=None, seed=0)
    assert (out["max_epochs"], out["val_every_n_epochs"], out["steps_per_epoch"]) == (6, 3, 1)
    assert out["epochs_trained"] == 6 and out["best_epoch"] in (2, 5)  # validated after epochs 3 and 6 only
    full = fit_classifier(tiny_card, None, train, val, test, epochs=2, batch_size=16, min_steps=6, patience=None)
    assert (full["max_epochs"], full["val_every_n_epochs"]) == (2, 1)  # 4 steps per epoch: already enough


def test_ema_weights_are_validated_kept_and_restored(tiny_card, splits, tmp_path, one_thread):
    train, val, _ = splits
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), optim={"lr": 3e-3})
    info = train_classifier(module, train, val, epochs=3, batch_size=16, seed=0, run_dir=tmp_path, ema_decay=0.8)
    ckpt = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)
    state = module.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in ckpt["state_dict"].items())  # the average is what is kept
    live = ckpt["current_model_state"]
    assert not torch.equal(live["model.encoder.conv1.weight"], state["model.encoder.conv1.weight"])
    probs, labels = predict_proba(module.model, val)  # validation scored the averaged weights
    assert classification.classification_metrics(labels, probs) == pytest.approx(
        {k: info["best_val"][k] for k in ("accuracy", "balanced_accuracy", "auroc")})
    with pytest.raises(ValueError, match="ema_decay"):
        train_classifier(module, train, val, epochs=1, batch_size=16, ema_decay=1.0)


def test_select_last_keeps_the_final_weights(tiny_card, splits, tmp_path, one_thread):
    train, val, _ = splits
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), optim={"lr": 3e-3})
    info = train_classifier(module, train, val, epochs=3, batch_size=16, seed=0, run_dir=tmp_path, select="last")
    assert info["best_epoch"] == 2 and info["epochs_trained"] == 3 and len(module.val_history) == 3
    assert info["best_val"] == module.val_history[-1] and info["checkpoint"].endswith("best.ckpt")
    probs, labels = predict_proba(module.model, val)
    assert classification.classification_metrics(labels, probs) == pytest.approx(
        {k: module.val_history[-1][k] for k in ("accuracy", "balanced_accuracy", "auroc")})
    with pytest.raises(ValueError, match="patience=None"):
        train_classifier(module, train, val, epochs=1, batch_size=16, patience=2, select="last")
    with pytest.raises(ValueError, match="select"):
        train_classifier(module, train, val, epochs=1, batch_size=16, select="median")


def test_encoder_lr_scale_slows_only_the_encoder(tiny_card):
    module = ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), encoder_lr_scale=0.1,
                                     optim={"lr": 1e-3})
    head = {id(p) for p in module.model.head.parameters()}
    for group in module.param_groups():
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all encoder or all head
        assert group["lr"] == pytest.approx(1e-3 if in_head == {True} else 1e-4)
    assert sum(len(g["params"]) for g in module.param_groups()) == len(list(module.model.parameters()))
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        ClassificationFinetuner(num_classes=2, encoder=str(tiny_card), encoder_lr_scale=0.0)


def test_labelled_set_is_the_subset_as_stored_or_redrawn_each_epoch(splits):
    """labelled_set: what both the protocol and `medssl finetune` train on (same items and labels either way)."""
    from medssl.finetune.classification import labelled_set

    train = splits[0]
    assert labelled_set(train, None, augment=False, seed=0) is train
    plain = labelled_set(train, [3, 5, 7], augment=False, seed=0)
    assert len(plain) == 3 and torch.equal(plain[1]["image"], train[5]["image"])
    aug = labelled_set(train, [3, 5, 7], augment=True, seed=4)
    assert len(aug) == 3 and aug.seed == 4 and train.transform is None  # the source dataset is left as it was
    assert int(aug[1]["label"]) == int(train[5]["label"])
    first = aug[1]["image"].clone()
    assert not torch.equal(first, train[5]["image"])  # perturbed
    assert torch.equal(aug[1]["image"], first)  # the same draw within an epoch
    aug.set_epoch(1)
    assert not torch.equal(aug[1]["image"], first)  # a new draw the next epoch
    assert len(labelled_set(train, None, augment=True, seed=0)) == len(train)
