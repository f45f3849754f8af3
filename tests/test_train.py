"""Tests for prunekit.train: determinism, learning on a tiny budget, evaluation, fine-tuning
of pruned models, callbacks, schedules and argument checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunekit import data, train
from prunekit.models import MLP, SmallCNN


@pytest.fixture(scope="module")
def digits():
    return data.digits(batch_size=64)


def _fresh_mlp(seed: int = 0) -> MLP:
    train.set_seed(seed)
    return MLP()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_set_seed_seeds_everything():
    train.set_seed(7)
    a = (random.random(), np.random.rand(), torch.rand(3))
    train.set_seed(7)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(TypeError, match="seed"):
        train.set_seed("7")


def test_train_is_deterministic_and_seed_dependent(digits):
    train_loader, _ = digits
    m1, m2, m3 = _fresh_mlp(), _fresh_mlp(), _fresh_mlp()
    assert _same_weights(m1, m2)
    h1 = train.train(m1, train_loader, epochs=1, seed=1, progress=False)
    for _ in train_loader:  # advance the loader's generator: train must not depend on it
        pass
    h2 = train.train(m2, train_loader, epochs=1, seed=1, progress=False)
    assert h1 == h2 and _same_weights(m1, m2)
    train.train(m3, train_loader, epochs=1, seed=2, progress=False)
    assert not _same_weights(m1, m3)


def test_mlp_learns_digits_quickly(digits):
    train_loader, test_loader = digits
    model = _fresh_mlp()
    history = train.train(model, train_loader, epochs=3, lr=3e-3, progress=False,
                          test_loader=test_loader)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "acc", "test_acc"}
    assert history[-1]["loss"] < history[0]["loss"]
    acc = train.evaluate(model, test_loader)
    assert acc == history[-1]["test_acc"]
    assert acc > 0.85  # chance is 0.1
    assert not model.training  # left in eval mode


def test_cnn_learns_shapes_on_a_tiny_budget():
    train_loader, test_loader = data.shapes(n_train=1500, n_test=200, batch_size=32)
    train.set_seed(0)
    model = SmallCNN(widths=(8, 16, 32))
    before = train.evaluate(model, test_loader)
    train.train(model, train_loader, epochs=3, lr=3e-3, progress=False, lr_schedule="cosine")
    after = train.evaluate(model, test_loader)
    assert after > 0.4 and after > before + 0.2  # chance is 0.1


def test_evaluate_matches_manual_computation(digits):
    _, test_loader = digits
    model = _fresh_mlp().train()
    metrics = train.evaluate_metrics(model, test_loader)
    assert model.training  # mode restored
    xs, ys = zip(*test_loader)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        logits = model(x)
    assert metrics["n"] == len(y) == 450
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert metrics["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    assert train.evaluate(model, test_loader) == metrics["accuracy"]
    assert train.evaluate_loss(model, test_loader) == metrics["loss"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # any iterable of (inputs, targets) works, e.g. a list of tuples
    assert train.evaluate(model, [(x[:10], y[:10])]) == pytest.approx(
        float((logits[:10].argmax(1) == y[:10]).float().mean()))


def test_fine_tune_keeps_pruned_weights_at_zero(digits):
    train_loader, test_loader = digits
    model = _fresh_mlp()
    train.train(model, train_loader, epochs=2, lr=3e-3, progress=False)
    dense_acc = train.evaluate(model, test_loader)
    for layer in (model.fc1, model.fc2, model.fc3):
        prune.l1_unstructured(layer, "weight", amount=0.9)
    masks = {n: getattr(model, n).weight_mask.clone() for n in ("fc1", "fc2", "fc3")}
    orig_before = model.fc1.weight_orig.detach().clone()
    pruned_acc = train.evaluate(model, test_loader)
    n_batches = len(train_loader)
    losses = train.fine_tune(model, train_loader, steps=n_batches + 10, lr=1e-3)  # wraps around
    assert len(losses) == n_batches + 10
    for n, mask in masks.items():
        layer = getattr(model, n)
        assert torch.equal(layer.weight_mask, mask)
        assert torch.all(layer.weight[mask == 0] == 0)
        assert prune.is_pruned(model)
    assert not torch.equal(model.fc1.weight_orig, orig_before)  # it did train
    tuned_acc = train.evaluate(model, test_loader)
    assert tuned_acc > pruned_acc - 0.01 and tuned_acc > 0.5
    assert dense_acc > 0.8


def test_callback_regularizer_and_cosine_schedule(digits):
    train_loader, _ = digits
    seen = []
    model = _fresh_mlp()
    train.train(model, train_loader, epochs=2, progress=False, lr_schedule="cosine",
                callback=lambda info: seen.append((info.epoch, info.step, info.optimizer)))
    n = len(train_loader)
    assert [s[1] for s in seen] == list(range(1, 2 * n + 1))
    assert [s[0] for s in seen] == [0] * n + [1] * n
    assert seen[-1][2].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    def l1(m):
        return 1e-2 * sum(p.abs().sum() for p in m.parameters())

    plain, reg = _fresh_mlp(), _fresh_mlp()
    train.train(plain, train_loader, epochs=2, progress=False)
    train.train(reg, train_loader, epochs=2, progress=False, regularizer=l1)
    norm = lambda m: float(sum(p.detach().abs().sum() for p in m.parameters()))  # noqa: E731
    assert norm(reg) < 0.8 * norm(plain)


def test_sgd_and_weight_decay(digits):
    train_loader, test_loader = digits
    model = _fresh_mlp()
    train.train(model, train_loader, epochs=2, lr=0.05, optimizer="sgd", weight_decay=1e-4,
                progress=False)
    assert train.evaluate(model, test_loader) > 0.8
    opt = train.make_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW)


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 1.5}, TypeError, "epochs"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"seed": -3}, ValueError, "seed"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"lr_schedule": "step"}, ValueError, "lr_schedule"),
    ],
)
def test_train_bad_arguments(digits, kwargs, exc, name):
    model = _fresh_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(exc, match=name):
        train.train(model, digits[0], progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fine_tune_and_evaluate_bad_arguments(digits):
    with pytest.raises(ValueError, match="steps"):
        train.fine_tune(_fresh_mlp(), digits[0], steps=0)
    with pytest.raises(ValueError, match="no examples"):
        train.evaluate(_fresh_mlp(), [])
    with pytest.raises(ValueError, match="no batches"):
        train.train(_fresh_mlp(), [], progress=False)
    with pytest.raises(ValueError, match="no batches"):
        train.fine_tune(_fresh_mlp(), [], steps=3)


def test_progress_bar_runs(digits, capsys):
    train.train(_fresh_mlp(), digits[0], epochs=1, progress=True)
    assert "train" in capsys.readouterr().err


def test_fine_tune_is_train_with_steps(digits):
    """One loop: fine_tune's losses are train(steps=)'s, and the weights end equal."""
    loader = digits[0]
    a, b = _fresh_mlp(), _fresh_mlp()
    losses = train.fine_tune(a, loader, steps=len(loader) + 3, lr=2e-3, seed=4)
    seen = []
    history = train.train(b, loader, steps=len(loader) + 3, lr=2e-3, seed=4, progress=False,
                          callback=lambda info: seen.append((info.epoch, info.step, info.loss)))
    assert [s[2] for s in seen] == losses and _same_weights(a, b)
    assert [s[1] for s in seen] == list(range(1, len(loader) + 4))
    assert [s[0] for s in seen] == [0] * len(loader) + [1] * 3            # the pass over the loader
    assert [h["epoch"] for h in history] == [1, 2]                         # the second one partial
    assert history[1]["loss"] == pytest.approx(sum(losses[-3:]) / 3)


def test_param_groups_train_only_those_with_their_lr(digits):
    model = _fresh_mlp()
    frozen = model.fc1.weight.detach().clone()
    groups = [{"params": [model.fc2.weight, model.fc3.weight], "lr": 5e-3}, {"params": [model.fc3.bias], "lr": 1e-4}]
    lrs = []
    train.train(model, digits[0], steps=5, progress=False, param_groups=groups,
                callback=lambda info: lrs.append([g["lr"] for g in info.optimizer.param_groups]))
    assert torch.equal(model.fc1.weight, frozen)
    assert lrs == [[5e-3, 1e-4]] * 5
    with pytest.raises(TypeError, match="param_groups"):
        train.train(model, digits[0], steps=1, progress=False, param_groups={"params": []})
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]"):
        train.train(model, digits[0], steps=1, progress=False, param_groups=[{"params": [model.fc1.bias], "lr": -1}])
    with pytest.raises(ValueError, match="steps"):
        train.train(model, digits[0], steps=0, progress=False)


def test_seed_none_leaves_the_generators_to_the_caller(digits):
    """set_seed(s, loader) then train(seed=None) is train(seed=s); a random draw in between is kept."""
    loader = digits[0]
    a, b, c = _fresh_mlp(), _fresh_mlp(), _fresh_mlp()
    train.train(a, loader, steps=7, seed=3, progress=False)
    train.set_seed(3, loader)
    train.train(b, loader, steps=7, seed=None, progress=False)
    assert _same_weights(a, b)
    train.set_seed(3, loader)
    torch.rand(1)
    for _ in loader:                   # the loader's generator moves on: seed=None does not reset it
        break
    train.train(c, loader, steps=7, seed=None, progress=False)
    assert not _same_weights(a, c)


def test_a_stateful_regularizer_is_called_once_per_step_after_the_forward(digits):
    calls = []
    model = _fresh_mlp()
    model.register_forward_hook(lambda *a: calls.append("forward"))

    def reg(m):
        calls.append("reg")
        return torch.zeros(())

    train.train(model, digits[0], steps=3, progress=False, regularizer=reg)
    assert calls == ["forward", "reg"] * 3
