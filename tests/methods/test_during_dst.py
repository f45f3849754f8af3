"""DynamicSparsity (RigL / SET callback): constant counts, updates equal the pure functions,
grown weights start at zero, the optimiser state of grown weights is reset, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.allocation.distributions import erk
from prunekit.methods.during.dynamic import DynamicSparsity, rigl_update
from prunekit.schedules import cosine_decay
from prunekit.train import train


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))


def _batches(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


class Checker:
    """Before each update: the pure function's answer; after: compare, and check invariants."""

    def __init__(self, dst, model):
        self.dst, self.model, self.updates, self.counts = dst, model, 0, []

    def __call__(self, info):
        before = pk.get_masks(self.model)
        snap = {}
        for n in before:
            module = self.model.get_submodule(n.rpartition(".")[0])
            snap[n] = (module.weight_orig.detach().clone(), module.weight.grad.clone())
        exp_avg = {n: info.optimizer.state[self.model.get_submodule(n.rpartition(".")[0]).weight_orig]["exp_avg"]
                   for n in before}
        did = self.dst(info)  # __call__ returns None; use history to see whether it updated
        after = pk.get_masks(self.model)
        self.counts.append({n: int(m.sum()) for n, m in after.items()})
        if self.dst.history and self.dst.history[-1][0] == info.step:
            self.updates += 1
            f = cosine_decay(info.step, initial=0.5, end_step=12)
            assert self.dst.history[-1][1] == f
            for n, m in after.items():
                w, g = snap[n]
                assert torch.equal(m, rigl_update(w, before[n], g, f))
                grown = m & ~before[n]
                module = self.model.get_submodule(n.rpartition(".")[0])
                assert torch.all(module.weight_orig[grown] == 0) and torch.all(module.weight[grown] == 0)
                assert torch.all(exp_avg[n][grown] == 0)
                kept = m & before[n]
                assert torch.equal(module.weight_orig[kept], w[kept])  # survivors keep their values
                assert int((before[n] & ~m).sum()) <= math.floor(f * int(before[n].sum()))
        else:
            assert all(torch.equal(after[n], before[n]) for n in before)
        assert did is None


def test_rigl_training_keeps_counts_and_matches_the_pure_update():
    model = _mlp()
    dst = DynamicSparsity(model, 0.3, update_every=3, end_step=12, drop_fraction=0.5, seed=4)
    masks = pk.get_masks(model)
    shapes = {n: tuple(m.shape) for n, m in masks.items()}
    dens = erk(shapes, 0.3)
    start = {n: int(m.sum()) for n, m in masks.items()}
    assert start == {n: math.prod(s) - round((1 - dens[n]) * math.prod(s)) for n, s in shapes.items()}
    checker = Checker(dst, model)
    train(model, _batches(), epochs=3, lr=1e-2, progress=False, callback=checker)  # 15 steps
    assert checker.updates == 3                                  # steps 3, 6, 9 (12 is T_end)
    assert [h[0] for h in dst.history] == [3, 6, 9]
    assert all(c == start for c in checker.counts)               # every layer's count is constant
    assert any(sum(h[2].values()) > 0 for h in dst.history)      # connections did move


def test_set_keeps_counts_and_is_seeded():
    def run(seed):
        model = _mlp()
        dst = DynamicSparsity(model, 0.25, method="set", update_every=2, end_step=10, seed=seed)
        train(model, _batches(), epochs=2, lr=1e-2, progress=False, callback=dst)
        return dst, pk.get_masks(model)

    (d1, m1), (_, m2), (_, m3) = run(0), run(0), run(1)
    assert all(torch.equal(m1[n], m2[n]) for n in m1)
    assert any(not torch.equal(m1[n], m3[n]) for n in m1)
    start = {n: int(m.sum()) for n, m in pk.get_masks(_prune_only(0.25)).items()}
    assert {n: int(m.sum()) for n, m in m1.items()} == start
    assert [h[0] for h in d1.history] == [2, 4, 6, 8]


def _prune_only(density):
    model = _mlp()
    DynamicSparsity(model, density, method="set", update_every=2, end_step=10)
    return model


def test_remove_takes_the_hooks_off():
    model = _mlp()
    dst = DynamicSparsity(model, 0.5, update_every=2, end_step=10)
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    dst.remove()
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks - 3
    model(torch.randn(2, 12)).sum().backward()
    assert not model[0].weight.retains_grad
    with pytest.raises(RuntimeError, match="gradient"):
        dst.update(2)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(density=0.0), ValueError, "density"),
    (dict(method="prune"), ValueError, "method"),
    (dict(update_every=0), ValueError, "update_every"),
    (dict(update_every=1.5), TypeError, "update_every"),
    (dict(end_step=0), ValueError, "end_step"),
    (dict(drop_fraction=1.5), ValueError, "initial"),
    (dict(distribution="normal"), ValueError, "distribution"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_bad_arguments(kwargs, exc, name):
    model = _mlp()
    with pytest.raises(exc, match=name):
        DynamicSparsity(model, **{"density": 0.3, "end_step": 10, **kwargs})
    assert not pk.get_masks(model)
    assert all(not m._forward_hooks for m in model.modules())


def test_refuses_a_masked_model():
    model = _mlp()
    pk.prune(model, 0.5)
    with pytest.raises(ValueError, match="already masked"):
        DynamicSparsity(model, 0.3, end_step=10)
