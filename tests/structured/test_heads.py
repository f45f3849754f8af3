"""Head pruning (granularity="head", prunekit.structured.heads): exact counts, the rows and columns
of every removed head, a slow reference, idempotence, compaction equivalence on our TinyViT
and on torchvision ViTs, the nn.MultiheadAttention-compatible replacement, errors."""

from __future__ import annotations

import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
import torchvision
from hypothesis import example, given, settings
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.structured.heads import (PrunedMultiheadAttention, compact_heads, find_heads, head_masks, removed_heads)
from prunekit.models import MultiHeadSelfAttention, TinyViT


def magnitude(model):
    return pk.score(model, "magnitude")


class Attentions(nn.Module):
    """Several attention modules side by side (for the reference tests)."""

    def __init__(self, configs):
        super().__init__()
        self.attns = nn.ModuleList(MultiHeadSelfAttention(d, h, hd) for d, h, hd in configs)


def small_torch_vit(seed=0, layers=2, heads=4, dim=32):
    torch.manual_seed(seed)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=heads,
                                             hidden_dim=dim, mlp_dim=2 * dim).eval()
    nn.init.normal_(m.heads.head.weight)  # torchvision zero-initialises the classifier: outputs would be constant
    return m


# --- a slow reference of the documented rules ---------------------------------------------

def stable_lowest(values, k):
    return set(sorted(range(len(values)), key=lambda i: (values[i], i))[:k])


def head_entries(attn: MultiHeadSelfAttention, prefix: str, scores: dict, h: int) -> list[int]:
    """Every scored entry of head h, read element by element."""
    hd, out = attn.head_dim, []
    for p in ("q", "k", "v"):
        for a in ("weight", "bias"):
            s = scores.get(f"{prefix}.{p}.{a}".lstrip("."))
            if s is not None:
                for r in range(h * hd, (h + 1) * hd):
                    out += [int(v) for v in s[r].reshape(-1).tolist()]
    s = scores.get(f"{prefix}.proj.weight".lstrip("."))
    if s is not None:
        for c in range(h * hd, (h + 1) * hd):
            out += [int(v) for v in s[:, c].tolist()]
    return out


def head_reference(model, scores, sparsity, scope):
    """Removed heads {module: set} by loops, exact arithmetic (squared L2, or mean square globally)."""
    vals = {}
    for name, m in model.named_modules():
        if isinstance(m, MultiHeadSelfAttention):
            per = []
            for h in range(m.num_heads):
                e = head_entries(m, name, scores, h)
                per.append(Fraction(sum(v * v for v in e), len(e) if scope == "global" else 1))
            vals[name] = per
    if scope == "layer":
        return {n: stable_lowest(v, min(round(sparsity * len(v)), len(v) - 1)) for n, v in vals.items()}
    flat = [(v, n, i) for n, vs in vals.items() for i, v in enumerate(vs)]
    best = {n: max(range(len(v)), key=lambda i: (v[i], i)) for n, v in vals.items()}
    free = [j for j, (_, n, i) in enumerate(flat) if best[n] != i]
    k = min(round(sparsity * len(flat)), len(free))
    removed = {n: set() for n in vals}
    for j in sorted(free, key=lambda j: (flat[j][0], j))[:k]:
        removed[flat[j][1]].add(flat[j][2])
    return removed


def expected_masks(model, removed):
    """Masks built by hand: False on the q/k/v rows and proj columns of every removed head."""
    params = dict(model.named_parameters())
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, MultiHeadSelfAttention) and name in removed:
            hd = m.head_dim
            for p in ("q", "k", "v"):
                for a in ("weight", "bias"):
                    key = f"{name}.{p}.{a}"
                    if key in params:
                        mask = torch.ones_like(params[key], dtype=torch.bool)
                        for h in removed[name]:
                            mask[h * hd:(h + 1) * hd] = False
                        out[key] = mask
            mask = torch.ones_like(params[f"{name}.proj.weight"], dtype=torch.bool)
            for h in removed[name]:
                mask[:, h * hd:(h + 1) * hd] = False
            out[f"{name}.proj.weight"] = mask
    return out


def masked_heads(masks, model):
    """Removed heads read back from masks, checking every head is all in or all out."""
    out = {}
    for a in find_heads(model):
        gone = set()
        for h in range(a.num_heads):
            states = set()
            for s in a.slices:
                m = masks[s.param].movedim(s.dim, 0)
                for o in s.offsets:
                    states |= set(m[o + h * a.head_dim:o + (h + 1) * a.head_dim].reshape(-1).tolist())
            assert len(states) == 1, f"head {h} of {a.name} is partly removed"
            if states == {False}:
                gone.add(h)
        out[a.name] = gone
    return out


configs = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=3)


@settings(max_examples=80, deadline=None)
@given(configs=configs, sparsity=st.floats(0, 0.999), scope=st.sampled_from(["layer", "global"]),
       tied=st.booleans(), biases=st.booleans(), seed=st.integers(0, 2 ** 16))
@example(configs=[(1, 2, 2), (1, 3, 1)], sparsity=0.5, scope="global", tied=False, biases=False, seed=0)
@example(configs=[(4, 4, 3), (1, 3, 1)], sparsity=0.5, scope="global", tied=False, biases=True, seed=0)
def test_head_masks_match_reference(configs, sparsity, scope, tied, biases, seed):
    model = Attentions(configs)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.randint(0, 3 if tied else 50, p.shape, generator=g).float()
              for n, p in model.named_parameters() if biases or n.endswith("weight")}
    masks = pk.make_masks(scores, sparsity, "head", scope, model=model)
    removed = head_reference(model, scores, sparsity, scope)
    expected = expected_masks(model, removed)
    assert masks.keys() == expected.keys()  # every head parameter, biases too, scored or not
    for n in expected:
        assert torch.equal(masks[n], expected[n]), n
    heads = [m.num_heads for m in model.attns]
    gone = sum(len(r) for r in removed.values())
    if scope == "global":
        assert gone == min(round(sparsity * sum(heads)), sum(heads) - len(heads))
    assert all(len(removed[f"attns.{i}"]) < h for i, h in enumerate(heads))  # one head kept per module


# --- exact counts, slices, reductions ------------------------------------------------------

@pytest.mark.parametrize("sparsity, per_module, total", [(0.25, 1, 3), (0.5, 2, 6), (0.75, 3, 9), (0.9, 3, 9)])
def test_exact_head_counts_per_module_and_global(sparsity, per_module, total):
    torch.manual_seed(0)
    vit = TinyViT(depth=3, num_heads=4)
    scores = magnitude(vit)
    layer = masked_heads(pk.make_masks(scores, sparsity, "head", "layer", model=vit), vit)
    assert [len(v) for v in layer.values()] == [per_module] * 3  # round(s * 4), at most 3 of 4
    glob = masked_heads(pk.make_masks(scores, sparsity, "head", "global", model=vit), vit)
    assert sum(len(v) for v in glob.values()) == total  # min(round(s * 12), 12 - 3): one head per module stays
    assert all(len(v) <= 3 for v in glob.values())


def test_global_keeps_one_head_per_module_and_ranks_across_modules():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    scores = magnitude(vit)
    for n in scores:
        if n.startswith("blocks.0.attn"):
            scores[n] = scores[n] * 1e-3  # block 0's heads are all weaker than block 1's
    gone = masked_heads(pk.make_masks(scores, 0.5, "head", "global", model=vit), vit)
    assert len(gone["blocks.0.attn"]) == 3 and len(gone["blocks.1.attn"]) == 1  # 4 = round(0.5 * 8)
    block0 = pk.structured.heads.head_scores(find_heads(vit)[0], scores, "l2")
    assert set(range(4)) - gone["blocks.0.attn"] == {int(block0.argmax())}  # its best head stays
    block1 = pk.structured.heads.head_scores(find_heads(vit)[1], scores, "l2")
    assert gone["blocks.1.attn"] == {int(block1.argmin())}


def test_global_head_scores_are_normalised_by_head_size():
    """Module 0 has small heads scoring 1 everywhere, module 1 big heads scoring 0.5: by RMS module 1's
    heads are weaker (3 of them go, one stays); a raw L2 norm would favour the big heads instead."""
    model = Attentions([(4, 4, 1), (8, 4, 4)])
    scores = {n: torch.full(p.shape, 1.0 if n.startswith("attns.0") else 0.5) for n, p in model.named_parameters()}
    gone = masked_heads(pk.make_masks(scores, 0.5, "head", "global", model=model), model)
    assert gone == {"attns.0": {0}, "attns.1": {0, 1, 2}}
    raw = [pk.structured.heads.head_scores(a, scores, "l2")[0].item() for a in find_heads(model)]
    assert raw[0] < raw[1]  # sqrt(19) * 1 < sqrt(140) * 0.5


def test_torch_mha_head_slices():
    torch.manual_seed(0)
    m = small_torch_vit(heads=4, dim=32)  # head_dim 8
    pre = "encoder.layers.encoder_layer_0.self_attention"
    scores = pk.score(m, "magnitude", include=["*in_proj_weight", "*out_proj.weight"])
    masks = pk.make_masks(scores, 0.5, "head", "layer", model=m)
    assert {f"{pre}.in_proj_weight", f"{pre}.in_proj_bias", f"{pre}.out_proj.weight"} <= set(masks)
    assert f"{pre}.out_proj.bias" not in masks  # belongs to no head
    gone = masked_heads(masks, m)[pre]
    assert len(gone) == 2
    w, b, o = masks[f"{pre}.in_proj_weight"], masks[f"{pre}.in_proj_bias"], masks[f"{pre}.out_proj.weight"]
    for h in range(4):
        rows = [sec * 32 + h * 8 + i for sec in range(3) for i in range(8)]  # q, k and v sections
        assert bool(w[rows].all()) == (h not in gone) == bool(b[rows].all()) == bool(o[:, h * 8:(h + 1) * 8].all())
    assert int((~w).sum()) == 2 * 3 * 8 * 32 and int((~o).sum()) == 2 * 8 * 32
    # the head's score uses in_proj_weight's q, k, v rows and out_proj's columns
    a = find_heads(m)[0]
    w_s, o_s = scores[f"{pre}.in_proj_weight"], scores[f"{pre}.out_proj.weight"]
    expect = [math.sqrt(sum(float((w_s[sec * 32 + h * 8:sec * 32 + (h + 1) * 8] ** 2).sum()) for sec in range(3))
                        + float((o_s[:, h * 8:(h + 1) * 8] ** 2).sum())) for h in range(4)]
    got = pk.structured.heads.head_scores(a, scores, "l2")
    torch.testing.assert_close(got, torch.tensor(expect, dtype=got.dtype))
    assert set(gone) == set(sorted(range(4), key=lambda h: expect[h])[:2])


@pytest.mark.parametrize("reduction, expect", [
    ("l2", lambda e: math.sqrt(sum(v * v for v in e))), ("l1", lambda e: sum(abs(v) for v in e)),
    ("sum", sum), ("mean", lambda e: sum(e) / len(e)),
])
@pytest.mark.parametrize("normalise", [False, True])
def test_head_score_reductions(reduction, expect, normalise):
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(4, 2, 3)
    scores = {n: torch.randint(-9, 10, p.shape).double() for n, p in attn.named_parameters()}
    got = pk.structured.heads.head_scores(find_heads(attn)[0], scores, reduction, normalise)
    ref = []
    for h in range(2):
        e = head_entries(attn, "", scores, h)
        assert len(e) == 3 * (3 * 4 + 3) + 4 * 3
        r = expect(e)
        if normalise and reduction != "mean":
            r = r / math.sqrt(len(e)) if reduction == "l2" else r / len(e)
        ref.append(r)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=got.dtype))


def test_head_entries_prefix_for_a_bare_module():
    attn = MultiHeadSelfAttention(4, 2)
    assert [a.name for a in find_heads(attn)] == [""]
    assert find_heads(attn)[0].params == ["q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias",
                                          "proj.weight"]


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("fill", [0.0, -math.inf])
def test_idempotence(scope, fill):
    torch.manual_seed(1)
    vit = TinyViT(depth=2, num_heads=4)
    scores = magnitude(vit)
    masks = pk.make_masks(scores, 0.5, "head", scope, model=vit)
    again = pk.make_masks({n: s.masked_fill(~masks[n], fill) if n in masks else s for n, s in scores.items()},
                          0.5, "head", scope, model=vit)
    assert again.keys() == masks.keys() and all(torch.equal(again[n], masks[n]) for n in masks)


def test_per_module_sparsity_dict():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    masks = pk.make_masks(magnitude(vit), {"blocks.0.attn": 0.75, "blocks.1.attn": 0.0}, "head", "layer",
                          model=vit)
    assert [len(v) for v in masked_heads(masks, vit).values()] == [3, 0]


def test_parameters_outside_heads_are_ignored():
    vit = TinyViT(depth=1)
    masks = pk.make_masks(magnitude(vit), 0.5, "head", model=vit)
    assert all(".attn." in n for n in masks)
    only_proj = pk.make_masks({"blocks.0.attn.proj.weight": vit.blocks[0].attn.proj.weight.abs()}, 0.5, "head",
                              model=vit)  # one scored slice: the module takes part, every head parameter is masked
    assert set(only_proj) == {f"blocks.0.attn.{p}" for p in
                              ("q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias", "proj.weight")}


# --- masked model == compacted model ------------------------------------------------------

def test_compact_heads_tinyvit_equals_masked_model_and_drops_exact_parameters():
    torch.manual_seed(0)
    vit = TinyViT(depth=3, num_heads=4).eval()
    masks = pk.make_masks(magnitude(vit), 0.5, "head", "global", model=vit)
    pk.apply_masks(vit, masks)
    snap = snapshot(vit)
    x = torch.randn(4, 1, 8, 8)
    small = compact_heads(vit)
    assert_untouched(vit, snap)
    gone = masked_heads(masks, vit)
    assert removed_heads(vit) == {k: sorted(v) for k, v in gone.items()}
    assert [b.attn.num_heads for b in small.blocks] == [4 - len(v) for v in gone.values()]
    per_head = 3 * (32 * 8 + 8) + 32 * 8  # q/k/v rows with biases, proj columns
    assert find_heads(vit)[0].head_params() == per_head
    assert pk.count_params(vit) - pk.count_params(small) == 6 * per_head
    with torch.no_grad():
        out, ref = small(x), vit(x)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert not any(hasattr(m, "weight_mask") for m in small.modules())  # masks folded
    macs = pk.count_macs(vit, x)[0] - pk.count_macs(small, x)[0]
    assert macs > 0


def test_compact_heads_torchvision_vit_and_prune_again():
    m = small_torch_vit(layers=2, heads=4, dim=32)
    masks = pk.make_masks(pk.score(m, "magnitude"), 0.5, "head", "layer", model=m)
    pk.apply_masks(m, masks)
    x = torch.randn(2, 3, 32, 32)
    small = compact_heads(m)
    attn = small.encoder.layers[0].self_attention
    assert isinstance(attn, PrunedMultiheadAttention) and attn.num_heads == 2 and attn.batch_first
    assert attn.kept_heads == tuple(sorted(set(range(4)) - masked_heads(masks, m)[
        "encoder.layers.encoder_layer_0.self_attention"]))
    assert pk.count_params(m) - pk.count_params(small) == 4 * (3 * (32 * 8 + 8) + 32 * 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), m(x), rtol=0, atol=1e-5)
    # the compacted model's heads are found again and can be pruned and compacted once more
    assert [a.num_heads for a in find_heads(small)] == [2, 2]
    again = pk.make_masks(pk.score(small, "magnitude"), 0.5, "head", "layer", model=small)
    pk.apply_masks(small, again)
    smaller = compact_heads(small)
    assert [a.num_heads for a in find_heads(smaller)] == [1, 1]
    assert len(smaller.encoder.layers[1].self_attention.kept_heads) == 1
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), small(x), rtol=0, atol=1e-5)


def test_compact_heads_vit_b_16():
    torch.manual_seed(0)
    m = torchvision.models.vit_b_16().eval()
    nn.init.normal_(m.heads.head.weight, std=0.02)
    scores = pk.score(m, "magnitude", include=["*self_attention.in_proj_weight", "*self_attention.out_proj.weight"])
    masks = pk.make_masks(scores, 0.25, "head", "global", model=m)
    assert sum(len(v) for v in masked_heads(masks, m).values()) == 36  # round(0.25 * 144)
    pk.apply_masks(m, masks)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = m(x)
        small = compact_heads(m)
        out = small(x)
    assert pk.count_params(m) - pk.count_params(small) == 36 * (3 * (768 * 64 + 64) + 768 * 64)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kvdim", [None, (6, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_pruned_mha_is_a_drop_in_replacement(batch_first, kvdim, bias):
    torch.manual_seed(0)
    kdim, vdim = kvdim or (None, None)
    mha = nn.MultiheadAttention(12, 4, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first).eval()
    b, L, S = 2, 3, 5
    q = torch.randn(b, L, 12) if batch_first else torch.randn(L, b, 12)
    k = torch.randn(b, S, kdim or 12) if batch_first else torch.randn(S, b, kdim or 12)
    v = torch.randn(b, S, vdim or 12) if batch_first else torch.randn(S, b, vdim or 12)
    kpm = torch.tensor([[False, False, True, False, False], [False] * 5])
    kpm_float = torch.zeros(b, S).masked_fill(kpm, float("-inf"))
    am3 = torch.randn(b * 4, L, S)
    am2 = torch.rand(L, S) > 0.7
    am2[:, 0] = False
    full = PrunedMultiheadAttention.from_torch(mha, [0, 1, 2, 3]).eval()
    for kw in [{}, {"key_padding_mask": kpm}, {"attn_mask": am3}, {"attn_mask": am2, "key_padding_mask": kpm},
               {"attn_mask": am3, "key_padding_mask": kpm_float},
               {"need_weights": False}, {"average_attn_weights": False}]:
        o1, w1 = mha(q, k, v, **kw)
        o2, w2 = full(q, k, v, **kw)
        torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-6)
        assert (w1 is None) == (w2 is None)
        if w1 is not None:
            torch.testing.assert_close(w2, w1, rtol=1e-5, atol=1e-6)
    # remove heads 1 and 3 by masking their out-projection columns: same outputs as the masked module
    mask = torch.ones(12, 12, dtype=torch.bool)
    mask[:, 3:6] = mask[:, 9:12] = False
    pk.apply_masks(mha, {"out_proj.weight": mask})
    small = compact_heads(nn.Sequential(mha))[0]
    assert isinstance(small, PrunedMultiheadAttention) and small.kept_heads == (0, 2) and small.num_heads == 2
    for kw in [{}, {"attn_mask": am3, "key_padding_mask": kpm_float}]:
        torch.testing.assert_close(small(q, k, v, **kw)[0], mha(q, k, v, **kw)[0], rtol=1e-5, atol=1e-6)
    # unbatched input, as nn.MultiheadAttention accepts it
    torch.testing.assert_close(small(q[0] if batch_first else q[:, 0], k[0] if batch_first else k[:, 0],
                                     v[0] if batch_first else v[:, 0])[0],
                               mha(q[0] if batch_first else q[:, 0], k[0] if batch_first else k[:, 0],
                                   v[0] if batch_first else v[:, 0])[0], rtol=1e-5, atol=1e-6)


def test_masked_torch_mha_in_proj_weight():
    """apply_masks reparametrises in_proj_weight like any parameter; nn.MultiheadAttention's own
    pre-hook recomputes it before every forward, so a removed head's q/k/v are zero."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    scores = {"in_proj_weight": mha.in_proj_weight.detach().abs(), "out_proj.weight": mha.out_proj.weight.abs()}
    masks = pk.make_masks(scores, 0.5, "head", "layer", model=mha)
    pk.apply_masks(mha, masks)
    assert torch.nn.utils.prune.is_pruned(mha)
    gone = masked_heads(masks, mha)[""]
    h = next(iter(gone))
    rows = [sec * 8 + h * 4 + i for sec in range(3) for i in range(4)]
    assert not mha.in_proj_weight[rows].any() and not mha.in_proj_bias[rows].any()
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(compact_heads(mha)(x, x, x)[0], mha(x, x, x)[0], rtol=0, atol=1e-6)


def test_all_heads_zero_keeps_one():
    attn = MultiHeadSelfAttention(4, 2)
    with torch.no_grad():
        attn.proj.weight.zero_()
    assert removed_heads(attn) == {"": [1]}
    small = compact_heads(attn)
    x = torch.randn(1, 3, 4)
    assert small.num_heads == 1
    torch.testing.assert_close(small(x), attn(x))


# --- prune --------------------------------------------------------------------------------

def test_prune_heads_is_cumulative_and_never_unprunes():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    first = pk.prune(vit, 0.25, granularity="head", scope="layer")
    assert [len(v) for v in masked_heads(first, vit).values()] == [1, 1]
    second = pk.prune(vit, 0.5, granularity="head", scope="layer")
    g1, g2 = masked_heads(first, vit), masked_heads(second, vit)
    assert all(g1[n] < g2[n] and len(g2[n]) == 2 for n in g1)
    again = pk.prune(vit, 0.5, granularity="head", scope="layer")
    assert all(torch.equal(again[n], second[n]) for n in second)


def test_prune_heads_on_torchvision_vit():
    m = small_torch_vit()
    masks = pk.prune(m, 0.5, granularity="head")  # default targets: out_proj.weight of each nn.MultiheadAttention
    assert sum(len(v) for v in masked_heads(masks, m).values()) == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compact_heads(m)(x), m(x), rtol=0, atol=1e-5)


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, words", [
    (lambda v, s: pk.make_masks(magnitude(m := tiny_cnn()), 0.5, "head", model=m), ValueError,
     ["no attention heads", "channel"]),
    (lambda v, s: pk.make_masks(s, 0.5, "head"), ValueError, ["model=model"]),
    (lambda v, s: pk.make_masks(s, 0.5, "head", shapes={n: p.shape for n, p in v.named_parameters()}),
     ValueError, ["model=model"]),
    (lambda v, s: pk.make_masks({"head.weight": s["head.weight"]}, 0.5, "head", model=v), ValueError,
     ["none of the scored parameters", "include"]),
    (lambda v, s: pk.make_masks(s, 1.0, "head", model=v), ValueError, ["sparsity"]),
    (lambda v, s: pk.make_masks(s, {"blocks.0.attn": 0.5}, "head", "layer", model=v), ValueError,
     ["attention modules", "blocks.1.attn"]),
    (lambda v, s: pk.make_masks(s, {"blocks.0.attn": 0.5, "blocks.1.attn": 0.5}, "head", "global", model=v),
     ValueError, ["scope='layer'"]),
    (lambda v, s: pk.make_masks(s, 0.5, "head", "model", model=v), ValueError, ["scope"]),
    (lambda v, s: pk.make_masks(s, 0.5, "head", reduction="max", model=v), ValueError, ["reduction"]),
    (lambda v, s: pk.make_masks({**s, "blocks.0.attn.q.weight": torch.rand(32)}, 0.5, "head", model=v),
     ValueError, ["blocks.0.attn.q.weight", "finer granularity"]),
    (lambda v, s: head_masks(s, 0.5, None), ValueError, ["model=model"]),
])
def test_errors(call, exc, words):
    vit = TinyViT(depth=2)
    scores = magnitude(vit)
    snap = snapshot(vit)
    with pytest.raises(exc) as info:
        call(vit, scores)
    for w in words:
        assert w in str(info.value)
    assert_untouched(vit, snap)


def test_prune_without_heads_leaves_the_model_untouched():
    model = tiny_cnn()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="granularity 'head'"):
        pk.prune(model, 0.5, granularity="head")
    assert_untouched(model, snap)


def test_compact_heads_rejects_bias_kv():
    mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    with torch.no_grad():
        mha.out_proj.weight[:, :4] = 0
    with pytest.raises(ValueError, match="add_bias_kv"):
        compact_heads(mha)
    with pytest.raises(TypeError, match="model"):
        compact_heads("vit")


def test_masked_torch_mha_out_proj_follows_fine_tuning():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[:, :4] = False
    pk.apply_masks(mha, {"out_proj.weight": mask})
    with torch.no_grad():
        mha.out_proj.weight_orig.mul_(2)  # what an optimiser step does
    x = torch.randn(2, 3, 8)
    mha(x, x, x)
    assert torch.equal(mha.out_proj.weight, mha.out_proj.weight_orig * mha.out_proj.weight_mask)
    pk.remove_masks(mha)  # the refreshing hook goes with the last mask
    assert not mha._forward_pre_hooks


def test_torch_mha_with_kdim_vdim_uses_separate_projections():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 4, kdim=6, vdim=5)
    scores = {n: p.detach().abs() for n, p in mha.named_parameters()}
    masks = pk.make_masks(scores, 0.5, "head", "layer", model=mha)
    assert set(masks) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight"}
    gone = masked_heads(masks, mha)[""]
    assert len(gone) == 2
    for h in gone:
        for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            assert not masks[p][2 * h:2 * h + 2].any() and masks[p].shape == scores[p].shape
        assert not masks["in_proj_bias"][[2 * h, 8 + 2 * h, 16 + 2 * h]].any()
