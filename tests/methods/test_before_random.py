"""Random pruning with ER/ERK/uniform ratios: exact per-layer counts, seeds, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.allocation.distributions import erk
from prunekit.methods.before.random import prune_random


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 10))


@pytest.mark.parametrize("distribution", ["erk", "er", "uniform"])
def test_exact_counts_per_layer(distribution):
    model = _cnn()
    masks = prune_random(model, 0.2, distribution=distribution, seed=3)
    params = dict(model.named_parameters())
    shapes = {n: tuple(params[n + "_orig"].shape) for n in masks}
    want = {n: 0.2 for n in shapes} if distribution == "uniform" else erk(shapes, 0.2, kernel=distribution == "erk")
    for n, m in masks.items():
        assert int(m.sum()) == m.numel() - round((1 - want[n]) * m.numel()), n
    applied = pk.get_masks(model)
    assert set(applied) == set(masks) and all(torch.equal(masks[n], applied[n]) for n in masks)


def test_seed_decides_the_mask_and_er_differs_from_erk():
    a, b, c = _cnn(), _cnn(), _cnn()
    ma, mb, mc = prune_random(a, 0.3, seed=1), prune_random(b, 0.3, seed=1), prune_random(c, 0.3, seed=2)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert any(not torch.equal(ma[n], mc[n]) for n in ma)
    er = prune_random(_cnn(), 0.3, distribution="er")
    assert int(er["0.weight"].sum()) > int(ma["0.weight"].sum())  # ER ignores the 3x3 kernel


def test_dense_layer_is_kept():
    masks = prune_random(_cnn(), 0.3, dense=["0.weight"])
    assert bool(masks["0.weight"].all()) and not bool(masks["5.weight"].all())


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(density=0.0), ValueError, "density"),
    (dict(density=0.3, distribution="gaussian"), ValueError, "distribution"),
    (dict(density=0.3, distribution="uniform", dense=["0.weight"]), ValueError, "dense"),
    (dict(density=0.3, dense=["nope"]), ValueError, "dense"),
    (dict(density=0.3, seed="0"), TypeError, "seed"),
])
def test_bad_arguments_leave_the_model_untouched(kwargs, exc, name):
    model = _cnn()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(exc, match=name):
        prune_random(model, **kwargs)
    assert not pk.get_masks(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
