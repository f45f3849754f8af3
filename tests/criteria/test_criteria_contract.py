"""The contract every criterion keeps: registry fields, documented shapes on the book's models
(masked and unmasked), the model left untouched, effective weights, argument errors."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from prunekit.models import MLP, ResNet, SmallCNN
from helpers import flaky_cross_entropy

ALL = sorted(pk.criteria.available())
EXPECTED = {"magnitude", "random", "taylor", "taylor_channel", "snip", "grasp", "obd", "synflow", "movement",
            "l1_filter", "fpgm", "lamp", "apoz", "mean_activation", "hrank", "bn_scale", "loss_change"}
# weight-level criteria that multiply by the weight: a masked weight scores exactly 0
TIMES_W = {"magnitude", "lamp", "taylor", "snip", "grasp", "obd", "movement", "synflow"}


def make(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "cnn":
        model, shape = SmallCNN(widths=(4, 8), hidden=8), (4, 3, 8, 8)
    elif kind == "resnet":
        model, shape = ResNet(widths=(4, 8)), (4, 3, 8, 8)
    else:
        model, shape = MLP(64, (16,), 10), (4, 64)
    g = torch.Generator().manual_seed(seed + 1)
    data = [(torch.randn(shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g)) for _ in range(2)]
    return model, data


def kwargs_for(name, data):
    c = pk.criteria.available()[name]
    kw = {}
    if c.needs_data:
        kw["data"] = data
    if c.needs_inputs:
        kw["example_inputs"] = data[0][0]
    if name == "bn_scale":
        kw["missing"] = "skip"
    return kw


def full_snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": [n for n, _ in model.named_parameters()],
        "hooks": [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()],
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "attrs": [m.__dict__.get("weight") for m in model.modules()],
    }


def assert_same(model, snap):
    now = full_snapshot(model)
    assert now["params"] == snap["params"]
    assert now["hooks"] == snap["hooks"]
    assert now["modes"] == snap["modes"]
    assert now["requires_grad"] == snap["requires_grad"]
    for a, b in zip(now["grads"], snap["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(now["attrs"], snap["attrs"]):
        assert a is b  # a masked module's effective-weight attribute is the same object
    assert now["state"].keys() == snap["state"].keys()
    for k in snap["state"]:
        assert torch.equal(now["state"][k], snap["state"][k]), k


def dirty(model):
    """A model mid-training: train mode, some grads set, one layer frozen."""
    model.train()
    params = list(model.parameters())
    for p in params[::2]:
        p.grad = torch.randn_like(p)
    params[1].requires_grad_(False)
    return model


def test_registry_lists_every_criterion_with_its_needs():
    avail = pk.criteria.available()
    assert EXPECTED <= set(avail)
    for name, c in avail.items():
        assert c.name == name and c.description and c.reference
        assert c.level in ("weight", "channel")
        assert isinstance(c.needs_data, bool) and isinstance(c.needs_inputs, bool)
    assert avail["synflow"].needs_inputs and not avail["synflow"].needs_data
    assert {n for n, c in avail.items() if c.level == "channel"} == {
        "taylor_channel", "l1_filter", "fpgm", "apoz", "mean_activation", "hrank", "bn_scale", "loss_change",
        "thinet", "lasso_channel"}
    assert {n for n, c in avail.items() if c.needs_data} == {
        "taylor", "taylor_channel", "snip", "grasp", "obd", "movement", "apoz", "mean_activation", "hrank",
        "loss_change", "thinet", "lasso_channel", "obs"}


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("kind", ["cnn", "resnet", "mlp"])
@pytest.mark.parametrize("name", ALL)
def test_shape_and_untouched(name, kind, masked):
    model, data = make(kind)
    masks = pk.prune(model, 0.5) if masked else None
    dirty(model)
    snap = full_snapshot(model)
    crit = pk.criteria.available()[name]
    scores = pk.score(model, name, **kwargs_for(name, data))
    assert_same(model, snap)
    targets = pk.targets.find_targets(model)
    if name == "bn_scale":  # layers without a following BatchNorm are skipped: here, the non-convs
        targets = [t for t in targets if isinstance(t.module, nn.Conv2d)]
    assert list(scores) == [t.name for t in targets]
    for t in targets:
        s = scores[t.name]
        expected = tuple(t.shape) if crit.level == "weight" else (t.shape[0],)
        assert tuple(s.shape) == expected, (t.name, tuple(s.shape))
        assert s.is_floating_point() and not s.requires_grad
        assert torch.isfinite(s).all()
        if masked and name in TIMES_W:
            assert torch.all(s[~masks[t.name]] == 0), t.name


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("random", "grasp")])
def test_masked_model_is_scored_on_its_effective_weights(name):
    """A masked model scores like an unmasked copy whose pruned weights are zero (same forward,
    same gradients w.r.t. the effective weight)."""
    masked, data = make("cnn")
    masks = pk.prune(masked, 0.6)
    plain, _ = make("cnn")
    with torch.no_grad():
        for n, p in plain.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    a = pk.score(masked, name, **kwargs_for(name, data))
    b = pk.score(plain, name, **kwargs_for(name, data))
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, c in pk.criteria.available().items() if c.needs_data])
def test_data_driven_criteria_need_data(name):
    model, _ = make("mlp")
    snap = full_snapshot(model)
    with pytest.raises(ValueError, match=f"{name}.*needs data"):
        pk.score(model, name)
    with pytest.raises(ValueError, match="no batches"):
        pk.score(model, name, data=[])
    with pytest.raises(ValueError, match=r"\(inputs, targets\)"):
        pk.score(model, name, data=[(torch.randn(2, 64),)])
    assert_same(model, snap)


def test_train_mode_uses_batch_statistics_and_restores_running_stats():
    model, data = make("cnn")
    model.eval()
    snap = full_snapshot(model)
    ev = pk.score(model, "taylor", data=data)
    tr = pk.score(model, "taylor", data=data, mode="train")
    assert_same(model, snap)
    assert not torch.allclose(ev["features.0.weight"], tr["features.0.weight"])
    with pytest.raises(ValueError, match="mode"):
        pk.score(model, "taylor", data=data, mode="training")


def test_model_is_restored_when_a_criterion_fails_midway():
    model, data = make("cnn")
    dirty(model)
    snap = full_snapshot(model)
    with pytest.raises(ValueError, match="boom"):
        pk.score(model, "grasp", data=data, loss_fn=flaky_cross_entropy(fail_at=2), mode="train")
    assert_same(model, snap)
    pk.prune(model, 0.3)
    snap = full_snapshot(model)
    with pytest.raises(ValueError, match="boom"):
        pk.score(model, "loss_change", data=data, loss_fn=flaky_cross_entropy(fail_at=2))
    assert_same(model, snap)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"batches": 0}, ValueError, "batches"),
    ({"batches": "1"}, TypeError, "batches"),
    ({"batches": True}, TypeError, "batches"),
    ({"loss_fn": 3}, TypeError, "loss_fn"),
    ({"nope": 1}, TypeError, "nope"),
])
def test_bad_arguments(kwargs, exc, word):
    model, data = make("mlp")
    with pytest.raises(exc, match=word):
        pk.score(model, "snip", data=data, **kwargs)


def test_other_bad_arguments():
    model, data = make("cnn")
    with pytest.raises(ValueError, match="method"):
        pk.score(model, "fpgm", method="mean")
    with pytest.raises(ValueError, match="probes"):
        pk.score(model, "obd", data=data, hessian="hutchinson", probes=0)
    with pytest.raises(ValueError, match="temperature"):
        pk.score(model, "grasp", data=data, temperature=0)


def test_batches_limits_the_data_used():
    model, data = make("cnn")
    for name in ("taylor", "apoz", "loss_change"):
        a = pk.score(model, name, data=data, batches=1)
        b = pk.score(model, name, data=data[:1])
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_custom_loss_fn_is_used():
    model, data = make("mlp")
    a = pk.score(model, "snip", data=data)
    b = pk.score(model, "snip", data=data, loss_fn=lambda out, y: 3 * F.cross_entropy(out, y))
    for n in a:
        torch.testing.assert_close(b[n], 3 * a[n])


@pytest.mark.parametrize("name", [n for n, c in pk.criteria.available().items() if c.level == "weight"])
def test_prune_with_every_weight_level_criterion(name):
    model, data = make("mlp")
    kw = kwargs_for(name, data)
    masks = pk.prune(model, 0.5, criterion=name, **kw)
    assert pk.masks.sparsity_of(masks) == pytest.approx(0.5, abs=1e-3)
