"""prunekit.core.graph: the queries that replace the three private fx walkers, and the trace cache."""

import pytest
import torch
from torch import fx, nn

import prunekit as pk
from prunekit.core.graph import (consumers, following, following_batchnorm, following_relu, next_layers,
                                 plan_channels, producers, trace)
from prunekit.core.graph import clear_cache
from prunekit.core.targets import find_targets

from helpers import assert_untouched, snapshot


class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 1), nn.Sigmoid(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


def test_following_batchnorm_traced_and_by_module_order():
    model = net()
    bns = following_batchnorm(model, find_targets(model))
    assert bns == {"0.weight": model[1], "3.weight": None, "7.weight": model[8], "10.weight": None}
    untraceable = Branchy()
    assert following_batchnorm(untraceable, find_targets(untraceable))["conv.weight"] is untraceable.bn


def test_following_relu_and_following():
    model = net()
    assert following_relu(model, {"a": model[1], "b": model[3]}) == {"a": model[2], "b": model[3]}
    assert following(model, "0", nn.BatchNorm2d) is model[1]
    assert following(model, "3", nn.ReLU) is None
    assert following(Branchy(), "conv", nn.BatchNorm2d) is False  # untraceable
    assert following_relu(Branchy(), {"a": Branchy().conv})["a"] is not None


def test_next_layers_follows_per_channel_operations():
    model = net()
    # conv 0 -> bn -> relu -> conv 3; conv 3 -> sigmoid -> pool -> flatten -> linear 7; 7 -> bn1d -> relu -> 10
    assert next_layers(model) == {"0.weight": "3", "3.weight": "7", "7.weight": "10", "10.weight": None}
    assert next_layers(Branchy()) == {"conv.weight": None, "fc.weight": None}


def test_producers_and_consumers():
    model = net()
    assert producers(model, "1") == ["0"] and consumers(model, "0") == ["1"]
    assert consumers(model, "10") == [] and producers(Branchy(), "bn") == []


def test_one_trace_per_model_and_input_shape_shared_by_prune_and_compact(monkeypatch):
    calls = []
    real = fx.symbolic_trace
    monkeypatch.setattr(fx, "symbolic_trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = pk.models.ResNet(widths=(4, 8)).eval()
    x = torch.randn(1, 3, 16, 16)
    pk.prune(model, 0.5, criterion="magnitude", granularity="channel", scope="layer", example_inputs=x,
             exclude="fc.weight")
    small = pk.compact(model, x)
    assert len(calls) == 1  # masks on leaf layers do not change the graph: the trace is reused
    assert small.layer1[0].conv1.out_channels == 2
    trace(model, torch.randn(2, 3, 16, 16))  # another input shape: traced again
    assert len(calls) == 2
    model.fc = nn.Linear(8, 3)  # another module: traced again
    plan_channels(model, x)
    assert len(calls) == 3


def test_trace_is_mode_preserving_and_read_only():
    model = net().train()
    x = torch.randn(2, 3, 4, 4)
    snap = snapshot(model)
    t = trace(model, x)
    assert_untouched(model, snap)
    assert model.training and all(m.training for m in model.modules())
    assert t.modules["0"] is model[0]
    clear_cache()
    assert trace(model, x) is not t


def test_trace_errors_name_the_argument():
    with pytest.raises(ValueError, match="example_inputs does not fit"):
        trace(net(), torch.randn(2, 5, 4, 4))
    with pytest.raises(TypeError, match="symbolic_trace cannot trace"):
        trace(Branchy(), torch.randn(1, 3, 2, 2))


def test_changing_a_layers_hyperparameters_invalidates_the_cached_trace():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(1, 3, 6, 6)
    first = trace(model, x)
    assert trace(model, x) is first
    model[0].padding = (1, 1)  # the same modules and parameters, another conv output shape
    second = trace(model, x)
    assert second is not first
    conv = lambda t: next(n for n in t.gm.graph.nodes if n.target == "0").meta["tensor_meta"].shape  # noqa: E731
    assert (conv(first)[-1], conv(second)[-1]) == (4, 6)
