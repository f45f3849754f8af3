"""Group-aware channel pruning: exact counts per coupled group, compact removes exactly them."""

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.structured.groups import prune_groups
from prunekit.core.graph.channels import plan_channels
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
    units, members = pk.structured.groups.group_scores(net, scores, X)
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


@pytest.mark.parametrize("name", ["resnet18", "regnet_y_400mf"])  # regnet: grouped convs (width 8) and SE
def test_same_widths_as_torch_pruning(name):
    torchvision = pytest.importorskip("torchvision")
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    theirs = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(theirs, x, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, global_pruning=False, ignored_layers=[theirs.fc])
    pruner.step()
    ours = copy.deepcopy(model)
    prune_groups(ours, 0.5, x, exclude="fc.weight")
    ours = pk.compact(ours, x)
    widths = lambda m: {n: (mod.weight.shape, getattr(mod, "groups", 1))  # noqa: E731
                        for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
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


@pytest.mark.parametrize("sparsity, round_to, widths, kept", [
    (0.5, 8, (8, 16, 24), {8: 8, 16: 8, 24: 16}),     # 8 - 4 -> 8, 16 - 8 -> 8, 24 - 12 = 12 -> 16
    (0.25, 4, (8, 16, 24), {8: 8, 16: 12, 24: 20}),   # 6 -> 8, 12 -> 12, 18 -> 20
    (0.75, 8, (4, 12, 24), {4: 4, 12: 8, 24: 8}),     # smaller than 8: kept whole; 3 -> 8; 6 -> 8
    (0.5, 1, (8, 16, 24), {8: 4, 16: 8, 24: 12}),     # round_to=1 changes nothing
])
def test_round_to_keeps_multiples(sparsity, round_to, widths, kept):
    torch.manual_seed(0)
    net = pk.models.ResNet(widths=widths, blocks_per_stage=2).eval()
    prune_groups(net, sparsity, X, exclude="fc.weight", round_to=round_to)
    plan = plan_channels(net, X)
    for g in plan.groups:
        if not g["fixed"]:
            assert len(g["kept"]) == kept[g["size"]], g["producers"]
    small = pk.compact(net, X)
    assert small.layer3[1].conv2.out_channels == small.fc.in_features == kept[widths[2]]
    torch.testing.assert_close(small(X), pk.zero_removed_channels(net, X)(X), rtol=1e-4, atol=1e-5)


def test_round_to_is_validated():
    net = resnet()
    snap = snapshot(net)
    for bad in (0, -8, 2.5, True, "8"):
        with pytest.raises(ValueError, match="round_to"):
            prune_groups(net, 0.5, X, exclude="fc.weight", round_to=bad)
    assert_untouched(net, snap)


def grouped_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3),
    ).eval()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_grouped_conv_groups_are_pruned_part_by_part(scope):
    net = grouped_net()
    x = torch.randn(2, 3, 6, 6)
    masks = prune_groups(net, 0.5, x, scope=scope, exclude="8.weight")
    rows = masks["3.weight"].reshape(12, -1).any(1).view(4, 3).sum(1).tolist()
    cols = masks["0.weight"].reshape(8, -1).any(1).view(4, 2).sum(1).tolist()
    assert len(set(rows)) == len(set(cols)) == 1  # every conv group keeps as many as the others
    if scope == "layer":
        assert rows == [2, 2, 2, 2] and cols == [1, 1, 1, 1]  # round(6 / 4) = 2 of 3; 4 / 4 = 1 of 2
    small = pk.compact(net, x)
    assert (small[3].in_channels, small[3].out_channels, small[3].groups) == (sum(cols), sum(rows), 4)
    assert pk.count_params(small) < pk.count_params(net)
    torch.testing.assert_close(small(x), pk.zero_removed_channels(net, x)(x), rtol=1e-4, atol=1e-5)


def test_grouped_conv_with_round_to():
    net = grouped_net()
    x = torch.randn(2, 3, 6, 6)
    prune_groups(net, 0.5, x, exclude="8.weight", round_to=8)  # lcm(8, 4) = 8: 12 -> 8 (2 per group)
    small = pk.compact(net, x)
    assert (small[3].in_channels, small[3].out_channels) == (8, 8)  # 8 channels: kept whole


class Shuffle(nn.Module):
    """Two convs concatenated and channel-shuffled: the shuffle ties a[j] to b[j]."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(12, 2, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        n, c, h, w = y.shape
        return self.head(y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w))


def test_channels_tied_by_a_shuffle_are_pruned_together():
    torch.manual_seed(0)
    net = Shuffle().eval()
    x = torch.randn(2, 3, 4, 4)
    scores = pk.score(net, "magnitude", exclude="head.weight")
    masks = prune_groups(net, 0.5, x, exclude="head.weight")
    a, b = (masks[f"{n}.weight"].reshape(6, -1).any(1) for n in "ab")
    assert torch.equal(a, b) and int(a.sum()) == 3  # 3 of the 6 tie classes {a[j], b[j]} go
    class_score = (scores["a.weight"].reshape(6, -1).norm(dim=1) + scores["b.weight"].reshape(6, -1).norm(dim=1)) / 2
    assert class_score[a].min() >= class_score[~a].max()  # the best classes (mean channel score) stay
    small = pk.compact(net, x)
    assert (small.a.out_channels, small.b.out_channels, small.head.in_channels) == (3, 3, 6)
    torch.testing.assert_close(small(x), pk.zero_removed_channels(net, x)(x), rtol=1e-4, atol=1e-5)


def test_shufflenet_masks_are_what_compact_removes():
    # ShuffleNetV2's chunk + shuffle tie almost every channel of a stage together and require
    # equal halves: the masks respect that, so compact removes exactly the masked channels
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5().eval()
    x = torch.randn(1, 3, 32, 32)
    masks = prune_groups(net, 0.5, x, exclude="fc.weight")
    plan = plan_channels(net, x)
    for g in plan.groups:
        for p in g["producers"]:
            if f"{p}.weight" in masks:
                rows = masks[f"{p}.weight"].reshape(g["size"], -1).any(1)
                assert torch.equal(rows.nonzero().flatten(), g["kept"]), p
    small = pk.compact(net, x)
    assert small.stage2[0].branch2[0].out_channels == net.stage2[0].branch2[0].out_channels // 2
    assert pk.count_params(small) < 0.7 * pk.count_params(net)


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head, self.aux = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 2, 1), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y[:, 1:4]) + self.aux(y)


def test_channels_pinned_by_a_constant_slice_are_not_pruned():
    torch.manual_seed(0)
    net = Sliced().eval()
    x = torch.randn(2, 3, 4, 4)
    masks = prune_groups(net, 0.5, x, exclude=["head.weight", "aux.weight"])
    rows = masks["conv.weight"].reshape(6, -1).any(1)
    assert rows[:4].all() and int(rows[4:].sum()) == 1  # channels 0..3 pinned; half of the other two go
    small = pk.compact(net, x)
    assert (small.conv.out_channels, small.head.in_channels, small.aux.in_channels) == (5, 3, 5)
    torch.testing.assert_close(small(x), pk.zero_removed_channels(net, x)(x), rtol=1e-4, atol=1e-5)
