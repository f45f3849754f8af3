"""pk.prune(..., granularity="channel", example_inputs=x): channel pruning by coupled groups."""

import pytest
import torch

import prunekit as pk
from prunekit.models import ResNet

from helpers import assert_untouched, snapshot


def test_prune_with_example_inputs_prunes_coupled_groups():
    """pk.prune(..., granularity="channel", example_inputs=x) is the group path: the same masks as
    prune_groups, and after compact every residual stage really lost half its channels."""
    x = torch.zeros(1, 3, 16, 16)
    a, b = ResNet(widths=(8, 16)), ResNet(widths=(8, 16))
    b.load_state_dict(a.state_dict())
    ma = pk.prune(a, 0.5, granularity="channel", scope="layer", example_inputs=x, exclude="fc.weight")
    mb = pk.prune_groups(b, 0.5, x, exclude="fc.weight")
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    small = pk.compact(a, x)
    assert small.layer1[0].conv2.out_channels == 4 and small.layer2[0].conv2.out_channels == 8


def test_prune_without_example_inputs_is_per_layer():
    """Without example_inputs each layer is pruned on its own: the residual stage keeps the union."""
    net = ResNet(widths=(8, 16))
    masks = pk.prune(net, 0.5, granularity="channel", scope="layer", exclude="fc.weight")
    for m in masks.values():
        assert int(m.reshape(m.shape[0], -1).any(1).sum()) == m.shape[0] // 2


def test_prune_with_example_inputs_rejects_a_sparsity_dict():
    net = ResNet(widths=(8, 16))
    snap = snapshot(net)
    with pytest.raises(ValueError, match="per-parameter sparsity dict"):
        pk.prune(net, {"conv1.weight": 0.5}, granularity="channel", example_inputs=torch.zeros(1, 3, 16, 16))
    assert_untouched(net, snap)
