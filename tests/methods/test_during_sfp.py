"""SoftFilterPruning: exact zeroed-filter counts, recovery, finalize masks, compact equality, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.methods.during.sfp import SoftFilterPruning, filter_norms
from prunekit.train import train


def _cnn(seed=0, bias=False, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 10, 3, padding=1, bias=bias)]
    layers += [nn.BatchNorm2d(10)] if bn else []
    layers += [nn.ReLU(), nn.Conv2d(10, 7, 3, padding=1, bias=bias)]
    layers += [nn.BatchNorm2d(7)] if bn else []
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def _zero_rows(w):
    return int((w.detach().reshape(w.shape[0], -1).abs().sum(1) == 0).sum())


@pytest.mark.parametrize("sparsity, expected", [(0.3, {"0.weight": 3, "2.weight": 2}),   # round(3.0), round(2.1)
                                                (0.5, {"0.weight": 5, "2.weight": 4}),   # round(5.0), round(3.5)=4
                                                (0.25, {"0.weight": 2, "2.weight": 2})])  # round(2.5)=2, round(1.75)
def test_update_zeroes_exact_count_of_lowest_norm_filters(sparsity, expected):
    model = _cnn()
    norms = {n: filter_norms(model.get_parameter(n)) for n in expected}
    sfp = SoftFilterPruning(model, sparsity)
    assert sfp.names == ["0.weight", "2.weight"]          # Linear not included by default
    zeroed = sfp.update()
    for name, k in expected.items():
        w = model.get_parameter(name)
        assert _zero_rows(w) == k == int(zeroed[name].sum())
        assert set(torch.nonzero(zeroed[name]).flatten().tolist()) == set(norms[name].argsort()[:k].tolist())
    assert not pk.get_masks(model)                         # soft: no masks
    assert all(p.requires_grad for p in model.parameters())
    assert sfp.history == [(0, expected)]


def test_zeroed_filters_recover_after_a_training_step():
    model = _cnn(bias=True)   # a zero filter gets a gradient where its channel's output is > 0 (bias > 0)
    with torch.no_grad():
        model[0].bias.fill_(0.1)
    sfp = SoftFilterPruning(model, 0.5)
    zeroed = sfp.update()
    train(model, _batches(1), epochs=1, lr=1e-2, optimizer="sgd", progress=False)
    w = model.get_parameter("0.weight").detach()
    assert w[zeroed["0.weight"]].abs().sum(dim=(1, 2, 3)).gt(0).all()   # every zeroed filter moved
    assert _zero_rows(w) == 0


def test_callback_updates_at_each_epoch_end_with_steps_per_epoch():
    model = _cnn()
    batches = _batches(3)
    sfp = SoftFilterPruning(model, 0.4, steps_per_epoch=len(batches))
    train(model, batches, epochs=2, lr=1e-2, optimizer="sgd", progress=False, callback=sfp)
    assert [s for s, _ in sfp.history] == [3, 6]
    assert all(c == {"0.weight": 4, "2.weight": 3} for _, c in sfp.history)   # round(4.0), round(2.8)
    # the last update ran after the last step, so those filters are zero now
    assert _zero_rows(model.get_parameter("0.weight")) == 4


def test_every_steps_and_own_loop():
    model = _cnn()
    sfp = SoftFilterPruning(model, 0.5, every=2)
    assert [sfp.step() for _ in range(5)] == [False, True, False, True, False]
    assert [s for s, _ in sfp.history] == [2, 4]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        SoftFilterPruning(_cnn(), 0.5).step()
    per_epoch = SoftFilterPruning(_cnn(), 0.5)
    per_epoch.epoch_end()
    per_epoch.epoch_end()
    assert [e for e, _ in per_epoch.history] == [1, 2]


def test_finalize_gives_channel_masks_with_exact_counts():
    model = _cnn()
    sfp = SoftFilterPruning(model, 0.3)
    zeroed = sfp.update()
    masks = sfp.finalize()
    for name, k in {"0.weight": 3, "2.weight": 2}.items():
        m = masks[name]
        assert m.shape == model.get_parameter(name + "_orig").shape
        rows = m.reshape(m.shape[0], -1)
        assert (rows.all(1) | ~rows.any(1)).all()          # whole channels
        assert int((~rows.any(1)).sum()) == k
        assert torch.equal(~rows.any(1), zeroed[name])    # the filters zeroed last
    assert set(pk.get_masks(model)) == {"0.weight", "2.weight"}


@pytest.mark.parametrize("bias, bn", [(False, False), (True, True)])
def test_compact_after_finalize_equals_masked_model(bias, bn):
    model = _cnn(bias=bias, bn=bn)
    batches = _batches(2)
    sfp = SoftFilterPruning(model, 0.5, steps_per_epoch=len(batches))
    train(model, batches, epochs=2, lr=1e-2, optimizer="sgd", progress=False, callback=sfp)
    sfp.finalize()
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    small = pk.compact(model, x)
    assert small[0].out_channels == 5 and small[2 + bn].out_channels == 3   # 10 - 5, 7 - round(3.5)
    reference = model if not (bias or bn) else pk.zero_removed_channels(model, x)
    with torch.no_grad():
        torch.testing.assert_close(small(x), reference(x), rtol=1e-5, atol=1e-5)
    if not (bias or bn):  # no bias/BN: the masked model itself
        with torch.no_grad():
            torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_include_linear_and_l1_norm():
    model = _cnn()
    sfp = SoftFilterPruning(model, 0.5, include=["0.weight", "6.weight"], norm=1)
    assert sfp.names == ["0.weight", "6.weight"]
    zeroed = sfp.update()
    assert int(zeroed["6.weight"].sum()) == 2                  # round(1.5) = 2 of 3
    assert _zero_rows(model.get_parameter("6.weight")) == 2


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sparsity": 1.0}, ValueError, "sparsity"),
    ({"sparsity": -0.1}, ValueError, "sparsity"),
    ({"sparsity": "half"}, TypeError, "sparsity"),
    ({"sparsity": 0.5, "norm": 0}, ValueError, "norm"),
    ({"sparsity": 0.5, "every": "batch"}, ValueError, "every"),
    ({"sparsity": 0.5, "every": 0}, ValueError, "every"),
    ({"sparsity": 0.5, "steps_per_epoch": 0}, ValueError, "steps_per_epoch"),
    ({"sparsity": 0.5, "bn_data": 3}, TypeError, "bn_data"),
    ({"sparsity": 0.5, "include": ["nope.*"]}, ValueError, "include"),
    ({"sparsity": 0.5, "include": ["0.bias"]}, ValueError, "include"),
])
def test_bad_arguments_raise_before_touching_the_model(kwargs, error, match):
    model = _cnn(bias=True)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        SoftFilterPruning(model, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_masked_model_and_no_convs_refused():
    model = _cnn()
    pk.prune(model, 0.5)
    with pytest.raises(ValueError, match="already masked"):
        SoftFilterPruning(model, 0.5)
    with pytest.raises(ValueError, match="no conv"):
        SoftFilterPruning(nn.Sequential(nn.Linear(3, 3)), 0.5)
    with pytest.raises(TypeError, match="model"):
        SoftFilterPruning("model", 0.5)



def test_bn_data_recalibrates_the_statistics_after_each_update():
    model = _cnn(bn=True)
    batches = _batches(3)
    train(model, batches, epochs=1, progress=False)
    reference = copy.deepcopy(model)
    sfp = SoftFilterPruning(model, 0.5, bn_data=batches)
    sfp.update()
    SoftFilterPruning(reference, 0.5).update()           # the same filters, statistics left alone
    assert not torch.equal(reference[4].running_mean, model[4].running_mean)
    torch.optim.swa_utils.update_bn(batches, reference)  # recomputed by hand: the same
    for a, b in ((reference[1], model[1]), (reference[4], model[4])):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    assert model[1].running_mean[sfp.zeroed["0.weight"]].eq(0).all()   # a zeroed filter's mean is 0
    assert model[1].momentum == 0.1                                    # momentum restored
