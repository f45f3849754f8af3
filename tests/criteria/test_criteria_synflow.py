"""SynFlow: closed form on a linear chain, the conservation law, and the iterative schedule."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.criteria.synflow import prune_synflow
from prunekit.models import MLP, SmallCNN
from helpers import assert_untouched, snapshot


def test_synflow_on_a_linear_chain_is_the_closed_form():
    """y = W2 W1 x with |W|, x = 1, R = 1^T |W2| |W1| 1:
    dR/dW1 = (|W2|^T 1) 1^T and dR/dW2 = 1 (|W1| 1)^T, score = dR/dW * |W|."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    a1, a2 = model[0].weight.detach().abs(), model[1].weight.detach().abs()
    s = pk.score(model, "synflow", example_inputs=torch.randn(5, 4))
    torch.testing.assert_close(s["0.weight"], torch.outer(a2.sum(0), torch.ones(4)) * a1)
    torch.testing.assert_close(s["1.weight"], torch.outer(torch.ones(2), a1.sum(1)) * a2)
    # the input width is inferred for a Linear-first model
    torch.testing.assert_close(pk.score(model, "synflow")["0.weight"], s["0.weight"])


def test_synflow_conserves_flow_layer_by_layer_in_a_relu_mlp():
    """Tanaka et al. 2020: with positive inputs and |W| every ReLU is the identity and, without
    biases, every layer's score sum equals R = 1^T |W3| |W2| |W1| 1."""
    torch.manual_seed(1)
    model = MLP(16, (12, 8), 5)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    s = pk.score(model, "synflow")
    w = [model.fc1.weight.detach(), model.fc2.weight.detach(), model.fc3.weight.detach()]
    R = (w[2].abs() @ w[1].abs() @ w[0].abs()).sum()
    for v in s.values():
        assert float(v.sum()) == pytest.approx(float(R), rel=1e-5)


def test_synflow_is_not_magnitude_and_reads_effective_weights_of_a_masked_model():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    masks = pk.prune(model, 0.5)
    s = pk.score(model, "synflow")
    a1 = (model[0].weight_orig * masks["0.weight"]).detach().abs()
    a2 = (model[2].weight_orig * masks["2.weight"]).detach().abs()
    torch.testing.assert_close(s["0.weight"], torch.outer(a2.sum(0), torch.ones(4)) * a1)
    assert torch.all(s["2.weight"][~masks["2.weight"]] == 0)


def test_synflow_on_cnn_needs_example_inputs_and_uses_bn_in_eval_mode():
    torch.manual_seed(0)
    model = SmallCNN(widths=(4, 8), hidden=8).train()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="example_inputs"):
        pk.score(model, "synflow")
    with pytest.raises(TypeError, match="example_inputs"):
        pk.score(model, "synflow", example_inputs=[1, 2])
    s = pk.score(model, "synflow", example_inputs=torch.randn(2, 3, 8, 8))
    assert_untouched(model, snap)
    assert model.training
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in s.values())
    # eval-mode BN with fresh statistics is a per-channel scale 1/sqrt(1 + eps): the scores
    # equal those of the same net without BN, scaled by (1/sqrt(1+eps))^2 (two BN layers)
    plain = nn.Sequential(model.features[0], nn.ReLU(), nn.MaxPool2d(2), model.features[4], nn.ReLU(),
                          nn.MaxPool2d(2), *model.classifier)
    p = pk.score(plain, "synflow", example_inputs=torch.randn(2, 3, 8, 8))
    k = (1 / (1 + 1e-5)) ** 0.5
    pairs = {"features.0.weight": "0.weight", "features.4.weight": "3.weight",
             "classifier.2.weight": "8.weight", "classifier.4.weight": "10.weight"}
    for n, m in pairs.items():
        torch.testing.assert_close(s[n], p[m] * k ** 2, rtol=1e-5, atol=0)


def test_prune_synflow_reaches_the_sparsity_with_the_exponential_schedule(monkeypatch):
    torch.manual_seed(0)
    model = MLP(16, (32, 32), 4)
    seen = []
    import prunekit.pipeline as pruning
    real = pruning.make_masks

    def spy(scores, sparsity, **kw):
        seen.append(sparsity)
        return real(scores, sparsity, **kw)

    monkeypatch.setattr(pruning, "make_masks", spy)
    masks = prune_synflow(model, 0.9, iterations=4)
    assert seen == pytest.approx([1 - 0.1 ** (k / 4) for k in range(1, 5)])
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.9 * total)
    assert torch.equal(pk.get_masks(model)["fc1.weight"], masks["fc1.weight"])


def test_prune_synflow_one_iteration_is_one_shot_synflow():
    torch.manual_seed(0)
    a, b = MLP(16, (16,), 4), MLP(16, (16,), 4)
    b.load_state_dict(a.state_dict())
    ma = prune_synflow(a, 0.5, iterations=1)
    mb = pk.prune(b, 0.5, criterion="synflow")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)


def test_iterative_synflow_avoids_layer_collapse():
    """At extreme sparsity every layer keeps some weights (Tanaka et al.'s motivation)."""
    torch.manual_seed(0)
    model = MLP(64, (256, 16), 10)
    masks = prune_synflow(model, 0.995, iterations=20)
    assert all(int(m.sum()) > 0 for m in masks.values())


def test_prune_synflow_validates_before_touching_the_model():
    model = SmallCNN(widths=(4,), hidden=None)
    snap = snapshot(model)
    with pytest.raises(ValueError, match="sparsity"):
        prune_synflow(model, 1.0, example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="iterations"):
        prune_synflow(model, 0.5, iterations=0, example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="example_inputs"):
        prune_synflow(model, 0.5)
    assert_untouched(model, snap)
