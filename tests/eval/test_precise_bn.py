"""PreciseBN: the copy's BatchNorm statistics equal the data's (naive reference), the original is untouched,
dropout stays off and the global random state is not consumed."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from medssl.eval.precise_bn import has_batchnorm, recalibrated_copy


class Images(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": 0}


def _net(spatial_dims=2):
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 4, 3), bn(4), nn.ReLU(), nn.Dropout(0.5), conv(4, 3, 1), bn(3), nn.Flatten(1))


def _reference_stats(net, x):
    """Per-channel mean and unbiased variance of each BatchNorm's input over all of ``x`` (one batch)."""
    stats, h = [], x
    for layer in net:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            dims = [0, *range(2, h.ndim)]
            mean = h.mean(dim=dims)
            n = h.numel() // h.shape[1]
            var = ((h - mean.view(1, -1, *[1] * (h.ndim - 2))) ** 2).sum(dim=dims) / (n - 1)
            stats.append((mean, var))
            h = (h - mean.view(1, -1, *[1] * (h.ndim - 2))) / torch.sqrt(
                h.var(dim=dims, unbiased=False).view(1, -1, *[1] * (h.ndim - 2)) + layer.eps)
            h = h * layer.weight.view(1, -1, *[1] * (h.ndim - 2)) + layer.bias.view(1, -1, *[1] * (h.ndim - 2))
        elif isinstance(layer, nn.Dropout):
            continue
        else:
            h = layer(h)
    return stats


def test_statistics_match_a_naive_reference_and_the_original_is_untouched():
    for dims in (2, 3):
        net = _net(dims)
        x = 0.05 * torch.rand(16, 1, *[6] * dims)  # small variance, as for [0, 1] images
        before = {k: v.clone() for k, v in net.state_dict().items()}
        rng = torch.get_rng_state()
        copy = recalibrated_copy(net, Images(x), batch_size=16, num_batches=1)
        assert torch.equal(torch.get_rng_state(), rng)  # dropout stayed off, no random draw
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        got = [(m.running_mean, m.running_var) for m in copy.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        with torch.no_grad():
            ref = _reference_stats(net, x)
        for (gm, gv), (rm, rv) in zip(got, ref):
            torch.testing.assert_close(gm, rm, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(gv, rv, rtol=1e-4, atol=1e-7)
        assert not copy.training and all(m.momentum == 0.1 for m in copy.modules()
                                         if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_several_batches_average_their_statistics():
    net = _net(2)
    x = torch.rand(12, 1, 6, 6)
    copy = recalibrated_copy(net, Images(x), batch_size=4, num_batches=3)
    bn = copy[1]
    means = []
    with torch.no_grad():
        for i in range(3):
            h = net[0](x[4 * i: 4 * i + 4])
            means.append(h.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


def test_encoders_without_batchnorm_are_returned_as_they_are():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.Flatten(1))
    assert not has_batchnorm(net) and recalibrated_copy(net, Images(torch.rand(4, 1, 5, 5))) is net


def test_eval_features_of_a_stale_encoder_become_those_of_batch_statistics():
    """The failure it fixes: a fresh BatchNorm (running var 1) on low-variance images squashes the features;
    after recalibration eval-mode outputs equal train-mode (batch statistics) outputs on the same batch."""
    net = _net(2).eval()
    x = 0.02 * torch.rand(32, 1, 6, 6)
    copy = recalibrated_copy(net, Images(x), batch_size=32, num_batches=1)
    net_no_dropout = _net(2)
    net_no_dropout[3].p = 0.0
    with torch.no_grad():
        batch_stats = net_no_dropout.train()(x)
        recal = copy(x)
        stale = net(x)
    assert torch.allclose(recal, batch_stats, rtol=1e-2, atol=1e-2)  # running var is unbiased, batch var biased
    assert not torch.allclose(stale, batch_stats, atol=1e-2)
