"""ResumableSampler (data position, sharding) and the warmup + cosine schedule."""
import math

import pytest
import torch
from torch import nn

from medssl.data.sampler import EpochDataset, ResumableSampler
from medssl.training.optim import OptimConfig, build_optimizer, param_groups, warmup_cosine


def test_sampler_is_seeded_by_epoch_only():
    a, b = ResumableSampler(10, seed=3), ResumableSampler(10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNG must not matter
    assert first == list(b)
    assert sorted(i for _, i in first) == list(range(10))
    assert all(e == 2 for e, _ in first)
    b.set_epoch(3)
    assert [i for _, i in b] != [i for _, i in first]


def test_sampler_resume_continues_where_it_stopped():
    full = ResumableSampler(11, seed=1)
    full.set_epoch(4)
    order = list(full)
    resumed = ResumableSampler(11, seed=1)
    resumed.resume_at(4, 6)
    assert list(resumed) == order[6:]
    assert len(resumed) == len(full)  # Lightning counts the resumed epoch from where it stopped
    resumed.set_epoch(5)  # the skip applies to the resumed epoch only
    assert len(list(resumed)) == 11
    with pytest.raises(ValueError):
        resumed.resume_at(4, 12)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shards_ranks_disjointly(drop_last):
    shards = [ResumableSampler(10, seed=0, rank=r, world_size=3, drop_last=drop_last) for r in range(3)]
    parts = [[i for _, i in s] for s in shards]
    assert len({len(p) for p in parts}) == 1
    flat = [i for p in parts for i in p]
    if drop_last:
        assert len(set(flat)) == len(flat) == 9
    else:
        assert set(flat) == set(range(10)) and len(flat) == 12


def test_epoch_dataset_passes_the_epoch():
    class Items:
        epoch = 0

        def set_epoch(self, e):
            self.epoch = e

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (self.epoch, i)

    ds = EpochDataset(Items())
    assert ds[(7, 2)] == (7, 2) and len(ds) == 3


def test_warmup_cosine_shape():
    f = warmup_cosine(100, 0.1)
    values = [f(s) for s in range(100)]
    assert values[0] == pytest.approx(1 / 11)
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 10
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # monotone decay after warmup
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(100, 5, min_ratio=0.1)(100) == pytest.approx(0.1)
    assert warmup_cosine(100, 0.0)(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_param_groups_exclude_norms_biases_and_embeddings():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
    decay, no_decay = param_groups(model, 0.05)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    opt, sched = build_optimizer(model, OptimConfig(lr=0.1, warmup=0.5), total_steps=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 3)
    with pytest.raises(ValueError):
        OptimConfig(lr=-1)
