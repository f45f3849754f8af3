"""Learning to prune, part 1: sparsity penalties, Network Slimming, L0 gates, STE masks."""

import copy
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from torch import nn

import prunekit as pk
from prunekit.methods import (
    HC_HIGH, HC_LOW, HC_TEMPERATURE, HardConcreteGates, SearchSpace, STEChannelMasks, bn_l1_penalty,
    group_lasso_penalty, l1_penalty, network_slimming, train_l0_gates, train_ste_masks,
)
from prunekit.models import MLP, SmallCNN

from helpers import assert_untouched, snapshot


@pytest.fixture(scope="module")
def digits_flat():
    return pk.data.digits(flatten=True, batch_size=64)


@pytest.fixture(scope="module")
def digits_img():
    return pk.data.digits(batch_size=64)


@pytest.fixture(scope="module")
def trained_mlp(digits_flat):
    torch.manual_seed(0)
    model = MLP(64, (64, 32), 10)
    pk.train.train(model, digits_flat[0], epochs=5, lr=3e-3, progress=False, seed=0)
    return model


def cnn(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, widths=(8, 16, 16), hidden=None)


# --------------------------------------------------------------------------- penalties

def test_l1_penalty_equals_hand_computation():
    model = cnn()
    by_hand = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert torch.allclose(l1_penalty(model, 0.3), 0.3 * by_hand)
    only = l1_penalty(model, 1.0, include=["features.0.weight"])
    assert torch.allclose(only, model.features[0].weight.abs().sum())


def test_l1_penalty_reads_masked_weights():
    model = cnn()
    masks = pk.prune(model, 0.5)
    expected = sum((m.weight_orig * m.weight_mask).abs().sum() for m in model.modules() if hasattr(m, "weight_mask"))
    assert torch.allclose(l1_penalty(model, 1.0), expected)
    assert masks


def test_group_lasso_equals_hand_computation_and_has_finite_gradients():
    model = cnn()
    by_hand = sum(m.weight.reshape(m.weight.shape[0], -1).norm(dim=1).sum()
                  for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert torch.allclose(group_lasso_penalty(model, 0.2), 0.2 * by_hand)
    with torch.no_grad():
        model.features[0].weight[0].zero_()  # a zero group: subgradient 0, not NaN
    group_lasso_penalty(model, 1.0).backward()
    g = model.features[0].weight.grad
    assert torch.isfinite(g).all() and (g[0] == 0).all()
    w = model.features[0].weight[1]
    assert torch.allclose(g[1], w / w.norm())


def test_bn_l1_penalty_value_and_gradient_is_lambda_sign_gamma():
    model = cnn()
    with torch.no_grad():
        for bn in (model.features[1], model.features[5], model.features[9]):
            bn.weight.copy_(torch.randn(bn.weight.shape))
        model.features[1].weight[0] = 0.0
    bns = [model.features[1], model.features[5], model.features[9]]
    lam = 1e-3
    pen = bn_l1_penalty(model, lam)
    assert torch.allclose(pen, lam * sum(b.weight.abs().sum() for b in bns))
    pen.backward()
    for b in bns:
        assert torch.allclose(b.weight.grad, lam * torch.sign(b.weight))
    assert model.features[0].weight.grad is None


@pytest.mark.parametrize("penalty", [functools.partial(bn_l1_penalty, strength=0.5),
                                     functools.partial(l1_penalty, strength=1e-3),
                                     functools.partial(group_lasso_penalty, strength=1e-2)],
                         ids=["bn_l1", "l1", "group_lasso"])
def test_penalties_work_as_train_regularizer(digits_img, penalty):
    """The loss train() reports is the cross-entropy plus the penalty, on the first batch."""
    loader = digits_img[0]
    model = cnn()
    ref = copy.deepcopy(model).train()
    pk.train.set_seed(0, loader)
    x, y = next(iter(loader))
    with torch.no_grad():
        ce = float(nn.functional.cross_entropy(ref(x), y))
        expected = ce + float(penalty(ref))
    seen = []
    pk.train.train(model, loader, steps=1, seed=0, progress=False, regularizer=penalty,
                   callback=lambda info: seen.append(info.loss))
    assert seen == [pytest.approx(expected, rel=1e-5)] and expected > ce + 1e-3


def test_bn_l1_penalty_needs_batchnorm():
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_l1_penalty(MLP(), 1e-4)


# --------------------------------------------------------------------------- Network Slimming

def _train_with_useless_channels(loader, strength):
    """Block 2 of the CNN has 16 channels; the next conv never reads channels 8..15 (masked)."""
    model = cnn(1)
    keep_in = torch.ones(16, 16, 3, 3, dtype=torch.bool)
    keep_in[:, 8:] = False
    pk.apply_masks(model, {"features.8.weight": keep_in})
    pk.train.train(model, loader, epochs=4, lr=2e-2, progress=False, seed=0,
                   regularizer=lambda m: bn_l1_penalty(m, strength))
    return model.features[5].weight.detach().abs()


def test_slimming_penalty_drives_useless_gammas_to_zero(digits_img):
    gamma = _train_with_useless_channels(digits_img[0], 1e-3)
    useful, useless = gamma[:8], gamma[8:]
    assert useless.max() < 0.1 * useful.mean()
    control = _train_with_useless_channels(digits_img[0], 0.0)
    assert torch.allclose(control[8:], torch.ones(8))  # without the penalty nothing moves them


def test_network_slimming_recipe(digits_img):
    train_loader, test_loader = digits_img
    model = cnn(0)
    model, hist = network_slimming(model, train_loader, strength=1e-3, epochs=6, lr=1e-2, sparsity=0.4,
                                   finetune_steps=150, seed=0)
    masks = pk.get_masks(model)
    convs = ["features.0.weight", "features.4.weight", "features.8.weight"]
    kept = sum(int(masks[n].reshape(masks[n].shape[0], -1).any(1).sum()) for n in convs)
    assert kept == 24  # exactly 40 % of the 40 channels with a BatchNorm are removed
    assert hist["channel_sparsity"] == pytest.approx(0.4)
    assert "classifier.2.weight" not in masks  # no BatchNorm: never pruned
    # removed channels are dead: their BatchNorm scale and shift are masked too
    for conv, bn in (("features.4", "features.5"), ("features.8", "features.9")):
        gone = ~masks[conv + ".weight"].reshape(16, -1).any(1)
        assert (~masks[bn + ".weight"] == gone).all() and (~masks[bn + ".bias"] == gone).all()
    assert set(hist["gamma_before"]) == {"features.1", "features.5", "features.9"}
    assert all((g == 1).all() for g in hist["gamma_before"].values())  # BatchNorm's initial scale
    # the removed channels are those with the smallest |gamma| after sparsity training, across layers
    after = torch.cat([hist["gamma_after"][bn] for bn in ("features.1", "features.5", "features.9")])
    kept_all = torch.cat([masks[c].reshape(masks[c].shape[0], -1).any(1) for c in convs])
    assert after[~kept_all].max() <= after[kept_all].min()
    assert pk.train.evaluate(model, test_loader) > 0.85
    pk.remove_masks(model)
    assert pk.train.evaluate(model, test_loader) > 0.85


# --------------------------------------------------------------------------- L0 gates

@pytest.mark.parametrize("target", [0.5, 0.75])
def test_l0_gates_reach_target_sparsity(trained_mlp, digits_flat, target):
    model = copy.deepcopy(trained_mlp)
    gates, hist = train_l0_gates(model, digits_flat[0], target, steps=800, lr=0.05, seed=0)
    assert abs(hist["gate_sparsity"] - target) <= 0.02  # deterministic gates, before any rounding
    assert abs(gates.gate_sparsity() - target) <= 0.02
    acc_gated = pk.train.evaluate(model, digits_flat[1])
    assert acc_gated > 0.85
    masks = gates.apply()
    # folding z_hat into the weights and masking computes what the gated model computed
    assert pk.train.evaluate(model, digits_flat[1]) == pytest.approx(acc_gated, abs=1e-9)
    assert not any(m._forward_hooks for m in model.modules())
    assert set(masks) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}  # the output layer is not gated
    assert abs(gates.sparsity(gates.keep()) - target) <= 0.02


def test_l0_gate_formulas():
    model = MLP(8, (4,), 2)
    torch.manual_seed(0)
    gates = HardConcreteGates(model)
    la = gates.log_alpha("fc1.weight")
    with torch.no_grad():
        la.copy_(torch.tensor([-5.0, 0.0, 1.0, 5.0]))
    z = gates.deterministic()["fc1.weight"]
    expected = (torch.sigmoid(la.detach()) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(z, expected) and z[0] == 0 and z[3] == 1
    p = torch.sigmoid(la.detach() - (2 / 3) * torch.log(torch.tensor(0.1 / 1.1)))
    assert torch.allclose(gates.expected_l0(), p.sum())
    samples = torch.stack([gates.gate("fc1.weight", training=True).detach() for _ in range(4000)])
    assert samples.min() >= 0 and samples.max() <= 1
    assert torch.allclose((samples > 0).float().mean(0), p, atol=0.03)  # P(z > 0) matches E[L0]
    exact = gates.keep_exact(0.5)["fc1.weight"]
    assert exact.tolist() == [False, False, True, True]
    # the constants: temperature T = 2/3, stretch interval (l, r) = (-0.1, 1.1)
    assert (HC_TEMPERATURE, HC_LOW, HC_HIGH) == (2 / 3, -0.1, 1.1)
    assert (gates.temperature, gates.low, gates.high) == (HC_TEMPERATURE, HC_LOW, HC_HIGH)
    wide = HardConcreteGates(model, temperature=0.5, low=-0.5, high=1.5)
    with torch.no_grad():
        wide.log_alpha("fc1.weight").copy_(la.detach())
    assert torch.allclose(wide.deterministic()["fc1.weight"],
                          (torch.sigmoid(la.detach()) * 2.0 - 0.5).clamp(0, 1))
    p_wide = torch.sigmoid(la.detach() - 0.5 * torch.log(torch.tensor(0.5 / 1.5)))
    assert torch.allclose(wide.expected_l0(), p_wide.sum())
    for bad in (dict(low=0.1), dict(high=0.9), dict(temperature=0.0)):
        with pytest.raises(ValueError, match="low < 0 < 1 < high"):
            HardConcreteGates(model, **bad)


def test_l0_gates_with_a_mac_budget(digits_img):
    model = cnn()
    pk.train.train(model, digits_img[0], epochs=2, lr=1e-2, progress=False, seed=0)
    x = torch.zeros(1, 1, 8, 8)
    dense = pk.count_macs(model, x)[0]
    space = SearchSpace(model, x)
    gates, hist = train_l0_gates(model, digits_img[0], 0.5, steps=400, seed=0, constraint="macs",
                                 example_inputs=x)
    # the constrained quantity is the expected MAC fraction, and it reaches the budget
    kept = [float(c) for c in space.sizes]
    for i, p in enumerate(gates.prob_open().values()):
        kept[i] = float(p.detach().sum())
    assert hist["density"][-1] == pytest.approx(float(space.expected_macs(kept)) / space.total_macs,
                                                abs=1e-3)
    assert abs(hist["density"][-1] - 0.5) < 0.01
    assert set(hist) >= {"loss", "density", "mu1", "mu2", "gate_sparsity", "mac_fraction"}
    # mac_fraction is the MAC count of the deterministic mask, as pk.count_macs sees it
    gates.apply()
    small = pk.compact(model, x)
    assert hist["mac_fraction"] == pytest.approx(pk.count_macs(small, x)[0] / dense, abs=1e-12)
    assert abs(hist["mac_fraction"] - 0.5) < 0.1


def test_l0_gates_on_cnn_gate_after_batchnorm(digits_img):
    model = cnn()
    gates = HardConcreteGates(model).attach()
    assert gates.sites["features.0.weight"] is model.features[1]
    assert gates.hook_sites["features.0.weight"] is model.features[2]  # after the ReLU
    model.train()
    out = model(next(iter(digits_img[0]))[0])
    gates.expected_l0().backward(retain_graph=True)
    out.sum().backward()
    assert gates.log_alpha("features.4.weight").grad.abs().sum() > 0
    gates.detach_hooks()
    assert not any(m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- STE masks

def test_ste_mask_keeps_exact_count_and_scores_get_gradients(trained_mlp, digits_flat):
    model = copy.deepcopy(trained_mlp)
    ste = STEChannelMasks(model, 0.75).attach()
    model.train()
    x, y = next(iter(digits_flat[0]))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, n in (("fc1.weight", 64), ("fc2.weight", 32)):
        assert int(ste.keep()[name].sum()) == round(0.25 * n)
        g = ste.param(name).grad
        assert g is not None and (g != 0).sum() > n // 2  # pruned channels get gradients too (straight-through)
    ste.detach_hooks()


def test_train_ste_masks(trained_mlp, digits_flat):
    model = copy.deepcopy(trained_mlp)
    ste, hist = train_ste_masks(model, digits_flat[0], 0.5, steps=150, lr=0.01, seed=0, weight_lr=1e-3,
                                scope="global", apply=True)
    kept = sum(int(m.sum()) for n, m in hist["masks"].items() if n.endswith("bias"))
    assert kept == 48  # exactly half of the 96 gated channels
    assert pk.train.evaluate(model, digits_flat[1]) > 0.85
    assert pk.summary(model, torch.zeros(1, 64)) is not None


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("call, arg", [
    (lambda m, L: l1_penalty(m, -1.0), "strength"),
    (lambda m, L: group_lasso_penalty(m, -0.1), "strength"),
    (lambda m, L: bn_l1_penalty(m, float("nan")), "strength"),
    (lambda m, L: network_slimming(m, L, strength=-1e-4, epochs=1), "strength"),
    (lambda m, L: network_slimming(m, L, sparsity=1.0, epochs=1), "sparsity"),
    (lambda m, L: network_slimming(m, L, sparsity=-0.1, epochs=1), "sparsity"),
    (lambda m, L: network_slimming(m, L, epochs=0), "epochs"),
    (lambda m, L: network_slimming(m, L, finetune_steps=-1), "finetune_steps"),
    (lambda m, L: train_l0_gates(m, L, 1.0), "target_sparsity"),
    (lambda m, L: train_l0_gates(m, L, 0.5, steps=0), "steps"),
    (lambda m, L: train_l0_gates(m, L, 0.5, lr=-1.0), "lr"),
    (lambda m, L: train_l0_gates(m, L, 0.5, multiplier_lr=-1.0), "multiplier_lr"),
    (lambda m, L: train_l0_gates(m, L, 0.5, constraint="flops"), "constraint"),
    (lambda m, L: train_l0_gates(m, L, 0.5, constraint="macs"), "example_inputs"),
    (lambda m, L: train_ste_masks(m, L, 1.5), "sparsity"),
    (lambda m, L: train_ste_masks(m, L, 0.5, steps=-3), "steps"),
    (lambda m, L: STEChannelMasks(m, -0.2), "sparsity"),
])
def test_bad_arguments_raise_and_leave_model_untouched(digits_img, call, arg):
    model = cnn()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=arg):
        call(model, digits_img[0])
    assert_untouched(model, snap)
    assert not any(m._forward_hooks for m in model.modules())


def test_ste_scores_alone_learn_with_frozen_weights(trained_mlp, digits_flat):
    model = copy.deepcopy(trained_mlp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ste, hist = train_ste_masks(model, digits_flat[0], 0.5, steps=300, lr=1e-3, seed=0, init="random",
                                weight_lr=None)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights frozen
    assert sum(hist["flips"]) > 0  # the mask changed during training
    assert sum(hist["loss"][-20:]) < 0.8 * sum(hist["loss"][:20])
    ste.detach_hooks()


def test_l0_gates_on_cnn_apply_equals_gated_eval(digits_img):
    model = cnn()
    pk.train.train(model, digits_img[0], epochs=2, lr=1e-2, progress=False, seed=0)
    gates, hist = train_l0_gates(model, digits_img[0], 0.4, steps=150, seed=0)
    x = next(iter(digits_img[1]))[0]
    with torch.no_grad():
        gated = model(x)
    masks = gates.apply()
    assert "features.1.weight" in masks and "features.1.bias" in masks  # the BatchNorm after each conv
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)
    pk.remove_masks(model)
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=4), st.floats(0.0, 10.0), st.integers(0, 10_000))
def test_group_lasso_property(widths, strength, seed):
    torch.manual_seed(seed)
    model = MLP(widths[0], tuple(widths[1:-1]), widths[-1])
    by_hand = sum(torch.linalg.norm(m.weight, dim=1).sum() for m in model.modules() if isinstance(m, nn.Linear))
    assert torch.allclose(group_lasso_penalty(model, strength), strength * by_hand, rtol=1e-5, atol=1e-6)
    assert torch.allclose(l1_penalty(model, strength),
                          strength * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Linear)),
                          rtol=1e-5, atol=1e-6)


def test_group_lasso_channel_groups():
    model = cnn()
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    cols = sum(m.weight.transpose(0, 1).reshape(m.weight.shape[1], -1).norm(dim=1).sum() for m in convs)
    rows = sum(m.weight.reshape(m.weight.shape[0], -1).norm(dim=1).sum() for m in convs)
    assert torch.allclose(group_lasso_penalty(model, 0.5, groups="channels"), 0.5 * cols)
    assert torch.allclose(group_lasso_penalty(model, 0.5, groups="both"), 0.5 * (rows + cols))
    with pytest.raises(ValueError, match="groups"):
        group_lasso_penalty(model, 0.5, groups="rows")


def test_l0_keep_exact_gives_exact_channel_count(trained_mlp, digits_flat):
    model = copy.deepcopy(trained_mlp)
    gates, hist = train_l0_gates(model, digits_flat[0], 0.6, steps=800, seed=0)
    keep = gates.keep_exact(0.6)
    assert sum(int(k.sum()) for k in keep.values()) == 96 - round(0.6 * 96)
    masks = gates.apply(keep=keep)
    assert int(masks["fc1.bias"].sum() + masks["fc2.bias"].sum()) == 96 - round(0.6 * 96)
    assert pk.train.evaluate(model, digits_flat[1]) > 0.85


def test_apply_returns_the_masks_on_the_model_over_earlier_masks(trained_mlp, digits_flat):
    """train_ste_masks(apply=True) and train_l0_gates(apply=True) report the masks now applied."""
    for run in (lambda m: train_ste_masks(m, digits_flat[0], 0.5, steps=3, apply=True),
                lambda m: train_l0_gates(m, digits_flat[0], 0.5, steps=3, apply=True)):
        model = copy.deepcopy(trained_mlp)
        earlier = pk.prune(model, 0.3, "random", scope="layer")
        _, hist = run(model)
        on_model = pk.get_masks(model)
        assert {"fc1.weight", "fc2.weight"} <= set(hist["masks"]) and set(hist["masks"]) & set(earlier)
        for name, mask in hist["masks"].items():
            assert torch.equal(mask, on_model[name]), name
            if name in earlier:
                assert not (mask & ~earlier[name]).any(), name      # earlier pruning stays
