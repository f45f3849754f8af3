"""Tests for prunekit.models: forward shapes, fx-traceability, readable names, residuals."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit import models
from prunekit.metrics import count_params as count_parameters
from prunekit.models import MLP, BasicBlock, MultiHeadSelfAttention, ResNet, SmallCNN, TinyViT, ViTBlock


ALLOWED = (
    nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.Sequential, BasicBlock, MLP, SmallCNN, ResNet,
    nn.LayerNorm, nn.GELU, MultiHeadSelfAttention, ViTBlock, TinyViT,
)

CASES = [
    (lambda: MLP(), (5, 64)),
    (lambda: MLP(), (5, 1, 8, 8)),
    (lambda: MLP(in_features=12, hidden=(), num_classes=3), (5, 12)),
    (lambda: SmallCNN(), (5, 3, 32, 32)),
    (lambda: SmallCNN(in_channels=1, hidden=None), (5, 1, 8, 8)),
    (lambda: SmallCNN(widths=(8, 8), num_classes=4), (5, 3, 20, 20)),
    (lambda: ResNet(), (5, 3, 32, 32)),
    (lambda: ResNet(in_channels=1, blocks_per_stage=2), (5, 1, 8, 8)),
    (lambda: ResNet(widths=(8, 16, 16, 32), num_classes=7), (5, 3, 32, 32)),
    (lambda: TinyViT(), (5, 1, 8, 8)),
    (lambda: TinyViT(image_size=16, patch_size=4, in_channels=3, num_classes=4, dim=24, depth=3, num_heads=3,
                     mlp_ratio=1.5), (5, 3, 16, 16)),
    (lambda: TinyViT(patch_size=2, num_heads=1, depth=1), (5, 1, 8, 8)),
]


@pytest.mark.parametrize("make, shape", CASES)
def test_forward_shape_and_fx_trace(make, shape):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    out = model(x)
    assert out.shape == (shape[0], model.num_classes) and out.dtype == torch.float32
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)
    for m in model.modules():
        assert isinstance(m, ALLOWED), type(m)
    # fx sees every leaf module, so pruning tools can find the layers by name
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert layers <= called


def test_sizes_are_small():
    for model in (MLP(), SmallCNN(), ResNet(), SmallCNN(in_channels=1)):
        assert 10_000 <= count_parameters(model) <= 500_000
    # hand count: 64*128+128 + 128*64+64 + 64*10+10
    assert count_parameters(MLP()) == 17_226


def test_mlp_names():
    names = [n for n, _ in MLP().named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert MLP().fc1.in_features == 64 and MLP().fc3.out_features == 10


def test_smallcnn_names_and_blocks():
    model = SmallCNN()
    params = dict(model.named_parameters())
    assert params["features.0.weight"].shape == (16, 3, 3, 3)  # conv, no bias
    assert "features.0.bias" not in params
    assert params["features.1.weight"].shape == (16,)  # BatchNorm scale
    assert params["features.4.weight"].shape == (32, 16, 3, 3)
    assert params["features.8.weight"].shape == (64, 32, 3, 3)
    assert isinstance(model.features[3], nn.MaxPool2d)
    assert params["classifier.2.weight"].shape == (64, 64)
    assert params["classifier.4.weight"].shape == (10, 64)
    assert dict(SmallCNN(hidden=None).named_parameters())["classifier.2.weight"].shape == (10, 64)


def test_resnet_names_and_shortcuts():
    model = ResNet()
    params = dict(model.named_parameters())
    assert params["conv1.weight"].shape == (16, 3, 3, 3)
    assert params["layer1.0.conv1.weight"].shape == (16, 16, 3, 3)
    assert model.layer1[0].downsample is None  # same shape: identity shortcut
    assert params["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert params["layer3.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert params["fc.weight"].shape == (10, 64)
    assert [len(s) for s in ResNet(blocks_per_stage=2).stages] == [2, 2, 2]
    # the second block of a stage keeps shape -> identity shortcut
    assert ResNet(blocks_per_stage=2).layer2[1].downsample is None
    x = torch.randn(2, 3, 32, 32)
    feats = model.layer1(model.relu(model.bn1(model.conv1(x))))
    assert feats.shape == (2, 16, 32, 32)
    assert model.layer2(feats).shape == (2, 32, 16, 16)


def test_basic_block_adds_the_shortcut():
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    x = torch.randn(3, 8, 6, 6)
    with torch.no_grad():  # kill the residual branch: output must be relu(identity)
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    torch.testing.assert_close(block(x), torch.relu(x))
    down = BasicBlock(8, 16, stride=2).eval()
    with torch.no_grad():
        down.bn2.weight.zero_()
        down.bn2.bias.zero_()
    torch.testing.assert_close(down(x), torch.relu(down.downsample(x)))
    assert down(x).shape == (3, 16, 3, 3)


def test_train_mode_uses_batch_statistics():
    model = SmallCNN().train()
    model(torch.randn(8, 3, 32, 32))
    assert int(model.features[1].num_batches_tracked) == 1


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: MLP(in_features=0), ValueError, "in_features"),
        (lambda: MLP(hidden=(0, 4)), ValueError, "hidden"),
        (lambda: MLP(hidden=64), TypeError, "hidden"),
        (lambda: MLP(num_classes=1.5), TypeError, "num_classes"),
        (lambda: SmallCNN(widths=()), ValueError, "widths"),
        (lambda: SmallCNN(in_channels="3"), TypeError, "in_channels"),
        (lambda: SmallCNN(hidden=0), ValueError, "hidden"),
        (lambda: ResNet(blocks_per_stage=0), ValueError, "blocks_per_stage"),
        (lambda: ResNet(widths=(16, -1)), ValueError, "widths"),
        (lambda: TinyViT(image_size=0), ValueError, "image_size"),
        (lambda: TinyViT(patch_size=3), ValueError, "patch_size"),
        (lambda: TinyViT(in_channels=1.0), TypeError, "in_channels"),
        (lambda: TinyViT(num_classes=0), ValueError, "num_classes"),
        (lambda: TinyViT(dim=30, num_heads=4), ValueError, "num_heads"),
        (lambda: TinyViT(depth=0), ValueError, "depth"),
        (lambda: TinyViT(num_heads=True), TypeError, "num_heads"),
        (lambda: TinyViT(mlp_ratio=0), ValueError, "mlp_ratio"),
        (lambda: TinyViT(mlp_ratio="2"), TypeError, "mlp_ratio"),
        (lambda: MultiHeadSelfAttention(8, 3), ValueError, "num_heads"),
        (lambda: MultiHeadSelfAttention(8, 2, head_dim=0), ValueError, "head_dim"),
    ],
)
def test_bad_arguments(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


@settings(max_examples=15, deadline=None)
@given(
    in_features=st.integers(1, 40),
    hidden=st.lists(st.integers(1, 24), max_size=3),
    num_classes=st.integers(2, 12),
    batch=st.integers(1, 5),
)
def test_mlp_property_shapes_and_count(in_features, hidden, num_classes, batch):
    model = MLP(in_features, tuple(hidden), num_classes)
    assert model(torch.randn(batch, in_features)).shape == (batch, num_classes)
    widths = [in_features, *hidden, num_classes]
    assert count_parameters(model) == sum(a * b + b for a, b in zip(widths, widths[1:]))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == len(hidden) + 1


@settings(max_examples=10, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    blocks=st.integers(1, 2),
    in_channels=st.integers(1, 3),
)
def test_resnet_property_any_widths(widths, blocks, in_channels):
    model = ResNet(in_channels=in_channels, widths=tuple(widths), blocks_per_stage=blocks).eval()
    x = torch.randn(2, in_channels, 16, 16)
    assert model(x).shape == (2, 10)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


def test_module_exports():
    assert set(models.__all__) >= {"MLP", "SmallCNN", "ResNet", "BasicBlock", "TinyViT", "ViTBlock",
                                   "MultiHeadSelfAttention"}


# --- TinyViT -----------------------------------------------------------------------------

def test_tinyvit_names_and_hand_count():
    model = TinyViT()
    params = dict(model.named_parameters())
    assert params["patch_embed.weight"].shape == (32, 1, 4, 4)
    assert params["cls_token"].shape == (1, 1, 32) and params["pos_embed"].shape == (1, 5, 32)
    for p in "qkv":
        assert params[f"blocks.0.attn.{p}.weight"].shape == (32, 32)
    assert params["blocks.1.attn.proj.weight"].shape == (32, 32)
    assert params["blocks.0.mlp.fc1.weight"].shape == (64, 32) and params["blocks.0.mlp.fc2.weight"].shape == (32, 64)
    assert params["head.weight"].shape == (10, 32)
    attn = model.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (4, 8)
    block = 2 * 64 + 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
    assert count_parameters(model) == (16 * 32 + 32) + 32 + 5 * 32 + 2 * block + 64 + (32 * 10 + 10) == 18_218


def reference_attention(attn: MultiHeadSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention head by head, by the textbook formula: concat_h softmax(q_h k_h^T / sqrt(d)) v_h, then proj."""
    q, k, v = attn.q(x), attn.k(x), attn.v(x)
    outs = []
    for h in range(attn.num_heads):
        sl = slice(h * attn.head_dim, (h + 1) * attn.head_dim)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(-2, -1) / attn.head_dim ** 0.5, dim=-1)
        outs.append(w @ v[..., sl])
    return attn.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("dim, heads, head_dim", [(16, 4, None), (12, 3, 5), (8, 1, None), (6, 2, 1)])
def test_attention_matches_the_per_head_formula(dim, heads, head_dim):
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(dim, heads, head_dim)
    assert attn.q.out_features == heads * (head_dim or dim // heads) == attn.proj.in_features
    x = torch.randn(3, 7, dim)
    torch.testing.assert_close(attn(x), reference_attention(attn, x))


def test_vit_block_is_pre_norm_residual_and_branches_can_be_removed():
    torch.manual_seed(0)
    block = ViTBlock(16, 4)
    x = torch.randn(2, 5, 16)
    y = x + block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), y + block.mlp(block.norm2(y)))
    block.mlp = block.norm2 = None
    torch.testing.assert_close(block(x), y)
    block.attn = block.norm1 = None
    assert torch.equal(block(x), x)


def test_tinyvit_uses_the_class_token_and_positions():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(2, 1, 8, 8)
    out = model(x)
    with torch.no_grad():
        model.pos_embed.zero_()
    assert not torch.allclose(model(x), out)  # positions matter
    flipped = x.flip(-1)
    assert not torch.allclose(model(flipped), model(x))


def test_tinyvit_learns_digits_in_seconds():
    from prunekit import data, train
    train_loader, test_loader = data.digits(batch_size=64)
    train.set_seed(0)
    model = TinyViT()
    train.train(model, train_loader, epochs=3, lr=3e-3, progress=False)
    assert train.evaluate(model, test_loader) > 0.75  # chance is 0.1
