"""Michel et al.'s gradient head importance (prunekit.structured.heads.head_importance) and pruning
with head scores (head_masks_from_importance): known answers, an independent
finite-difference reference on our attention and on torch's nn.MultiheadAttention, the
model left untouched, agreement with granularity="head", errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.structured.heads import (compact_heads, find_heads, head_importance, head_masks,
                                head_masks_from_importance, head_scores)
from prunekit.models import MultiHeadSelfAttention, TinyViT


class Attn(nn.Module):
    """One attention module on [batch, tokens, dim] inputs, outputs as they are."""

    def __init__(self, dim=8, heads=4, head_dim=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.attn = MultiHeadSelfAttention(dim, heads, head_dim)

    def forward(self, x):
        return self.attn(x)


def token_batches(n_batches=2, batch=5, tokens=6, dim=8, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, tokens, dim, generator=g, dtype=dtype),
             torch.randn(batch, tokens, dim, generator=g, dtype=dtype)) for _ in range(n_batches)]


def linear_loss(out, target):
    return (out * target).sum()  # linear in the output: dL/d(gate) is the head's own term


def digit_batches(n_batches=2, batch=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n_batches)]


def head_columns(a, h):
    return slice(h * a.head_dim, (h + 1) * a.head_dim)


def out_weight_of(module):
    return module.proj.weight if isinstance(module, MultiHeadSelfAttention) else module.out_proj.weight


def finite_difference_importance(model, data, loss_fn, eps=1e-6):
    """E_x |dL(x)/d xi_h|, with the gate xi_h = 1 realised by scaling head h's columns of the
    out-projection (the same as scaling its output), by central differences, one example at
    a time, in float64. Independent of head_importance's hooks and copies."""
    model = copy.deepcopy(model).double().eval()
    out = {}
    for a in find_heads(model):
        w = out_weight_of(a.module)
        total = torch.zeros(a.num_heads, dtype=torch.float64)
        rows = 0
        for x, y in data:
            for i in range(x.shape[0]):
                xi, yi = x[i:i + 1].double(), y[i:i + 1]
                yi = yi.double() if yi.is_floating_point() else yi
                for h in range(a.num_heads):
                    losses = []
                    for scale in (1 + eps, 1 - eps):
                        with torch.no_grad():
                            w[:, head_columns(a, h)] *= scale
                            losses.append(loss_fn(model(xi), yi).item())
                            w[:, head_columns(a, h)] /= scale
                    total[h] += abs(losses[0] - losses[1]) / (2 * eps)
                rows += 1
        out[a.name] = total / rows
    return out


def summed_ce(out, y):
    return F.cross_entropy(out, y, reduction="sum")


# --- known answers ---------------------------------------------------------------------------

def test_linear_loss_known_answer():
    """With a loss linear in the output, dL/d xi_h is head h's own contribution to the loss,
    which the module computes alone when the other heads' out-projection columns are zero."""
    model = Attn()
    data = token_batches()
    got = head_importance(model, data, loss_fn=linear_loss, normalize=False)["attn"]
    a = find_heads(model)[0]
    expected = torch.zeros(4, dtype=torch.float64)
    for h in range(4):
        alone = copy.deepcopy(model)
        with torch.no_grad():
            keep = torch.zeros(alone.attn.proj.weight.shape[1], dtype=torch.bool)
            keep[head_columns(a, h)] = True
            alone.attn.proj.weight[:, ~keep] = 0
            alone.attn.proj.bias.zero_()
            for x, t in data:
                expected[h] += (alone(x) * t).sum(dim=(1, 2)).abs().sum().double()  # |.| per example
    expected /= 10
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-6)


def test_zeroed_head_has_importance_zero():
    model = Attn()
    with torch.no_grad():
        model.attn.v.weight[3:6] = 0  # head 1's values: its output A_1 is zero
        model.attn.v.bias[3:6] = 0
        model.attn.proj.weight[:, 9:12] = 0  # head 3's output reaches nothing
    imp = head_importance(model, token_batches(), loss_fn=linear_loss, normalize=False)["attn"]
    assert imp[1] == 0 and imp[3] == 0
    assert imp[0] > 0 and imp[2] > 0


def test_the_only_connected_head_dominates():
    model = Attn()
    with torch.no_grad():
        for h in (0, 1, 3):
            model.attn.proj.weight[:, h * 3:(h + 1) * 3] = 0
    imp = head_importance(model, token_batches(), loss_fn=linear_loss)["attn"]
    assert torch.equal(imp, torch.tensor([0.0, 0.0, 1.0, 0.0]))  # normalised: l2 norm 1


def test_a_scaled_up_head_is_more_important():
    model = Attn()
    data = token_batches()
    before = head_importance(model, data, loss_fn=linear_loss, normalize=False)["attn"]
    with torch.no_grad():
        model.attn.proj.weight[:, 0:3] *= 1000
    after = head_importance(model, data, loss_fn=linear_loss, normalize=False)["attn"]
    assert int(after.argmax()) == 0
    assert torch.allclose(after[0], 1000 * before[0], rtol=1e-4)  # linear loss: exactly proportional
    assert torch.allclose(after[1:], before[1:], rtol=1e-5)


# --- the gate formulation against finite differences ----------------------------------------

def test_matches_finite_differences_tinyvit_cross_entropy():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    data = digit_batches()
    got = head_importance(vit.double(), [(x.double(), y) for x, y in data], normalize=False)
    ref = finite_difference_importance(vit, data, summed_ce)
    assert got.keys() == ref.keys() == {"blocks.0.attn", "blocks.1.attn"}
    for n in ref:
        assert torch.allclose(got[n].double(), ref[n], rtol=1e-4, atol=1e-7), n


def test_matches_finite_differences_torch_multihead_attention():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=16, mlp_dim=32).double().eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-initialises the classifier
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 1000, (3,), generator=g))
            for _ in range(2)]
    got = head_importance(vit, data, normalize=False)
    ref = finite_difference_importance(vit, data, summed_ce)
    assert list(got) == [a.name for a in find_heads(vit)] and len(got) == 2
    for n in ref:
        assert torch.allclose(got[n].double(), ref[n], rtol=1e-4, atol=1e-7), n


def test_batch_first_false_mha_and_per_example_absolute_value():
    """A bare nn.MultiheadAttention (batch second): the gate is per example, so the score is
    the mean of per-example |dL/d xi|, not |mean| (which a linear loss with opposite signs
    would cancel)."""
    torch.manual_seed(0)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2)

        def forward(self, x):  # x: [batch, tokens, 8]
            x = x.transpose(0, 1)
            return self.mha(x, x, x, need_weights=False)[0].transpose(0, 1)

    model = Wrap().double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    t = torch.randn(1, 5, 8, dtype=torch.float64)
    data = [(torch.cat([x, x]), torch.cat([t, -t]))]  # two examples whose gradients cancel
    imp = head_importance(model, data, loss_fn=linear_loss, normalize=False)["mha"]
    single = head_importance(model, [(x, t)], loss_fn=linear_loss, normalize=False)["mha"]
    assert torch.allclose(imp, single) and bool((single > 0).all())
    ref = finite_difference_importance(model, data, linear_loss)["mha"]
    assert torch.allclose(imp.double(), ref, rtol=1e-4)


def test_normalisation_is_per_module_l2():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    data = digit_batches()
    raw = head_importance(vit, data, normalize=False)
    norm = head_importance(vit, data)
    for n in raw:
        assert torch.allclose(norm[n], raw[n] / raw[n].norm(), rtol=1e-5)
        assert torch.allclose(norm[n].norm(), torch.tensor(1.0))


def test_masked_model_removed_heads_zero_and_kept_heads_as_compacted():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    pk.prune(vit, 0.5, granularity="head", scope="layer")
    data = digit_batches()
    imp = head_importance(vit, data, normalize=False)
    small = head_importance(compact_heads(vit), data, normalize=False)
    for n, gone in pk.structured.heads.removed_heads(vit).items():
        assert len(gone) == 2 and all(imp[n][h] == 0 for h in gone)
        kept = [h for h in range(4) if h not in gone]
        assert torch.allclose(imp[n][kept], small[n], rtol=1e-4, atol=1e-8)


def test_language_model_shaped_outputs_use_token_cross_entropy():
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(11, 8)
            self.attn = MultiHeadSelfAttention(8, 2)
            self.out = nn.Linear(8, 11)

        def forward(self, tokens):
            return self.out(self.attn(self.emb(tokens)))  # [B, T, vocab]

    lm = TinyLM()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    default = head_importance(lm, [(tokens, targets)], normalize=False)["attn"]

    def explicit(out, y):
        return F.cross_entropy(out.reshape(-1, 11), y.reshape(-1), reduction="sum")

    assert torch.allclose(default, head_importance(lm, [(tokens, targets)], loss_fn=explicit,
                                                   normalize=False)["attn"])
    per_example = head_importance(lm, [(tokens, targets)], normalize=False,
                                  loss_fn=lambda o, y: F.cross_entropy(o.transpose(1, 2), y,
                                                                       reduction="none").sum(1))["attn"]
    assert torch.allclose(default, per_example, rtol=1e-5)


# --- the model is left as it was -------------------------------------------------------------

def test_model_untouched():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    pk.prune(vit, 0.3, include="*fc1.weight")  # masked parameters and their hooks
    vit.train()
    vit.blocks[1].eval()  # mixed modes
    vit.blocks[0].attn.q.weight.requires_grad_(False)
    vit.blocks[1].attn.proj.weight.grad = torch.ones_like(vit.blocks[1].attn.proj.weight)
    modes = [m.training for m in vit.modules()]
    flags = [p.requires_grad for p in vit.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in vit.parameters()]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in vit.modules()]
    snap = snapshot(vit)
    head_importance(vit, digit_batches())
    assert_untouched(vit, snap)
    assert [m.training for m in vit.modules()] == modes
    assert [p.requires_grad for p in vit.parameters()] == flags
    for p, g in zip(vit.parameters(), grads):
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in vit.modules()] == hooks
    assert type(vit.blocks[0].attn) is MultiHeadSelfAttention


def test_torch_mha_model_untouched():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                               hidden_dim=8, mlp_dim=16)
    snap = snapshot(vit)
    head_importance(vit, [(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))])
    assert_untouched(vit, snap)
    assert vit.training
    assert isinstance(vit.encoder.layers[0].self_attention, nn.MultiheadAttention)


# --- pruning with head scores -----------------------------------------------------------------

@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_head_masks_from_importance_agrees_with_granularity_head(scope, sparsity):
    """Given the scores that granularity="head" computes, the masks are the same."""
    torch.manual_seed(0)
    vit = TinyViT(depth=3, num_heads=4)
    scores = pk.score(vit, "magnitude")
    per_head = {a.name: head_scores(a, scores, "l2", normalise=scope == "global") for a in find_heads(vit)}
    got = head_masks_from_importance(per_head, sparsity, vit, scope=scope)
    expected = head_masks(scores, sparsity, vit, scope=scope)
    assert got.keys() == expected.keys()
    for n in expected:
        assert torch.equal(got[n], expected[n]), n


def test_prune_with_importance_then_compact():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    with torch.no_grad():
        vit.blocks[0].attn.proj.weight[:, 8:16] = 0  # head 1 of block 0 does nothing
    data = digit_batches()
    imp = head_importance(vit, data)
    assert imp["blocks.0.attn"][1] == 0
    masks = head_masks_from_importance(imp, 0.5, vit, scope="layer")
    for a in find_heads(vit):
        cols = masks[f"{a.name}.proj.weight"].reshape(-1, 4, 8)[0].all(-1)
        assert int(cols.sum()) == 2
        assert cols.tolist() == [bool(v) for v in (imp[a.name] >= imp[a.name].sort().values[2])]
    assert not masks["blocks.0.attn.proj.weight"][:, 8:16].any()
    pk.apply_masks(vit, masks)
    x = torch.randn(3, 1, 8, 8)
    small = compact_heads(vit)
    assert [b.attn.num_heads for b in small.blocks] == [2, 2]
    assert torch.allclose(small(x), vit(x), atol=1e-6)


def test_importance_of_a_subset_of_modules_and_per_module_sparsity():
    torch.manual_seed(0)
    vit = TinyViT(depth=2, num_heads=4)
    imp = {"blocks.1.attn": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    masks = head_masks_from_importance(imp, {"blocks.1.attn": 0.75}, vit, scope="layer")
    assert all(n.startswith("blocks.1.attn.") for n in masks)
    assert masks["blocks.1.attn.proj.weight"].reshape(-1, 4, 8)[0].all(-1).tolist() == [True, False, False, False]


def test_torch_mha_importance_prunes_and_compacts():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=16, mlp_dim=32).eval()
    nn.init.normal_(vit.heads.head.weight)
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,)))]
    masks = head_masks_from_importance(head_importance(vit, data), 0.5, vit, scope="layer")
    pk.apply_masks(vit, masks)
    small = compact_heads(vit)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(small(x), vit(x), atol=1e-5)
    assert [len(g) for g in pk.structured.heads.removed_heads(vit).values()] == [2, 2]


# --- errors -----------------------------------------------------------------------------------

def vit_and_data():
    torch.manual_seed(0)
    return TinyViT(depth=1, num_heads=2), digit_batches(n_batches=1)


@pytest.mark.parametrize("call, exc, words", [
    (lambda m, d: head_importance("model", d), TypeError, "model must be a torch.nn.Module"),
    (lambda m, d: head_importance(tiny_cnn(), d), ValueError, "no attention heads"),
    (lambda m, d: head_importance(m, None), TypeError, "iterable of (inputs, targets)"),
    (lambda m, d: head_importance(m, torch.zeros(3)), TypeError, "iterable of (inputs, targets)"),
    (lambda m, d: head_importance(m, 5), TypeError, "iterable of (inputs, targets)"),
    (lambda m, d: head_importance(m, []), ValueError, "no batches"),
    (lambda m, d: head_importance(m, [torch.zeros(2, 1, 8, 8)]), ValueError, "(inputs, targets) pairs"),
    (lambda m, d: head_importance(m, d, loss_fn="ce"), TypeError, "loss_fn must be a callable"),
    (lambda m, d: head_importance(m, d, loss_fn=lambda o, y: 1.0), ValueError, "floating-point tensor"),
    (lambda m, d: head_importance(m, d, normalize="yes"), TypeError, "normalize"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.ones(2)}, 0.5, "m"), TypeError, "Module"),
    (lambda m, d: head_masks_from_importance([1.0, 2.0], 0.5, m), TypeError, "importance must be a dict"),
    (lambda m, d: head_masks_from_importance({"blocks.9.attn": torch.ones(2)}, 0.5, m), ValueError,
     "not attention modules"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.ones(3)}, 0.5, m), ValueError, "has 2 heads"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.tensor([1.0, float("nan")])}, 0.5, m),
     ValueError, "NaN"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.ones(2)}, 1.0, m), ValueError, "[0, 1)"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.ones(2)}, 0.5, m, scope="all"), ValueError,
     "scope"),
    (lambda m, d: head_masks_from_importance({"blocks.0.attn": torch.ones(2)}, 0.5, tiny_cnn()), ValueError,
     "no attention heads"),
])
def test_errors(call, exc, words):
    model, data = vit_and_data()
    model.train()
    snap = snapshot(model)
    with pytest.raises(exc) as err:
        call(model, data)
    assert words in str(err.value)
    assert_untouched(model, snap)
    assert model.training


def test_bias_kv_is_refused_clearly():
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x)[0].sum(1)

    with pytest.raises(ValueError, match="add_bias_kv"):
        head_importance(Wrap(), [(torch.randn(2, 3, 8), torch.tensor([0, 1]))])
