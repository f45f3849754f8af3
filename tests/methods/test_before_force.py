"""prune_force (prunekit.methods.before.force): FORCE and Iterative SNIP (de Jorge et al. 2021).

Known answers: the exact final count; iterations=1 is SNIP's mask; the kept fraction follows
density**(t/T); the masks equal a slow reference that re-scores a masked copy of the network
(the authors' procedure); Iterative SNIP's masks are nested; bad input leaves the model untouched.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
import prunekit.methods.before.force as force_mod
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.methods.before.force import prune_force


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n=2, shape=(12,), classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, *shape, generator=g), torch.randint(0, classes, (16,), generator=g)) for _ in range(n)]


def _img_data(n=2):
    return _data(n, shape=(3, 8, 8), classes=10)


def _pruned(masks):
    return sum(int((~m).sum()) for m in masks.values())


def _reference(model, data, sparsity, iterations, revive):
    """The procedure written out slowly: a fresh copy of the dense network with its weights
    multiplied by the current mask, gradients accumulated by backward(), |w0 * g| ranked by
    pk.make_masks (global)."""
    names = [n for n, _ in model.named_parameters() if n.endswith("weight") and model.get_submodule(
        n.rpartition(".")[0]).__class__ in (nn.Linear, nn.Conv2d)]
    w0 = {n: model.get_parameter(n).detach().clone() for n in names}
    keep = {n: torch.ones_like(w, dtype=torch.bool) for n, w in w0.items()}
    for t in range(1, iterations + 1):
        net = copy.deepcopy(model).eval()
        with torch.no_grad():
            for n in names:
                net.get_parameter(n).mul_(keep[n])
        net.zero_grad()
        for x, y in data:
            nn.functional.cross_entropy(net(x), y).backward()
        scores = {n: (w0[n] * net.get_parameter(n).grad).abs() for n in names}
        if not revive:
            scores = {n: s.masked_fill(~keep[n], float("-inf")) for n, s in scores.items()}
        keep = pk.make_masks(scores, 1 - (1 - sparsity) ** (t / iterations))
    return keep


@pytest.mark.parametrize("sparsity, iterations, scope", [(0.9, 5, "global"), (0.99, 10, "global"),
                                                         (0.5, 3, "layer"), (0.8, 1, "global")])
def test_the_final_count_is_exact(sparsity, iterations, scope):
    model = _mlp()
    masks = prune_force(model, _data(), sparsity, iterations=iterations, scope=scope)
    if scope == "global":
        assert _pruned(masks) == round(sparsity * sum(m.numel() for m in masks.values()))
    else:
        for k, m in masks.items():
            assert int((~m).sum()) == round(sparsity * m.numel()), k
    on_model = pk.get_masks(model)
    for k in masks:
        assert torch.equal(on_model[k], masks[k])


@pytest.mark.parametrize("make, data", [(_mlp, _data), (tiny_cnn, _img_data)])
@pytest.mark.parametrize("revive", [True, False])
def test_one_iteration_is_snip(make, data, revive):
    model, ref = make(), make()
    batches = data()
    masks = prune_force(model, batches, 0.8, iterations=1, revive=revive)
    snip = pk.prune(ref, 0.8, "snip", data=batches)
    assert masks.keys() == snip.keys()
    for k in masks:
        assert torch.equal(masks[k], snip[k]), k


@pytest.mark.parametrize("revive", [True, False])
def test_the_masks_equal_the_slow_reference(revive):
    model = _mlp()
    ref = _reference(copy.deepcopy(model), _data(), 0.95, 6, revive)
    masks = prune_force(model, _data(), 0.95, iterations=6, revive=revive)
    for k in ref:
        assert torch.equal(masks[k], ref[k]), k


def test_the_kept_fraction_follows_the_exponential_schedule_and_iter_snip_is_nested(monkeypatch):
    seen = []
    real = force_mod.make_masks

    def spy(scores, sparsity, **kw):
        out = real(scores, sparsity, **kw)
        seen.append((sparsity, {k: v.clone() for k, v in out.items()}))
        return out

    monkeypatch.setattr(force_mod, "make_masks", spy)
    model = _mlp()
    total = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    prune_force(model, _data(), 0.98, iterations=5, revive=False)
    assert [s for s, _ in seen] == pytest.approx([1 - 0.02 ** (t / 5) for t in range(1, 6)])
    for (s, m) in seen:
        assert total - _pruned(m) == total - round(s * total)  # kept: N * density**(t/T), rounded
    for (_, a), (_, b) in zip(seen, seen[1:]):
        for k in a:
            assert not (b[k] & ~a[k]).any(), k


def test_force_scores_pruned_weights_so_they_can_come_back(monkeypatch):
    seen = []
    real = force_mod.make_masks

    def spy(scores, sparsity, **kw):
        seen.append({k: v.clone() for k, v in scores.items()})
        return real(scores, sparsity, **kw)

    monkeypatch.setattr(force_mod, "make_masks", spy)
    prune_force(_mlp(), _data(), 0.9, iterations=4)
    assert all(torch.isfinite(s).all() for step in seen for s in step.values())


def test_the_model_is_only_masked():
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    prune_force(model, _img_data(), 0.7, iterations=3)
    assert model.training  # the mode is restored
    after = model.state_dict()
    for k, v in before.items():  # the dense weights (now weight_orig), BatchNorm statistics
        key = k + "_orig" if k + "_orig" in after else k
        assert torch.equal(after[key], v), k


def test_weights_masked_before_the_call_stay_masked_and_zero_sparsity_masks_nothing():
    model = _mlp()
    old = pk.prune(model, 0.5, "random", scope="layer", seed=2)
    masks = prune_force(model, _data(), 0.8, iterations=3)
    for k in old:
        assert not (masks[k] & ~old[k]).any(), k
    assert _pruned(masks) == round(0.8 * sum(m.numel() for m in masks.values()))
    fresh = _mlp()
    masks = prune_force(fresh, _data(), 0.0, iterations=3)
    assert _pruned(masks) == 0 and set(pk.get_masks(fresh)) == set(masks)


@pytest.mark.parametrize("args, kwargs, exc, word", [
    ((1.0,), dict(iterations=3), ValueError, "sparsity"),
    (("0.5",), dict(iterations=3), TypeError, "sparsity"),
    ((0.5,), dict(iterations=0), ValueError, "iterations"),
    ((0.5,), dict(iterations=2.0), TypeError, "iterations"),
    ((0.5,), dict(iterations=3, revive="yes"), TypeError, "revive"),
    ((0.5,), dict(iterations=3, scope="net"), ValueError, "scope"),
    ((0.5,), dict(iterations=3, batches=0), ValueError, "batches"),
    ((0.5,), dict(iterations=3, loss_fn="ce"), TypeError, "loss_fn"),
    ((0.5,), dict(iterations=3, include="nope.*"), ValueError, "include"),
])
def test_bad_arguments_leave_the_model_untouched(args, kwargs, exc, word):
    model = _mlp()
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        prune_force(model, _data(), *args, **kwargs)
    assert_untouched(model, snap)


@pytest.mark.parametrize("data, exc, word", [
    ([], ValueError, "no batches"),
    (3, TypeError, "data"),
    ([(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))], ValueError, "data"),   # wrong width
    ([(torch.randn(4, 12), torch.full((4,), 7))], ValueError, "loss"),               # bad labels
])
def test_bad_data_leaves_the_model_untouched(data, exc, word):
    model = _mlp()
    pk.prune(model, 0.3)  # also with masks already there
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        prune_force(model, data, 0.5, iterations=3)
    assert_untouched(model, snap)


def test_one_iteration_is_snip_on_a_model_already_masked():
    model, ref = _mlp(), _mlp()
    for m in (model, ref):
        pk.prune(m, 0.5, "random", seed=1)
    masks = prune_force(model, _data(), 0.8, iterations=1)
    snip = pk.prune(ref, 0.8, "snip", data=_data())
    for k in masks:
        assert torch.equal(masks[k], snip[k]), k
