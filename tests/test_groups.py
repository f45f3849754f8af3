"""Group-aware channel pruning: exact counts per coupled group, compact removes exactly them."""

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.groups import prune_groups
from prunekit.surgery import plan_channels
from helpers import assert_untouched, snapshot


def resnet():
    torch.manual_seed(0)
    net = pk.models.ResNet(widths=(8, 16, 24), blocks_per_stage=2).eval()
    for m in net.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_every_group_loses_exactly_its_share_and_compact_removes_it(sparsity):
    net = resnet()
    dense_plan = plan_channels(net, X)
    masks = prune_groups(net, sparsity, X, exclude="fc.weight")
    plan = plan_channels(net, X)
    residual = 0
    for g0, g in zip(dense_plan.groups, plan.groups):
        if g["fixed"]:
            assert len(g["kept"]) == g["size"]
            continue
        assert len(g["kept"]) == g["size"] - min(round(sparsity * g["size"]), g["size"] - 1)
        producers_masks = [masks[f"{p}.weight"].reshape(g["size"], -1).any(1) for p in g["producers"]]
        assert all(torch.equal(m, producers_masks[0]) for m in producers_masks)  # one decision
        residual += len(g["producers"]) > 1
    assert residual == 3  # the three residual stages really were pruned as groups
    small = pk.compact(net, X)
    ref = pk.zero_removed_channels(net, X)
    torch.testing.assert_close(small(X), ref(X), rtol=1e-4, atol=1e-5)
    assert plan_channels(small, X).removed() == 0
    assert pk.count_macs(small, X)[0] < pk.count_macs(net, X)[0]


def test_groups_remove_more_than_layer_wise_channel_pruning():
    a, b = resnet(), resnet()
    prune_groups(a, 0.5, X, exclude="fc.weight")
    pk.prune(b, 0.5, granularity="channel", scope="layer", exclude="fc.weight")
    assert pk.count_params(pk.compact(a, X)) < pk.count_params(pk.compact(b, X))


def test_group_score_is_the_sum_of_member_scores():
    net = resnet()
    scores = pk.score(net, "magnitude", exclude="fc.weight")
    units, members = pk.groups.group_scores(net, scores, X)
    key = next(k for k, names in members.items() if len(names) == 3)  # stem + two residual convs
    expected = sum(scores[n].reshape(scores[n].shape[0], -1).norm(dim=1) for n in members[key])
    torch.testing.assert_close(units[key], expected)
    masks = prune_groups(net, 0.5, X, exclude="fc.weight")
    kept = masks[members[key][0]].reshape(expected.shape[0], -1).any(1)
    assert expected[kept].min() >= expected[~kept].max()   # the highest group scores stay


def test_cumulative_and_never_unprunes():
    net = resnet()
    first = prune_groups(net, 0.25, X, criterion="random", exclude="fc.weight")
    second = prune_groups(net, 0.5, X, criterion="random", seed=1, exclude="fc.weight")
    for n in first:
        assert not (second[n] & ~first[n]).any()
    for g in plan_channels(net, X).groups:
        if not g["fixed"]:
            assert len(g["kept"]) == g["size"] - round(0.5 * g["size"])


def test_same_widths_as_torch_pruning_on_resnet18():
    torchvision = pytest.importorskip("torchvision")
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    theirs = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(theirs, x, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, global_pruning=False, ignored_layers=[theirs.fc])
    pruner.step()
    ours = copy.deepcopy(model)
    prune_groups(ours, 0.5, x, exclude="fc.weight")
    ours = pk.compact(ours, x)
    widths = lambda m: {n: mod.weight.shape for n, mod in m.named_modules()  # noqa: E731
                        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
    assert widths(ours) == widths(theirs)
    assert pk.count_params(ours) == pk.count_params(theirs)


def test_bad_arguments_leave_the_model_untouched():
    net = resnet()
    snap = snapshot(net)
    for kwargs, exc, word in [
        ({"sparsity": 1.0}, ValueError, "sparsity"),
        ({"sparsity": 0.5, "scope": "local"}, ValueError, "scope"),
        ({"sparsity": 0.5, "criterion": "nope"}, ValueError, "criterion"),
        ({"sparsity": 0.5, "reduction": "max"}, ValueError, "reduction"),
        ({"sparsity": 0.5, "include": "fc.weight"}, ValueError, "no channel group"),
    ]:
        with pytest.raises(exc, match=word):
            prune_groups(net, example_inputs=X, **kwargs)
    with pytest.raises(TypeError, match="example_inputs"):
        prune_groups(net, 0.5, [1, 2])
    assert_untouched(net, snap)
