"""GradualPruner: exact mask counts on the AGP schedule while training, nested masks, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.methods.during import GradualPruner
from prunekit.schedules import agp
from prunekit.train import train


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))


def _batches(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


class Recorder:
    """Runs the pruner, then records the masks after every step."""

    def __init__(self, pruner):
        self.pruner, self.masks, self.steps = pruner, [], []

    def __call__(self, info):
        self.pruner(info)
        self.steps.append(info.step)
        self.masks.append({n: m.clone() for n, m in pk.get_masks(info.model).items()})


WEIGHTS = {"0.weight": 12 * 24, "2.weight": 24 * 16, "4.weight": 16 * 3}
N = sum(WEIGHTS.values())
SCHEDULE = dict(final_sparsity=0.8, begin_step=2, end_step=14, frequency=3)


def _pruned(masks):
    return sum(int((~m).sum()) for m in masks.values())


def test_global_gmp_follows_agp_with_exact_counts_while_training():
    model = _mlp()
    pruner = GradualPruner(model, **SCHEDULE)
    rec = Recorder(pruner)
    train(model, _batches(), epochs=3, lr=1e-2, progress=False, callback=rec)  # 18 steps
    assert rec.steps == list(range(1, 19))
    for step, masks in zip(rec.steps, rec.masks):
        s = agp(step, **SCHEDULE)
        assert _pruned(masks) == (round(s * N) if s else 0), step
        if s:
            assert set(masks) == set(WEIGHTS)
    assert _pruned(rec.masks[-1]) == round(0.8 * N)
    # one update per change of the schedule: the update steps 5, 8, 11 and end_step 14
    assert pruner.history == [(t, agp(t, **SCHEDULE)) for t in (5, 8, 11, 14)]
    assert pruner.sparsity == 0.8
    # nested: once pruned, stays pruned
    for before, after in zip(rec.masks, rec.masks[1:]):
        for n in before:
            assert not torch.any(after[n] & ~before[n])
    # the masked weights are zero in the forward weights
    for name, m in pk.get_masks(model).items():
        w = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.all(w[~m] == 0)


def test_layer_scope_and_own_loop():
    model = _mlp()
    pruner = GradualPruner(model, final_sparsity=0.5, initial_sparsity=0.1, begin_step=0, end_step=4,
                           scope="layer", include=["0.weight", "2.weight"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batches(1)[0]
    for step in range(1, 7):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step()
        s = agp(step, final_sparsity=0.5, initial_sparsity=0.1, begin_step=0, end_step=4)
        masks = pk.get_masks(model)
        assert set(masks) == {"0.weight", "2.weight"}
        for n, m in masks.items():
            assert int((~m).sum()) == round(s * WEIGHTS[n]), (step, n)
    assert [t for t, _ in pruner.history] == [1, 2, 3, 4]


def test_channel_granularity():
    model = _mlp()
    pruner = GradualPruner(model, final_sparsity=0.5, begin_step=0, end_step=2, granularity="channel",
                           scope="layer", exclude="4.weight")
    for _ in range(3):
        pruner.step()
    for n, m in pk.get_masks(model).items():
        rows = m.reshape(m.shape[0], -1)
        assert torch.all(rows.all(1) | ~rows.any(1))           # whole output channels
        assert int((~rows.any(1)).sum()) == round(0.5 * m.shape[0])


def test_a_restarting_counter_never_unprunes():
    model = _mlp()
    pruner = GradualPruner(model, final_sparsity=0.6, begin_step=0, end_step=2)
    pruner.update(5)
    before = _pruned(pk.get_masks(model))
    assert not pruner.update(1)
    assert _pruned(pk.get_masks(model)) == before == round(0.6 * N)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(final_sparsity=1.0), ValueError, "final_sparsity"),
    (dict(end_step=2), ValueError, "end_step"),
    (dict(frequency=0), ValueError, "frequency"),
    (dict(initial_sparsity=0.9), ValueError, "initial_sparsity"),
    (dict(begin_step=1.0), TypeError, "begin_step"),
    (dict(criterion="nope"), ValueError, "criterion"),
    (dict(criterion=3), TypeError, "criterion"),
    (dict(criterion="taylor"), ValueError, "data"),
    (dict(granularity="2:4"), ValueError, "granularity.*final_sparsity=0.8"),
    (dict(granularity="pattern"), ValueError, "granularity"),
    (dict(scope="everywhere"), ValueError, "scope"),
    (dict(include=["nope.weight"]), ValueError, "nope"),
])
def test_bad_arguments_fail_at_construction_model_untouched(kwargs, exc, name):
    model = _mlp()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(exc, match=name):
        GradualPruner(model, **{**SCHEDULE, **kwargs})
    assert not pk.get_masks(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        GradualPruner("model", **SCHEDULE)


def test_pruner_is_a_train_callback_itself():
    model = _mlp(1)
    pruner = GradualPruner(model, final_sparsity=0.9, begin_step=0, end_step=10, frequency=2, scope="layer")
    train(model, _batches(), epochs=2, lr=1e-2, progress=False, callback=pruner)  # 12 steps
    masks = pk.get_masks(model)
    assert {n: int((~m).sum()) for n, m in masks.items()} == {n: round(0.9 * k) for n, k in WEIGHTS.items()}
    assert [t for t, _ in pruner.history] == [2, 4, 6, 8, 10]
