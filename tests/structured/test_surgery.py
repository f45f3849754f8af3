"""compact(): channel masks -> a physically smaller model with the same outputs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torchvision
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.models import MLP, ResNet, SmallCNN
from prunekit.core.graph.channels import plan_channels
from prunekit.structured.compact import compact, zero_removed_channels

from helpers import assert_untouched, randomise_bn, snapshot, tiny_cnn


def channel_prune(model: nn.Module, sparsity: float = 0.5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    pk.prune(model, sparsity, criterion="random", granularity="channel", scope="layer")
    return model.eval()


def kept(module: nn.Module) -> int:
    """Output channels of a masked Conv/Linear whose row is not entirely masked."""
    m = module.weight_mask
    return int(m.reshape(m.shape[0], -1).any(dim=1).sum())


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def check_compact(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The common contract: untouched input, smaller, no masks, equal to the reference."""
    snap = snapshot(model)
    small = compact(model, x[:1])
    assert_untouched(model, snap)
    assert not torch_prune.is_pruned(small)
    assert type(small) is type(model)
    assert pk.count_params(small) < pk.count_params(model)
    assert pk.count_macs(small, x[:1])[0] < pk.count_macs(model, x[:1])[0]
    ref = zero_removed_channels(model, x[:1])
    assert_untouched(model, snap)
    assert max_diff(small, ref, x) <= 1e-4
    return small


def test_mlp_shapes_params_and_outputs():
    torch.manual_seed(0)
    model = channel_prune(MLP(64, (32, 16), 10))
    x = torch.randn(8, 64)
    small = check_compact(model, x)
    k1, k2 = kept(model.fc1), kept(model.fc2)
    assert (small.fc1.out_features, small.fc2.in_features, small.fc2.out_features) == (k1, k1, k2)
    assert (small.fc3.in_features, small.fc3.out_features) == (k2, 10)  # the classes stay
    assert pk.count_params(small) == (64 * k1 + k1) + (k1 * k2 + k2) + (k2 * 10 + 10)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 10)  # still flattens image input


def test_smallcnn_params_and_outputs_with_bn_shift():
    torch.manual_seed(0)
    model = channel_prune(randomise_bn(SmallCNN(3, 10, (8, 16, 16), hidden=12)), 0.4)
    x = torch.randn(4, 3, 16, 16)
    small = check_compact(model, x)
    f = model.features
    k = [3, kept(f[0]), kept(f[4]), kept(f[8])]
    kh = kept(model.classifier[2])
    expected = sum(k[i] * k[i + 1] * 9 + 2 * k[i + 1] for i in range(3)) + (k[3] * kh + kh) + (kh * 10 + 10)
    assert pk.count_params(small) == expected
    assert small.features[1].running_mean.shape == (k[1],)
    # The documented semantics: the removed channels' BatchNorm shift goes with them, so the
    # plain masked model (whose removed channels output BN's constant) differs from the compacted one.
    assert max_diff(small, model, x) > 1e-3


def test_equals_plain_masked_model_when_removed_channels_carry_nothing():
    # fresh BatchNorm (running_mean 0, beta 0) and no biases in front of removed channels:
    # the masked model already outputs zeros there, so compact equals it as it is
    torch.manual_seed(0)
    model = channel_prune(SmallCNN(3, 10, (8, 16), hidden=None))
    x = torch.randn(4, 3, 8, 8)
    small = compact(model, x[:1])
    assert pk.count_params(small) < pk.count_params(model)
    assert max_diff(small, model, x) <= 1e-4


def test_flatten_maps_a_channel_to_its_spatial_block():
    model = tiny_cnn()  # conv(3->8) bn relu conv(8->16, 3x3 out) relu flatten linear(144->10)
    model[4] = nn.Identity()  # no ReLU after conv2's bias: removed channels must still be exact
    channel_prune(model, 0.5)
    x = torch.randn(4, 3, 8, 8)
    small = check_compact(model, x)
    k1, k2 = kept(model[0]), kept(model[3])
    assert small[6].in_features == k2 * 9
    assert pk.count_params(small) == (3 * 9 * k1 + k1) + 2 * k1 + (k1 * 9 * k2 + k2) + (k2 * 9 * 10 + 10)


@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(1, 8), min_size=1, max_size=3), hidden=st.one_of(st.none(), st.integers(1, 8)),
       sparsity=st.floats(0.0, 0.9), seed=st.integers(0, 2**16))
def test_property_smallcnn_any_widths_and_sparsity(widths, hidden, sparsity, seed):
    torch.manual_seed(seed)
    model = channel_prune(randomise_bn(SmallCNN(2, 3, widths, hidden=hidden)), sparsity, seed)
    x = torch.randn(2, 2, 8, 8)
    small = compact(model, x[:1])
    assert max_diff(small, zero_removed_channels(model, x[:1]), x) <= 1e-4
    k = [2] + [kept(model.features[4 * i]) for i in range(len(widths))]
    expected = sum(k[i] * k[i + 1] * 9 + 2 * k[i + 1] for i in range(len(widths)))
    if hidden is None:
        expected += k[-1] * 3 + 3
    else:
        kh = kept(model.classifier[2])
        expected += (k[-1] * kh + kh) + (kh * 3 + 3)
    assert pk.count_params(small) == expected


def test_our_resnet_residual_groups_keep_the_union():
    torch.manual_seed(0)
    model = channel_prune(randomise_bn(ResNet(3, 10, (8, 16), blocks_per_stage=2)), 0.5)
    x = torch.randn(2, 3, 16, 16)
    check_compact(model, x)
    plan = plan_channels(model, x[:1])
    mods = dict(model.named_modules())
    stage1 = next(g for g in plan.groups if "conv1" in g["producers"])
    assert set(stage1["producers"]) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert {"bn1", "layer1.0.bn2", "layer1.1.bn2"} <= set(stage1["batchnorms"])
    stage2 = next(g for g in plan.groups if "layer2.0.downsample.0" in g["producers"])
    assert "layer2.0.conv2" in stage2["producers"] and "fc" in stage2["consumers"]
    for g in plan.groups:
        if g["fixed"]:
            assert len(g["kept"]) == g["size"]
            continue
        union = torch.zeros(g["size"], dtype=torch.bool)
        for p in g["producers"]:
            m = mods[p].weight_mask
            union |= m.reshape(m.shape[0], -1).any(dim=1)
        assert torch.equal(union.nonzero().flatten(), g["kept"]), g["producers"]


def test_residual_channel_removed_in_one_branch_only_is_kept():
    torch.manual_seed(0)
    model = randomise_bn(ResNet(3, 10, (8,), blocks_per_stage=1)).eval()
    masks = {"layer1.0.conv2.weight": torch.ones(8, 8, 3, 3, dtype=torch.bool)}
    masks["layer1.0.conv2.weight"][2] = False  # the residual branch drops channel 2, the stem keeps it
    masks["layer1.0.conv1.weight"] = torch.ones(8, 8, 3, 3, dtype=torch.bool)
    masks["layer1.0.conv1.weight"][[0, 5]] = False  # inside the block: free to go
    pk.apply_masks(model, masks)
    x = torch.randn(2, 3, 8, 8)
    small = compact(model, x[:1])
    assert small.layer1[0].conv2.out_channels == 8 and small.fc.in_features == 8
    assert small.layer1[0].conv1.out_channels == 6 and small.layer1[0].conv2.in_channels == 6
    assert max_diff(small, zero_removed_channels(model, x[:1]), x) <= 1e-4


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_small"])
def test_torchvision_models(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10)
    if name == "vgg11_bn":  # the 25088 -> 4096 -> 4096 head is 120M parameters: a small one keeps it fast
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(),
                                         nn.Linear(32, 10))
    channel_prune(randomise_bn(model), 0.4)
    check_compact(model, torch.randn(2, 3, 32, 32))


def test_depthwise_conv_follows_its_input_channels():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    randomise_bn(model).eval()
    pw = torch.ones(8, 3, 1, 1, dtype=torch.bool)
    dw = torch.ones(8, 1, 3, 3, dtype=torch.bool)
    pw[[1, 3, 6]] = False  # the pointwise conv removes channels 1, 3, 6 ...
    dw[[1, 2]] = False  # ... the depthwise conv follows; its own mask of channel 2 stays as zeros
    pk.apply_masks(model, {"0.weight": pw, "3.weight": dw})
    x = torch.randn(2, 3, 6, 6)
    small = compact(model, x[:1])
    assert small[0].out_channels == 5 and small[1].num_features == 5 and small[4].num_features == 5
    assert (small[3].in_channels, small[3].out_channels, small[3].groups) == (5, 5, 5)
    assert small[3].weight.shape == (5, 1, 3, 3) and small[6].in_channels == 5
    assert torch.equal(small[3].weight[1], torch.zeros(1, 3, 3))  # old channel 2
    assert max_diff(small, zero_removed_channels(model, x[:1]), x) <= 1e-4


class ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6, affine=False), nn.Linear(24, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.view(x.size(0), -1) * 0.5)


def test_functional_ops_view_and_non_affine_batchnorm():
    torch.manual_seed(0)
    model = ViewFlatten()
    with torch.no_grad():
        model.bn.running_mean.normal_()
    model.eval()
    _mask_first_rows(model, "conv.weight", [0, 4])
    x = torch.randn(3, 3, 4, 4)
    small = check_compact(model, x)
    assert small.conv.out_channels == 4 and small.bn.num_features == 4 and small.fc.in_features == 16


def test_plan_channels_leaves_the_model_alone():
    torch.manual_seed(0)
    model = channel_prune(MLP(16, (8,), 3)).train()
    model(torch.randn(2, 16))
    before = model.fc1.weight
    plan = plan_channels(model, torch.randn(1, 16))
    assert model.fc1.weight is before and before.requires_grad
    assert plan.removed() == 8 - kept(model.fc1)  # fc1's removed rows; the output layer is fixed


def test_unstructured_masks_stay_as_zeros():
    torch.manual_seed(0)
    model = MLP(16, (32,), 4)
    pk.prune(model, 0.5, granularity="unstructured", scope="layer")
    assert all(m.any(dim=1).all() for m in pk.get_masks(model).values())  # no whole row masked
    small = compact(model, torch.randn(1, 16))
    assert small.fc1.weight.shape == (32, 16)
    assert torch.equal(small.fc1.weight == 0, ~pk.get_masks(model)["fc1.weight"])
    x = torch.randn(5, 16)
    assert max_diff(small, model, x) == 0.0


@pytest.mark.parametrize("make", [lambda: MLP(16, (8,), 3), lambda: SmallCNN(3, 4, (4, 8))])
def test_model_without_masks_compacts_to_an_equal_copy(make):
    torch.manual_seed(0)
    model = randomise_bn(make()).eval()
    x = torch.randn(2, 16) if isinstance(model, MLP) else torch.randn(2, 3, 8, 8)
    small = compact(model, x[:1])
    assert small is not model
    assert small.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(small.state_dict()[k], v)
        assert small.state_dict()[k].data_ptr() != v.data_ptr()


def test_training_flag_and_grad_are_kept():
    torch.manual_seed(0)
    model = channel_prune(MLP(16, (8,), 3)).train()
    small = compact(model, torch.randn(1, 16))
    assert small.training and model.training
    small(torch.randn(2, 16)).sum().backward()
    assert small.fc1.weight.grad is not None


class SplitSizes(nn.Module):  # split with sizes given: the compacted model would split at the same sizes
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.head(torch.split(self.conv(x), [1, 3], dim=1)[0])


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(torch.roll(self.conv(x), 1, dims=1))


class Gated(nn.Module):  # squeeze-and-excitation style
    def __init__(self, spatial_gate: bool = False):
        super().__init__()
        self.spatial_gate = spatial_gate
        self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.squeeze, self.excite = nn.Conv2d(4, 3, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        g = y if self.spatial_gate else y.mean((2, 3), keepdim=True)
        g = torch.sigmoid(self.excite(torch.relu(self.squeeze(g))))
        if self.spatial_gate:  # a gate that is not [N, C, 1, 1] but the data's own shape times a sum
            return self.head(y * (g + y))
        return self.head(g * y)


class ScaledGate(nn.Module):  # a scaled sigmoid is still nonzero on removed channels
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(2 * torch.sigmoid(self.conv(x)))


class GateUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.excite = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
        self.head, self.aux = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        e = self.excite(y.mean((2, 3), keepdim=True))
        return self.head(torch.sigmoid(e) * y), self.aux(e)


class HardCodedShuffle(nn.Module):  # a channel shuffle whose sizes are all constants
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        return self.head(y.view(n, 2, 2, h, w).transpose(1, 2).reshape(n, c, h, w))


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(self.conv(x))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 4 * 4 * 4))


def _mask_first_rows(model, name, rows):
    w = dict(model.named_parameters())[name]
    m = torch.ones_like(w, dtype=torch.bool)
    m[rows] = False
    pk.apply_masks(model, {name: m})
    return model


@pytest.mark.parametrize("model, name, x, words", [
    (SplitSizes(), "conv.weight", torch.randn(1, 3, 4, 4), ["split/indexing", "'split'"]),
    (Rolled(), "conv.weight", torch.randn(1, 3, 4, 4), ["no rule for", "roll"]),
    (ScaledGate(), "conv.weight", torch.randn(1, 3, 4, 4), ["sigmoid-like gate", "'head'"]),
    (Gated(True), "conv.weight", torch.randn(1, 3, 4, 4), ["sigmoid-like gate", "'add'"]),
    (HardCodedShuffle(), "conv.weight", torch.randn(1, 3, 4, 4), ["channel shuffle with hard-coded sizes", "view"]),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sigmoid(), nn.Conv2d(4, 2, 1)), "0.weight", torch.randn(1, 3, 2, 2),
     ["sigmoid-like gate", "'2'"]),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1)), "0.weight", torch.randn(1, 3, 2, 2),
     ["GroupNorm", "'1'"]),
])
def test_unsupported_constructs_keep_their_channels_and_name_them(model, name, x, words):
    """Channels that reach a construct no rule follows are kept (documented rule), with a
    warning naming the construct; the call never fails and the result equals the masked model."""
    _mask_first_rows(model, name, [0])
    snap = snapshot(model)
    with pytest.warns(UserWarning, match="compact kept channels") as rec:
        small = compact(model, x)
    msg = " ".join(str(w.message) for w in rec)
    for w in words:
        assert w in msg
    assert_untouched(model, snap)
    assert pk.count_params(small) == pk.count_params(model)
    plan = plan_channels(model, x)
    assert len(plan.blocked) == 1 and plan.blocked[0][1] == 1
    assert plan.groups[plan.blocked[0][0]]["fixed"] and plan.groups[plan.blocked[0][0]]["barriers"]
    with torch.no_grad():
        torch.testing.assert_close(tuple_of(small(x)), tuple_of(model(x)), rtol=1e-5, atol=1e-6)


def tuple_of(y):
    return y if isinstance(y, tuple) else (y,)


@pytest.mark.parametrize("model, name, x, words", [
    (GateUsedTwice(), "conv.weight", torch.randn(1, 3, 4, 4), ["also used elsewhere", "'excite'"]),
    (Reused(), "conv.weight", torch.randn(1, 4, 2, 2), ["more than once", "'conv'"]),
])
def test_unsupported_models_raise_and_name_the_construct(model, name, x, words):
    _mask_first_rows(model, name, [0])
    snap = snapshot(model)
    with pytest.raises(ValueError) as e:
        compact(model, x)
    for w in words:
        assert w in str(e.value)
    assert_untouched(model, snap)


def test_unsupported_construct_is_fine_when_no_channel_reaches_it():
    model = Rolled()
    _mask_first_rows(model, "head.weight", [0])  # the output is fixed: nothing is removed
    small = compact(model, torch.randn(1, 3, 4, 4))
    assert pk.count_params(small) == pk.count_params(model)


class ConcatBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 5, 1)
        self.bn = nn.BatchNorm2d(9)
        self.c = nn.Conv2d(9, 6, 3, stride=2)
        self.fc = nn.Linear(9 * 4 + 6 * 1, 3)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))  # [N, 9, 4, 4]
        z = torch.cat([torch.flatten(torch.nn.functional.avg_pool2d(y, 2), 1),
                       torch.flatten(self.c(y).mean((2, 3)), 1)], 1)
        return self.fc(z)


def test_squeeze_and_excitation_gate_follows_the_data_channels():
    model = randomise_bn(Gated()).eval()
    _mask_first_rows(model, "conv.weight", [0, 2])
    _mask_first_rows(model, "excite.weight", [1, 3])  # the gate's own mask does not vote
    _mask_first_rows(model, "squeeze.weight", [1])
    x = torch.randn(2, 3, 4, 4)
    small = check_compact(model, x)
    assert (small.conv.out_channels, small.squeeze.in_channels, small.excite.out_channels) == (2, 2, 2)
    assert small.squeeze.out_channels == 2 and small.excite.in_channels == 2 and small.head.in_channels == 2


class ClassicSE(nn.Module):  # Hu et al. 2018: Linear layers on the pooled vector, view back to [N, C, 1, 1]
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc1, self.fc2 = nn.Linear(6, 3), nn.Linear(3, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        n, c = y.shape[0], y.shape[1]
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3)))))).view(n, c, 1, 1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y * g, 1), 1))


def test_classic_squeeze_and_excitation_with_linear_layers():
    model = randomise_bn(ClassicSE()).eval()
    _mask_first_rows(model, "conv.weight", [1, 4, 5])
    x = torch.randn(2, 3, 5, 5)
    small = check_compact(model, x)
    assert (small.conv.out_channels, small.fc1.in_features, small.fc2.out_features, small.head.in_features) == (3,) * 4


def test_concatenation_keeps_each_parts_channels_at_their_offsets():
    model = randomise_bn(ConcatBN()).eval()
    _mask_first_rows(model, "a.weight", [1, 3])
    _mask_first_rows(model, "b.weight", [0])
    _mask_first_rows(model, "c.weight", [2, 4, 5])
    x = torch.randn(2, 3, 4, 4)
    small = check_compact(model, x)
    assert (small.a.out_channels, small.b.out_channels, small.bn.num_features, small.c.in_channels) == (2, 4, 6, 6)
    assert small.c.out_channels == 3 and small.fc.in_features == 6 * 4 + 3
    plan = plan_channels(model, x[:1])
    assert torch.equal(plan.bn_index["bn"], torch.tensor([0, 2, 5, 6, 7, 8]))
    assert torch.equal(plan.in_index["fc"][:8], torch.tensor([0, 1, 2, 3, 8, 9, 10, 11]))


def test_torchvision_style_densenet():
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2,
                                        num_classes=5)
    channel_prune(randomise_bn(model), 0.5)
    check_compact(model, torch.randn(2, 3, 32, 32))


def test_untraceable_and_hard_coded_shapes():
    with pytest.raises(TypeError, match="symbolic_trace"):
        compact(_mask_first_rows(Branchy(), "fc.weight", [0]), torch.randn(1, 4))
    # a view with a constant size over the channels would not shrink with them: they are kept
    with pytest.warns(UserWarning, match="'view'.*constant"):
        small = compact(_mask_first_rows(HardCodedView(), "conv.weight", [0, 1]), torch.randn(1, 3, 6, 6))
    assert small.conv.out_channels == 4 and small.fc.in_features == 64


class SizedByAnother(nn.Module):  # MaxViT-like: a view sized by another tensor's channel count
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        z = self.b(x).flatten(2).view(n, c, h, w)  # b's channels, a's count
        return self.head(z) + y.sum()


def test_a_channel_count_read_elsewhere_keeps_those_channels():
    model = _mask_first_rows(SizedByAnother(), "a.weight", [0, 1])
    _mask_first_rows(model, "b.weight", [2])
    x = torch.randn(1, 3, 2, 2)
    with pytest.warns(UserWarning, match="channel count of 'a'"):
        small = compact(model, x)
    assert small.a.out_channels == small.b.out_channels == 4  # both: b is viewed with a's count
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_removed_channels(model, x)(x), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        compact("not a model", torch.randn(1, 4))
    with pytest.raises(TypeError, match="example_inputs"):
        compact(nn.Linear(4, 2), [1, 2, 3, 4])
