"""Run-time channel gating (FBS): k channels per input, executed MACs by hand, keep=1 equals the ungated model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.methods.runtime.gating import ChannelGate, executed_macs, gate_model, gated_channels, saliency_l1
from prunekit.models import SmallCNN


def _net(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 4, 3, padding=1, bias=False)] + ([nn.BatchNorm2d(4)] if bn else []) + [nn.ReLU()]
    layers += [nn.Conv2d(4, 6, 3, padding=1, bias=False)] + ([nn.BatchNorm2d(6)] if bn else []) + [nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)]
    return nn.Sequential(*layers)


def _x(n=5, seed=1):
    return torch.randn(n, 2, 5, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep, k", [(0.5, 3), (0.25, 2), (0.75, 4), (1.0, 6), (0.01, 1)])  # round(6·keep), >= 1
def test_gate_keeps_exactly_k_channels_per_input(keep, k):
    torch.manual_seed(0)
    gate = ChannelGate(nn.Conv2d(3, 6, 3), keep=keep, scale=False)
    with torch.no_grad():
        gate.predictor.weight.normal_(std=3.0)    # saliencies that differ between inputs
    x = torch.randn(8, 3, 6, 6) * torch.rand(8, 3, 1, 1) * 4
    y = gate(x)
    assert gate.k == k
    assert gate.last_mask.sum(dim=1).tolist() == [k] * 8
    nonzero = y.flatten(2).ne(0).any(dim=2)
    assert torch.equal(nonzero, gate.last_mask)   # exactly the k kept channels are non-zero
    if k < 6:
        assert len({tuple(r.tolist()) for r in gate.last_mask}) > 1   # the choice depends on the input


def test_winners_are_the_largest_saliencies_and_scale_multiplies():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3)
    gate = ChannelGate(conv, keep=0.5)
    with torch.no_grad():
        gate.predictor.weight.normal_()
    x = torch.randn(4, 3, 6, 6)
    y = gate(x)
    g = torch.relu(gate.predictor(x.abs().mean(dim=(2, 3))))
    assert torch.equal(gate.last_saliency, g)
    assert torch.equal(gate.last_mask, torch.zeros(4, 6, dtype=torch.bool).scatter_(1, g.topk(3, 1).indices, True))
    torch.testing.assert_close(y, conv(x) * (g * gate.last_mask)[:, :, None, None])


@pytest.mark.parametrize("bn", [False, True])
def test_keep_one_without_scaling_reproduces_the_ungated_model(bn):
    model = _net(bn=bn).eval()
    gated = gate_model(model, 1.0, scale=False).eval()
    x = _x()
    with torch.no_grad():
        assert torch.equal(gated(x), model(x))


def test_keep_one_with_scaling_multiplies_by_the_saliency():
    model = _net(bn=True).eval()
    gated = gate_model(model, 1.0).eval()
    x = _x()
    with torch.no_grad():
        gated(x)
        gate = gated[0]
        g = gate.last_saliency
        expected = torch.relu(model[1](model[0](x)) * g[:, :, None, None])
        torch.testing.assert_close(gate(x), expected)
    assert gate.last_mask.all()


def test_gate_model_structure_and_original_untouched():
    model = _net(bn=True)
    before = copy.deepcopy(model.state_dict())
    gated = gate_model(model, 0.5)
    assert isinstance(gated[0], ChannelGate) and isinstance(gated[3], ChannelGate)
    assert gated[0].bn is not None and isinstance(gated[0].act, nn.ReLU)
    assert all(isinstance(gated[i], nn.Identity) for i in (1, 2, 4, 5))
    assert not any(isinstance(m, ChannelGate) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    only = gate_model(model, 0.5, include="3")
    assert not isinstance(only[0], ChannelGate) and isinstance(only[3], ChannelGate)
    assert isinstance(gate_model(model, 0.5, exclude=["0"])[3], ChannelGate)


def test_executed_macs_by_hand_on_a_two_conv_net():
    # keep=0.5: conv1 keeps round(2)=2 of 4 channels, conv2 round(3)=3 of 6.
    gated = gate_model(_net(), 0.5)
    x = _x()
    per_input = (2 * 4            # predictor 1: Linear(2, 4) on mean|x|, 2 input channels (no gate before)
                 + 2 * 2 * 9 * 25  # conv1: 2 in x 2 computed out x 3x3 x 5x5
                 + 2 * 6           # predictor 2: Linear(4, 6) reads the 2 computed channels
                 + 2 * 3 * 9 * 25  # conv2: 2 in (the skipped 2 are not read) x 3 computed out
                 + 3 * 3)          # Linear(6, 3) reads the 3 computed channels
    assert per_input == 2279
    assert executed_macs(gated, x).tolist() == [per_input] * 5
    dense = 2 * 4 * 9 * 25 + 4 * 6 * 9 * 25 + 6 * 3
    assert executed_macs(_net(), x).tolist() == [dense] * 5 == [pk.count_macs(_net(), x[:1])[0]] * 5


def test_a_dead_relu_after_a_new_producer_is_not_credited_to_the_gate():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        net[4].weight.copy_(-torch.eye(4))     # -(pooled ReLU output) <= 0: every hidden unit is dead
        net[4].bias.zero_()
    gated = gate_model(net, 0.5)
    per_input = (2 * 4 + 2 * 2 * 9 * 25      # predictor, conv: 2 of 4 channels computed
                 + 2 * 4                     # Linear(4, 4) reads the 2 computed channels
                 + 4 * 3)                    # Linear(4, 3): its 4 inputs come from Linear(4, 4), all read
    assert executed_macs(gated, _x()).tolist() == [per_input] * 5


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU())
        self.after = nn.Sequential(nn.Conv2d(4, 2, 1, bias=False))

    def forward(self, x):
        return self.after(x + self.body(x))


def test_a_skipped_channel_refilled_by_a_residual_is_read():
    gated = gate_model(_Residual(), 0.5)     # body: 2 of 4 computed; after: 1 of 2
    x = torch.randn(3, 4, 5, 5)
    per_input = (4 * 4 + 4 * 2 * 9 * 25     # predictor, conv of body
                 + 4 * 2 + 4 * 1 * 1 * 25)  # x + body(x) has all 4 channels non-zero: all read
    assert executed_macs(gated, x).tolist() == [per_input] * 3


@pytest.mark.parametrize("scale", [True, False])
def test_executed_macs_at_keep_one_equal_count_macs(scale):
    gated = gate_model(_net(bn=True), 1.0, scale=scale)
    x = _x(3)
    assert executed_macs(gated, x).tolist() == [pk.count_macs(gated, x[i:i + 1])[0] for i in range(3)]


def test_executed_macs_on_small_cnn_vary_per_input_and_shrink():
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, widths=(8, 16), hidden=None).eval()
    gated = gate_model(model, 0.5).eval()
    for m in gated.modules():
        if isinstance(m, ChannelGate):
            with torch.no_grad():
                m.predictor.weight.normal_()
    x = torch.randn(6, 1, 8, 8)
    macs = executed_macs(gated, x)
    assert isinstance(gated.features[0], ChannelGate) and isinstance(gated.features[4], ChannelGate)
    assert set(gated_channels(gated)) == {"features.0", "features.4"}
    assert all(m.sum(1).tolist() == [g.k] * 6 for g, m in
               ((gated.features[0], gated_channels(gated)["features.0"]),
                (gated.features[4], gated_channels(gated)["features.4"])))
    assert (macs < pk.count_macs(model, x[:1])[0]).all()
    model.train()
    executed_macs(model, x)
    assert model.training                       # mode restored


def test_saliency_l1_is_a_differentiable_regulariser():
    gated = gate_model(_net(), 0.5)
    with pytest.raises(ValueError, match="forward"):
        saliency_l1(gated)
    gated(_x())
    loss = saliency_l1(gated)
    loss.backward()
    assert gated[0].predictor.weight.grad is not None and loss.item() > 0


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, float("nan")])
def test_bad_keep_is_a_value_error(keep):
    model = _net()
    with pytest.raises(ValueError, match="keep"):
        gate_model(model, keep)
    with pytest.raises(ValueError, match="keep"):
        ChannelGate(nn.Conv2d(2, 4, 3), keep=keep)


def test_other_bad_arguments():
    model = _net()
    with pytest.raises(TypeError, match="keep"):
        gate_model(model, "half")
    with pytest.raises(ValueError, match="include"):
        gate_model(model, 0.5, include="nope")
    with pytest.raises(TypeError, match="conv"):
        ChannelGate(nn.Linear(2, 3))
    with pytest.raises(TypeError, match="scale"):
        gate_model(model, 0.5, scale=1)

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="Sequential"):
        gate_model(Plain(), 0.5, include="conv")
    with pytest.raises(ValueError, match="no conv"):
        gate_model(Plain(), 0.5)


def test_gated_model_trains_with_the_lasso_regulariser():
    from prunekit.train import train
    gated = gate_model(_net(bn=True), 0.5)
    before = gated[0].predictor.weight.detach().clone()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 2, 5, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    history = train(gated, batches, epochs=1, progress=False, regularizer=lambda m: 1e-3 * saliency_l1(m))
    assert len(history) == 1 and not torch.equal(before, gated[0].predictor.weight.detach())
    assert gated_channels(gated)["0"].sum(1).eq(2).all()


def test_threshold_gate_varies_the_channels_and_macs_per_input():
    torch.manual_seed(0)
    gated = gate_model(_net(), 0.75, threshold=1.0)   # k = round(3) of 4, round(4.5) = 4 of 6
    for m in gated.modules():
        if isinstance(m, ChannelGate):
            with torch.no_grad():
                m.predictor.weight.normal_(std=2.0)
    x = torch.randn(16, 2, 5, 5) * torch.rand(16, 2, 1, 1) * 3
    macs = executed_macs(gated, x)
    g1, g2 = gated[0], gated[2]
    for gate in (g1, g2):
        s = gate.last_saliency
        top = torch.zeros_like(s, dtype=torch.bool).scatter_(1, s.topk(gate.k, 1).indices, True)
        expected = (top & (s > 1.0)).sum(1).clamp(min=1)
        assert torch.equal(gate.last_mask.sum(1), expected)
    c1, c2 = g1.last_mask.sum(1), g2.last_mask.sum(1)
    assert len(set(c1.tolist())) > 1 or len(set(c2.tolist())) > 1
    by_hand = 2 * 4 + 2 * c1 * 9 * 25 + c1 * 6 + c1 * c2 * 9 * 25 + c2 * 3
    assert macs.tolist() == by_hand.tolist()
    assert len(set(macs.tolist())) > 1
    with pytest.raises(ValueError, match="threshold"):
        gate_model(_net(), 0.5, threshold=float("nan"))
    with pytest.raises(TypeError, match="threshold"):
        ChannelGate(nn.Conv2d(2, 4, 3), threshold="high")
