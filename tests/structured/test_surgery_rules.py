"""compact()'s rules for grouped convs, LayerNorm, channels-last tensors, tokens and layer scale.

Small hand-made models with known answers: the exact channels kept, the compacted
shapes, and equality with ``zero_removed_channels``.
"""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.core.graph.channels import _balance, plan_channels
from prunekit.structured.compact import compact

import helpers
from helpers import check_compact, mask_rows


def randomise_bn(model: nn.Module) -> nn.Module:
    return helpers.randomise_bn(model).eval()


def kept_of(plan, producer: str) -> list[int]:
    return next(g["kept"].tolist() for g in plan.groups if producer in g["producers"])


# --- grouped convolutions ---------------------------------------------------------------

def grouped(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(nn.Sequential(
        nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=bias), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 3, 1),
    ))


@pytest.mark.parametrize("bias", [False, True])
def test_grouped_conv_keeps_its_groups_and_balances_them(bias):
    model = grouped(bias)
    mask_rows(model, "0.weight", [0, 1, 5])     # conv group 0 keeps 2 of 4, group 1 keeps 3
    mask_rows(model, "3.weight", [1, 2, 3, 6])  # rows: group 0 keeps 1, group 1 keeps 3
    x = torch.randn(2, 4, 5, 5)
    plan = plan_channels(model, x[:1])
    # every part keeps as many as the part that keeps most; the lowest removed come back
    assert kept_of(plan, "0") == [0, 2, 3, 4, 6, 7]
    assert kept_of(plan, "3") == [0, 1, 2, 4, 5, 7]
    assert next(g for g in plan.groups if "3" in g["producers"])["partitions"] == [2]
    small = check_compact(model, x)
    conv = small[3]
    assert (conv.in_channels, conv.out_channels, conv.groups) == (6, 6, 2)
    assert conv.weight.shape == (6, 3, 3, 3)
    w = model[3].weight  # masked weight: rows 0,1,2 of group 0 read inputs 0,2,3; rows 4,5,7 read 4,6,7
    assert torch.equal(conv.weight[:3], w[[0, 1, 2]][:, [0, 2, 3]])
    assert torch.equal(conv.weight[3:], w[[4, 5, 7]][:, [0, 2, 3]])
    assert small[0].out_channels == small[1].num_features == 6 and small[6].in_channels == 6


def test_grouped_conv_equal_masks_remove_exactly_them():
    model = grouped()
    mask_rows(model, "0.weight", [1, 6])
    mask_rows(model, "3.weight", [0, 3, 4, 7])
    x = torch.randn(2, 4, 5, 5)
    small = check_compact(model, x)
    assert (small[3].in_channels, small[3].out_channels, small[3].groups) == (6, 4, 2)


def test_grouped_conv_with_one_input_per_group_keeps_what_any_group_keeps():
    # groups == in_channels but out = 2 * in (a depthwise multiplier): one input per group
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=4), nn.ReLU(),
                          nn.Conv2d(8, 2, 1)).eval()
    mask_rows(model, "0.weight", [1])  # group 1 would lose its only input: kept, as the others keep 1
    mask_rows(model, "2.weight", [0, 2, 5])  # rows by group: {1}, {3}, {4}, {6, 7}: max 2 -> nothing goes
    mask_rows(model, "4.weight", [])
    small = compact(model, torch.randn(1, 3, 6, 6))
    assert (small[0].out_channels, small[2].in_channels, small[2].out_channels, small[2].groups) == (4, 4, 8, 4)


def test_balance_holds_for_several_group_counts():
    keep = torch.tensor([1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0], dtype=torch.bool)
    _balance(keep, [2, 3])
    for g in (2, 3):
        counts = keep.view(g, -1).sum(1)
        assert (counts == counts[0]).all()
    keep = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    _balance(keep, [2, 4])  # nested parts: halves of 3 and 2 -> 3 and 3; then quarters of 1, 2, 1, 2 -> 2 each
    assert keep.int().tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0]


# --- LayerNorm, channels-last, layer scale -------------------------------------------------

class NeXtBlock(nn.Module):
    """A ConvNeXt block: depthwise conv, permute to channels-last, LayerNorm, MLP, layer scale."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        self.head = nn.Linear(c, 2)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        x = x + self.gamma * y
        return self.head(x.mean((2, 3)))


def test_convnext_block_mlp_hidden_channels_compact():
    torch.manual_seed(0)
    model = mask_rows(NeXtBlock().eval(), "fc1.weight", [0, 3, 4, 9, 30])
    small = check_compact(model, torch.randn(2, 3, 8, 8))
    assert (small.fc1.out_features, small.fc2.in_features) == (27, 27)
    assert small.fc2.out_features == small.norm.normalized_shape[0] == small.gamma.shape[0] == 8


def test_layernorm_coupled_stream_channels_are_removed():
    """The stream is LayerNorm'd: the LayerNorm is a member (normalising over the kept
    channels), so a channel every producer drops goes from the stem, the depthwise conv, the
    LayerNorm, the layer scale and the MLP's ends."""
    torch.manual_seed(0)
    model = NeXtBlock().eval()
    mask_rows(model, "stem.weight", [2])
    mask_rows(model, "fc2.weight", [2])  # every producer of the stream drops channel 2
    small = check_compact(model, torch.randn(2, 3, 8, 8))
    assert (small.stem.out_channels, small.dw.groups, small.norm.normalized_shape, small.fc1.in_features,
            small.fc2.out_features, small.gamma.shape[0], small.head.in_features) == (7, 7, (7,), 7, 7, 7, 7)


class LayerScaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(6, 1, 1) + 0.5)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.gamma * torch.relu(self.conv(x)) / 2
        return self.head(x.mean((2, 3)))


def test_layer_scale_is_sliced_with_its_channels():
    torch.manual_seed(0)
    model = LayerScaled().eval()
    mask_rows(model, "stem.weight", [1, 4])
    mask_rows(model, "conv.weight", [1, 3, 4])
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert small.gamma.shape == (4, 1, 1) and isinstance(small.gamma, nn.Parameter)
    assert torch.equal(small.gamma.flatten(), model.gamma.flatten()[[0, 2, 3, 5]])
    widths = (small.stem.out_channels, small.conv.in_channels, small.conv.out_channels, small.head.in_features)
    assert widths == (4, 4, 4, 4)


# --- tokens: Linear on [N, L, C], reshape, transpose, indexing -----------------------------

class TokenNet(nn.Module):
    """Patch embedding (conv -> flatten(2) -> transpose), a residual MLP on the tokens, heads on
    token 0 and on the mean token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)
        self.pool_head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # [N, L, C]
        t = t + self.fc2(nn.functional.gelu(self.fc1(t)))
        return self.head(t[:, 0]) + self.pool_head(t.mean(1))


def test_token_mlp_reshape_transpose_and_indexing():
    torch.manual_seed(0)
    model = TokenNet().eval()
    mask_rows(model, "embed.weight", [0, 5, 6])
    mask_rows(model, "fc2.weight", [0, 2, 6])  # the stream loses 0 and 6 (both producers drop them)
    mask_rows(model, "fc1.weight", [1, 2, 3, 11])
    small = check_compact(model, torch.randn(2, 3, 8, 8))
    assert (small.embed.out_channels, small.fc1.in_features, small.fc2.out_features) == (6, 6, 6)
    assert (small.head.in_features, small.pool_head.in_features) == (6, 6)
    assert (small.fc1.out_features, small.fc2.in_features) == (8, 8)


def test_linear_over_another_dim_is_a_barrier():
    class MixTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.mix, self.head = nn.Conv2d(3, 4, 1), nn.Linear(9, 9), nn.Linear(4 * 9, 2)

        def forward(self, x):  # the Linear mixes the 9 positions of each channel
            return self.head(self.mix(self.conv(x).flatten(2)).flatten(1))

    model = mask_rows(MixTokens(), "conv.weight", [1])
    with pytest.warns(UserWarning, match="'mix'.*Linear over a dim other than the channels"):
        small = compact(model, torch.randn(1, 3, 3, 3))
    assert small.conv.out_channels == 4  # kept (a zero row), not removed


# --- channel slices, chunks and shuffles ---------------------------------------------------

class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(self.conv(x)[:, 1:4])


def test_constant_channel_slice_pins_the_channels_up_to_its_end():
    # x[:, 1:4] in the compacted model still reads positions 1..3: channels 0..3 must stay where they are
    model = mask_rows(Sliced().eval(), "conv.weight", [0, 2, 5])
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert (small.conv.out_channels, small.head.in_channels) == (5, 3)


class Shuffle(nn.Module):  # ShuffleNet's channel shuffle, the group count a constant
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        n, c, h, w = y.shape
        return self.head(y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w))


def test_channel_shuffle_ties_the_channels_it_interleaves():
    # the shuffle interleaves a[j] and b[j]: the compacted view(n, 2, c // 2) needs them kept together
    model = Shuffle().eval()
    mask_rows(model, "a.weight", [0, 1, 3])
    mask_rows(model, "b.weight", [1, 2, 3])  # pairs (a0, b0) and (a2, b2) are kept by one side: kept
    x = torch.randn(2, 3, 4, 4)
    plan = plan_channels(model, x[:1])
    assert kept_of(plan, "a") == kept_of(plan, "b") == [0, 2]
    small = check_compact(model, x)
    assert (small.a.out_channels, small.b.out_channels, small.head.in_channels) == (2, 2, 4)
    # head reads the shuffled order a0 b0 a2 b2: columns 0, 1, 4, 5 of the original
    assert torch.equal(small.head.weight, model.head.weight[:, [0, 1, 4, 5]])


class Chunked(nn.Module):  # ShuffleNet's stride-1 unit: half the channels pass, half go through a branch
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x1, x2 = self.stem(x).chunk(2, dim=1)
        return self.head(torch.cat((x1, self.branch(x2)), dim=1))


def test_chunk_parts_keep_equal_counts():
    model = randomise_bn(Chunked())
    mask_rows(model, "stem.weight", [0, 1, 2, 5])  # first half keeps 1, second 3: the first gets 0 and 1 back
    mask_rows(model, "branch.0.weight", [3])
    x = torch.randn(2, 3, 4, 4)
    plan = plan_channels(model, x[:1])
    assert kept_of(plan, "stem") == [0, 1, 3, 4, 6, 7]
    small = check_compact(model, x)
    assert (small.stem.out_channels, small.branch[0].in_channels, small.branch[0].out_channels) == (6, 3, 3)
    assert small.head.in_channels == 6


def test_split_shuffle_unit_of_torchvision():
    pytest.importorskip("torchvision")
    from torchvision.models.shufflenetv2 import InvertedResidual

    torch.manual_seed(0)
    model = randomise_bn(nn.Sequential(nn.Conv2d(3, 8, 1), InvertedResidual(8, 8, 2), InvertedResidual(8, 8, 1),
                                       nn.Conv2d(8, 2, 1)))
    pk.prune(model, 0.5, criterion="random", seed=0, granularity="channel", scope="layer", exclude="3.weight")
    check_compact(model, torch.randn(2, 3, 8, 8))
