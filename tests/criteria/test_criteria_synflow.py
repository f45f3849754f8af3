"""The SynFlow score: closed form on a linear chain and the conservation law (the iterative
procedure prune_synflow is tested in tests/methods/test_synflow_prune.py)."""

import pytest
import torch
from torch import nn

import prunekit as pk
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
