"""Layer/block pruning (granularity="layer", prunekit.structured.layers): which blocks are skippable,
exact block counts against a slow reference, masks covering exactly a block's parameters,
drop_layers equal to the masked model (and its documented relu(x) semantics), MAC and
parameter drops, errors."""

from __future__ import annotations

import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
import torchvision
from hypothesis import given, settings
from torch import nn
from torchvision.models.resnet import Bottleneck

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.structured.layers import SkippableEncoderBlock, drop_layers, find_blocks, layer_masks, removed_blocks
from prunekit.models import MLP, ResNet, TinyViT


def randomise_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (a fresh BN is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model


def resnet(seed=0):
    torch.manual_seed(seed)
    return randomise_bn(ResNet(widths=(8, 8, 16), blocks_per_stage=2), seed).eval()


def vit(seed=0, depth=3):
    torch.manual_seed(seed)
    return TinyViT(depth=depth).eval()


def torch_vit(seed=0):
    torch.manual_seed(seed)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=32,
                                             mlp_dim=64).eval()
    nn.init.normal_(m.heads.head.weight)  # torchvision zero-initialises the classifier
    return m


def torch_resnet(seed=0):
    torch.manual_seed(seed)
    m = torchvision.models.resnet.ResNet(Bottleneck, [1, 2, 1, 2], num_classes=10)
    return randomise_bn(m, seed).eval()


def under(model, prefixes):
    return {n for n, _ in model.named_parameters() if any(n.startswith(p + ".") for p in prefixes)}


# --- which blocks are units ---------------------------------------------------------------

def test_find_blocks():
    r = resnet()
    assert [(b.name, b.kind) for b in find_blocks(r)] == [
        ("layer1.0", "post_relu"), ("layer1.1", "post_relu"), ("layer2.1", "post_relu"), ("layer3.1", "post_relu")]
    assert set(find_blocks(r)[0].params) == under(r, ["layer1.0"])  # both convs and both BatchNorms
    assert len(find_blocks(r)[0].params) == 6
    v = vit(depth=2)
    blocks = find_blocks(v)
    assert [(b.name, b.kind) for b in blocks] == [
        ("blocks.0.attn", "pre_norm"), ("blocks.0.mlp", "pre_norm"), ("blocks.1.attn", "pre_norm"),
        ("blocks.1.mlp", "pre_norm")]
    assert set(blocks[0].params) == under(v, ["blocks.0.norm1", "blocks.0.attn"])
    assert set(blocks[3].params) == under(v, ["blocks.1.norm2", "blocks.1.mlp"])
    t = torch_vit()
    assert [b.name for b in find_blocks(t)][:2] == ["encoder.layers.encoder_layer_0.self_attention",
                                                    "encoder.layers.encoder_layer_0.mlp"]
    assert len(find_blocks(t)) == 6
    assert [b.name for b in find_blocks(torch_resnet())] == ["layer2.1", "layer4.1"]  # first blocks downsample
    assert find_blocks(MLP()) == [] and find_blocks(tiny_cnn()) == []


# --- a slow reference ---------------------------------------------------------------------

def layer_reference(model, scores, sparsity):
    """Removed blocks by loops: mean square of the scored entries (exact), lowest first, ties to
    the earlier block."""
    blocks = [b for b in find_blocks(model) if any(p in scores for p in b.params)]
    vals = []
    for b in blocks:
        e = [int(v) for p in b.params if p in scores for v in scores[p].reshape(-1).tolist()]
        vals.append(Fraction(sum(v * v for v in e), len(e)))
    order = sorted(range(len(blocks)), key=lambda i: (vals[i], i))
    return blocks, {blocks[i].name for i in order[:min(round(sparsity * len(blocks)), len(blocks) - 1)]}


@settings(max_examples=30, deadline=None)
@given(which=st.sampled_from(["resnet", "vit"]), sparsity=st.floats(0, 0.999), tied=st.booleans(),
       some=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_layer_masks_match_reference(which, sparsity, tied, some, seed):
    model = resnet() if which == "resnet" else vit()
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.randint(0, 2 if tied else 30, p.shape, generator=g).float()
              for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    if some:  # only some blocks scored: the others take no part and get no mask
        scores = {n: s for i, (n, s) in enumerate(scores.items()) if i % 3}
    masks = pk.make_masks(scores, sparsity, "layer", model=model)
    blocks, removed = layer_reference(model, scores, sparsity)
    assert set(masks) == {p for b in blocks for p in b.params}
    for b in blocks:
        for p in b.params:
            assert masks[p].shape == dict(model.named_parameters())[p].shape
            assert bool(masks[p].all()) == (b.name not in removed) == bool(masks[p].any()), p


@pytest.mark.parametrize("sparsity, count", [(0.0, 0), (0.2, 1), (0.34, 2), (0.5, 3), (0.9, 5), (0.99, 5)])
def test_exact_block_counts(sparsity, count):
    v = vit(depth=3)
    masks = pk.make_masks(pk.score(v, "magnitude"), sparsity, "layer", model=v)
    gone = [b.name for b in find_blocks(v) if not masks[b.params[0]].any()]
    assert len(gone) == count == min(round(sparsity * 6), 5)  # a sparsity below 1 keeps a block


def test_block_score_is_normalised_so_size_does_not_win():
    """An MLP sublayer has about as many weights as an attention sublayer here; scale one sublayer's
    scores down and it goes first, whatever its size."""
    v = vit(depth=2)
    scores = {n: torch.ones_like(s) for n, s in pk.score(v, "magnitude").items()}
    scores["blocks.1.mlp.fc1.weight"] = scores["blocks.1.mlp.fc1.weight"] * 0.5
    masks = pk.make_masks(scores, 0.25, "layer", model=v)
    assert [b.name for b in find_blocks(v) if not masks[b.params[0]].any()] == ["blocks.1.mlp"]
    # all blocks equal (RMS 1): ties go to the earlier block, not to the smaller or bigger one
    scores = {n: torch.ones_like(s) for n, s in pk.score(v, "magnitude").items()}
    masks = pk.make_masks(scores, 0.5, "layer", model=v)
    assert [b.name for b in find_blocks(v) if not masks[b.params[0]].any()] == ["blocks.0.attn", "blocks.0.mlp"]


@pytest.mark.parametrize("fill", [0.0, -math.inf])
def test_idempotence(fill):
    r = resnet()
    scores = pk.score(r, "magnitude")
    masks = pk.make_masks(scores, 0.5, "layer", model=r)
    again = pk.make_masks({n: s.masked_fill(~masks[n], fill) if n in masks else s for n, s in scores.items()},
                          0.5, "layer", model=r)
    assert again.keys() == masks.keys() and all(torch.equal(again[n], masks[n]) for n in masks)


# --- drop_layers == masked model ----------------------------------------------------------

CASES = [
    (resnet, (2, 3, 16, 16), 0.5),
    (vit, (2, 1, 8, 8), 0.5),
    (torch_resnet, (1, 3, 32, 32), 0.5),
    (torch_vit, (2, 3, 32, 32), 0.5),
]


@pytest.mark.parametrize("make, shape, sparsity", CASES)
def test_drop_layers_equals_masked_model_and_drops_params_and_macs(make, shape, sparsity):
    model = make()
    x = torch.randn(shape)
    masks = pk.make_masks(pk.score(model, "magnitude"), sparsity, "layer", model=model)
    blocks = find_blocks(model)
    macs_before, per_module = pk.count_macs(model, x)
    pk.apply_masks(model, masks)
    gone = [b for b in blocks if not masks[b.params[0]].any()]
    assert removed_blocks(model) == [b.name for b in gone] and len(gone) == round(sparsity * len(blocks))
    snap = snapshot(model)
    short = drop_layers(model)
    assert_untouched(model, snap)
    with torch.no_grad():
        ref, out = model(x), short(x)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    removed_params = sum(p.numel() for n, p in model.named_parameters()
                         if any(n.removesuffix("_orig") in b.params for b in gone))
    assert pk.count_params(model) - pk.count_params(short) == removed_params
    assert not any(hasattr(m, "weight_mask") for m in short.modules())
    if make is not torch_vit:  # count_macs does not see nn.MultiheadAttention's fused eval path
        macs_after = pk.count_macs(short, x)[0]
        main = [b.name if b.kind == "pre_norm" else b.parent for b in gone]
        assert macs_before - macs_after == sum(per_module.get(n, 0) for n in main) > 0


def test_post_relu_semantics_are_relu_not_identity():
    """A removed post-ReLU block computes relu(x + 0) = relu(x); drop_layers puts nn.ReLU() there,
    exact for any input, also negative ones (inside a ResNet the inputs are >= 0 and relu(x) = x)."""
    r = resnet()
    masks = {p: torch.zeros_like(t, dtype=torch.bool) for p, t in r.named_parameters() if p.startswith("layer1.1.")}
    pk.apply_masks(r, masks)
    x = torch.randn(2, 8, 6, 6)  # negative entries too
    with torch.no_grad():
        torch.testing.assert_close(r.layer1[1](x), torch.relu(x), rtol=0, atol=0)
    assert not torch.equal(torch.relu(x), x)
    short = drop_layers(r)
    assert isinstance(short.layer1[1], nn.ReLU)
    r.train()  # batch statistics: the zeroed BatchNorm still outputs gamma * ... + beta = 0
    short.train()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(short(x), r(x), rtol=0, atol=1e-5)


def test_pre_norm_branch_removed_is_exact_identity():
    v = vit(depth=1)
    masks = {p: torch.zeros_like(t, dtype=torch.bool) for p, t in v.named_parameters()
             if p.startswith(("blocks.0.norm1.", "blocks.0.attn."))}
    pk.apply_masks(v, masks)
    x = torch.randn(2, 5, 32)
    block = v.blocks[0]
    torch.testing.assert_close(block(x), x + block.mlp(block.norm2(x)), rtol=0, atol=0)
    short = drop_layers(v)
    assert short.blocks[0].attn is None and short.blocks[0].norm1 is None and short.blocks[0].mlp is not None
    assert [b.name for b in find_blocks(short)] == ["blocks.0.mlp"]


def test_torchvision_encoder_block_partly_and_fully_dropped():
    t = torch_vit()
    layers = t.encoder.layers
    kill = ["encoder_layer_0.ln_1", "encoder_layer_0.self_attention", "encoder_layer_1.ln_1",
            "encoder_layer_1.self_attention", "encoder_layer_1.ln_2", "encoder_layer_1.mlp"]
    masks = {p: torch.zeros_like(w, dtype=torch.bool) for p, w in t.named_parameters()
             if any(p.startswith(f"encoder.layers.{k}.") for k in kill)}
    pk.apply_masks(t, masks)
    short = drop_layers(t)
    b0, b1 = short.encoder.layers.encoder_layer_0, short.encoder.layers.encoder_layer_1
    assert isinstance(b0, SkippableEncoderBlock) and b0.self_attention is None and b0.mlp is not None
    assert isinstance(b1, SkippableEncoderBlock) and b1.self_attention is None and b1.mlp is None
    assert type(short.encoder.layers.encoder_layer_2) is type(layers.encoder_layer_2)  # untouched
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(short(x), t(x), rtol=0, atol=1e-5)
    assert [b.name for b in find_blocks(short)][:1] == ["encoder.layers.encoder_layer_0.mlp"]


def test_drop_twice():
    v = vit(depth=3)
    pk.apply_masks(v, pk.make_masks(pk.score(v, "magnitude"), 0.34, "layer", model=v))
    short = drop_layers(v)
    assert len(find_blocks(short)) == 4
    pk.apply_masks(short, pk.make_masks(pk.score(short, "magnitude"), 0.5, "layer", model=short))
    shorter = drop_layers(short)
    assert len(find_blocks(shorter)) == 2
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(shorter(x), short(x), rtol=0, atol=1e-5)


# --- prune --------------------------------------------------------------------------------

def test_prune_layers_is_cumulative():
    r = resnet()
    first = pk.prune(r, 0.25, granularity="layer")
    second = pk.prune(r, 0.5, granularity="layer")
    g1, g2 = set(removed_blocks(r)), {b.name for b in find_blocks(r) if not second[b.params[0]].any()}
    assert len(g2) == 2 and g2 == set(removed_blocks(r))
    assert {b.name for b in find_blocks(r) if not first[b.params[0]].any()} < g2 and g1 == g2
    again = pk.prune(r, 0.5, granularity="layer")
    assert all(torch.equal(again[n], second[n]) for n in second)


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, words", [
    (lambda m, s: pk.make_masks(s, 0.5, "layer", "layer", model=m), ValueError, ["scope must be 'global'"]),
    (lambda m, s: pk.make_masks(s, {n: 0.5 for n in s}, "layer", "layer", model=m), ValueError, ["scope"]),
    (lambda m, s: layer_masks(s, {n: 0.5 for n in s}, m), ValueError, ["not a dict"]),
    (lambda m, s: pk.make_masks(s, 0.5, "layer"), ValueError, ["model=model"]),
    (lambda m, s: layer_masks(s, 0.5, {n: t.shape for n, t in m.named_parameters()}), ValueError, ["shapes="]),
    (lambda m, s: pk.make_masks(pk.score(mlp := MLP(), "magnitude"), 0.5, "layer", model=mlp), ValueError,
     ["no skippable residual block", "channel"]),
    (lambda m, s: pk.make_masks({"fc.weight": s["fc.weight"]}, 0.5, "layer", model=m), ValueError,
     ["none of the scored parameters"]),
    (lambda m, s: pk.make_masks(s, 1.0, "layer", model=m), ValueError, ["sparsity"]),
    (lambda m, s: pk.make_masks(s, 0.5, "layer", reduction="max", model=m), ValueError, ["reduction"]),
    (lambda m, s: pk.make_masks({**s, "layer1.0.conv1.weight": torch.rand(8)}, 0.5, "layer", model=m), ValueError,
     ["layer1.0.conv1.weight", "finer granularity"]),
    (lambda m, s: drop_layers([m]), TypeError, ["model"]),
])
def test_errors(call, exc, words):
    model = resnet()
    scores = pk.score(model, "magnitude")
    snap = snapshot(model)
    with pytest.raises(exc) as info:
        call(model, scores)
    for w in words:
        assert w in str(info.value)
    assert_untouched(model, snap)


@pytest.mark.parametrize("kwargs", [{"scope": "layer"}, {}])
def test_prune_errors_leave_the_model_untouched(kwargs):
    model = MLP() if not kwargs else resnet()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="granularity 'layer'"):
        pk.prune(model, 0.5, granularity="layer", **kwargs)
    assert_untouched(model, snap)
