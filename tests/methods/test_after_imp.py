"""imp (prunekit.methods.after.imp): iterative magnitude pruning with rewinding.

Known answers: a train_fn that does nothing gives one-shot global magnitude's mask and the
weights at the call; exact counts round(s_k * N) per round on the `iterative` schedule; masks
nested across rounds; train_fn called `rounds` times; rewinding to a state_dict (dense or
masked form) and learning-rate rewinding (rewind=None); bad input leaves the model untouched.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.methods.after.imp import imp
from prunekit.schedules import iterative
from prunekit.train import train


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))


def _state(model):
    """Every parameter (by logical name, weight_orig read as weight) and buffer, masks left out."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("_mask"):
            continue
        out[k.removesuffix("_orig")] = v.clone()
    return out


def _perturb(model, seed):
    """A stand-in for training: change every parameter and every float buffer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if b.is_floating_point() and not name.endswith("_mask"):
                b.add_(torch.rand(b.shape, generator=g))
            elif not b.is_floating_point() and not name.endswith("_mask"):
                b.add_(7)


class Spy:
    """A train_fn that records the masks it sees, then (optionally) perturbs the weights."""

    def __init__(self, perturb=True):
        self.seen, self.calls, self.perturb = [], 0, perturb

    def __call__(self, model):
        self.seen.append({k: v.clone() for k, v in pk.get_masks(model).items()})
        self.calls += 1
        if self.perturb:
            _perturb(model, seed=100 + self.calls)


def _pruned(masks):
    return sum(int((~m).sum()) for m in masks.values())


@pytest.mark.parametrize("rounds", [1, 3, 5])
def test_a_train_fn_that_does_nothing_gives_one_shot_global_magnitude_and_the_initial_weights(rounds):
    model = tiny_cnn()
    ref = copy.deepcopy(model)
    init = _state(model)
    masks = imp(model, lambda m: None, final_sparsity=0.9, rounds=rounds)
    one_shot = pk.prune(ref, 0.9, "magnitude", scope="global")
    assert masks.keys() == one_shot.keys()
    for k in masks:
        assert torch.equal(masks[k], one_shot[k]), k
        assert torch.equal(pk.get_masks(model)[k], masks[k])
    now = _state(model)
    assert now.keys() == init.keys()
    for k in init:
        assert torch.equal(now[k], init[k]), k


def test_every_parameter_and_buffer_is_rewound_to_the_call_and_the_ticket_is_init_times_mask():
    model = tiny_cnn()
    init = _state(model)
    spy = Spy()
    masks = imp(model, spy, final_sparsity=0.8, rounds=3)
    now = _state(model)
    for k in init:  # weights, biases, BatchNorm affine and running statistics, num_batches_tracked
        assert torch.equal(now[k], init[k]), k
    for name, m in masks.items():
        module, attr = model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
        assert torch.equal(getattr(module, attr), init[name] * m)  # the effective weight


def test_train_fn_is_called_rounds_times_and_the_masks_are_nested_with_exact_counts():
    model = _mlp()
    spy = Spy()
    masks = imp(model, spy, final_sparsity=0.95, rounds=4)
    assert spy.calls == 4
    total = sum(m.numel() for m in masks.values())
    assert spy.seen[0] == {}  # the first round trains the dense model
    after = spy.seen[1:] + [masks]  # the masks after rounds 1..4
    for s_k, m in zip(iterative(0.95, 4), after):
        assert _pruned(m) == round(s_k * total)
    for earlier, later in zip(after, after[1:]):
        for k in later:
            assert not (later[k] & ~earlier[k]).any(), k  # pruned once, pruned for good


def test_layer_scope_prunes_each_tensor_by_the_schedule():
    model = _mlp()
    spy = Spy()
    masks = imp(model, spy, final_sparsity=0.75, rounds=2, scope="layer")
    for s_k, m in zip(iterative(0.75, 2), spy.seen[1:] + [masks]):
        for k, mk in m.items():
            assert int((~mk).sum()) == round(s_k * mk.numel()), k


def test_rounds_are_scored_on_the_trained_weights():
    model = _mlp()
    def train_fn(m):  # "training" makes the first row of every weight the largest
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith("weight"):
                    p[0].fill_(1e3)

    masks = imp(model, train_fn, final_sparsity=0.5, rounds=1, scope="layer")
    for k, m in masks.items():
        assert m[0].all(), k  # kept, although they were random at the call


def test_rewind_to_a_state_dict_saved_at_step_k():
    model = tiny_cnn()
    _perturb(model, seed=7)  # "k steps of training"
    at_k = copy.deepcopy(model.state_dict())
    _perturb(model, seed=8)  # the rest of training, before the call
    masks = imp(model, Spy(), final_sparsity=0.6, rounds=2, rewind=at_k)
    now = _state(model)
    for k, v in at_k.items():
        assert torch.equal(now[k], v), k
    assert _pruned(masks) == round(0.6 * sum(m.numel() for m in masks.values()))


def test_rewind_accepts_a_state_dict_in_masked_form_and_ignores_its_masks():
    src = _mlp()
    pk.prune(src, 0.5)  # weight_orig / weight_mask keys
    _perturb(src, seed=3)
    saved = copy.deepcopy(src.state_dict())
    model = _mlp(seed=1)
    imp(model, Spy(), final_sparsity=0.3, rounds=1, rewind=saved)
    now = _state(model)
    for k, v in _state(src).items():
        assert torch.equal(now[k], v), k


def test_learning_rate_rewinding_keeps_the_trained_weights():
    model = _mlp()
    spy = Spy()
    snapshots = []

    def train_fn(m):
        spy(m)
        snapshots.append(_state(m))

    masks = imp(model, train_fn, final_sparsity=0.5, rounds=3, rewind=None)
    assert spy.calls == 3
    now = _state(model)
    for k in now:  # nothing rewound: the weights are those of the last training, masked
        assert torch.equal(now[k], snapshots[-1][k]), k
    ref = copy.deepcopy(model)
    pk.remove_masks(ref)
    for k, m in masks.items():
        assert torch.equal(ref.get_parameter(k), snapshots[-1][k] * m)


def test_with_real_training_the_ticket_is_the_initial_weights_under_the_final_mask():
    model = _mlp()
    init = _state(model)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
    calls = []

    def train_fn(m):
        calls.append(1)
        train(m, data, epochs=1, progress=False)

    masks = imp(model, train_fn, final_sparsity=0.9, rounds=2)
    assert len(calls) == 2
    assert _pruned(masks) == round(0.9 * sum(m.numel() for m in masks.values()))
    now = _state(model)
    for k in init:
        assert torch.equal(now[k], init[k]), k


def test_weights_masked_before_the_call_stay_masked():
    model = _mlp()
    before = pk.prune(model, 0.5, "random", scope="layer", seed=3)
    masks = imp(model, Spy(), final_sparsity=0.7, rounds=2)
    for k in before:
        assert not (masks[k] & ~before[k]).any(), k
    assert _pruned(masks) == round(0.7 * sum(m.numel() for m in masks.values()))


def _never(model):  # pragma: no cover - must not run
    raise AssertionError("train_fn ran on bad input")


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(final_sparsity=1.0, rounds=2), ValueError, "final_sparsity"),
    (dict(final_sparsity=-0.1, rounds=2), ValueError, "final_sparsity"),
    (dict(final_sparsity="0.5", rounds=2), TypeError, "final_sparsity"),
    (dict(final_sparsity=0.5, rounds=0), ValueError, "rounds"),
    (dict(final_sparsity=0.5, rounds=1.5), TypeError, "rounds"),
    (dict(final_sparsity=0.5, rounds=2, rewind="start"), ValueError, "rewind"),
    (dict(final_sparsity=0.5, rounds=2, rewind=3), TypeError, "rewind"),
    (dict(final_sparsity=0.5, rounds=2, rewind={"0.weight": torch.zeros(24, 12)}), ValueError, "rewind"),
    (dict(final_sparsity=0.5, rounds=2, criterion="snip"), ValueError, "snip"),
    (dict(final_sparsity=0.5, rounds=2, criterion="fpgm"), ValueError, "fpgm"),
    (dict(final_sparsity=0.5, rounds=2, criterion="nope"), ValueError, "criterion"),
    (dict(final_sparsity=0.5, rounds=2, scope="net"), ValueError, "scope"),
    (dict(final_sparsity=0.5, rounds=2, include="nope.*"), ValueError, "include"),
    (dict(final_sparsity=0.5, rounds=2, exclude=["0.weight", "2.weight", "4.weight"]), ValueError, "nothing to prune"),
])
def test_bad_input_is_refused_before_train_fn_runs_and_the_model_is_untouched(kwargs, exc, word):
    model = _mlp()
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        imp(model, _never, **kwargs)
    assert_untouched(model, snap)


def test_bad_rewind_state_dicts_name_the_entry():
    model = _mlp()
    good = copy.deepcopy(model.state_dict())
    snap = snapshot(model)
    wrong_shape = {**good, "2.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match=r"rewind\['2.weight'\].*shape"):
        imp(model, _never, final_sparsity=0.5, rounds=1, rewind=wrong_shape)
    with pytest.raises(TypeError, match=r"rewind\['2.bias'\]"):
        imp(model, _never, final_sparsity=0.5, rounds=1, rewind={**good, "2.bias": [0.0] * 16})
    with pytest.raises(ValueError, match="not parameters or buffers"):
        imp(model, _never, final_sparsity=0.5, rounds=1, rewind={**good, "extra": torch.zeros(1)})
    missing = {k: v for k, v in good.items() if k != "4.bias"}
    with pytest.raises(ValueError, match="4.bias"):
        imp(model, _never, final_sparsity=0.5, rounds=1, rewind=missing)
    assert_untouched(model, snap)


def test_train_fn_must_be_callable_and_model_a_module():
    model = _mlp()
    with pytest.raises(TypeError, match="train_fn"):
        imp(model, "train", final_sparsity=0.5, rounds=2)
    with pytest.raises(TypeError, match="model"):
        imp(model.state_dict(), _never, final_sparsity=0.5, rounds=2)
