"""Every channel rule of prunekit.core.graph.rules, on a small model with a known answer.

Each test masks chosen output rows, compacts, and checks the exact widths (or the exact
kept channels) and that the compacted model equals ``zero_removed_channels`` -- the
reference of the rule's documented semantics. ``register_rule`` is tested with a custom
module that has no built-in rule.
"""

import pytest
import torch
from torch import nn

from prunekit.core.graph import plan_channels, register_rule, unregister_rule
from prunekit.core.graph import ops, rules
from prunekit.structured.compact import compact, zero_removed_channels

from helpers import assert_untouched, check_compact, mask_rows, snapshot


def group_of(plan, producer: str) -> dict:
    return next(g for g in plan.groups if producer in g["producers"])


# --- conv_linear ---------------------------------------------------------------------------

def test_conv_and_linear_produce_and_consume():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4, 5), nn.ReLU(), nn.Linear(5, 2))
    mask_rows(model, "0.weight", [1, 4])
    mask_rows(model, "3.weight", [0])
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert (small[0].out_channels, small[3].in_features, small[3].out_features, small[5].in_features) == (4, 16, 4, 4)


def test_depthwise_conv_follows_its_input_and_does_not_vote():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 2, 1))
    mask_rows(model, "0.weight", [2, 3])
    mask_rows(model, "1.weight", [0])  # the depthwise conv alone does not remove channel 0
    small = check_compact(model, torch.randn(2, 3, 5, 5))
    assert (small[1].groups, small[1].out_channels, small[2].in_channels) == (4, 4, 4)


def test_grouped_conv_keeps_its_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 2, 1))
    mask_rows(model, "0.weight", [0, 1, 5])  # inputs: part 0 keeps 2, part 1 keeps 3 -> 3 each
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert (small[1].groups, small[1].in_channels, small[0].out_channels) == (2, 6, 6)


# --- norm ----------------------------------------------------------------------------------

def test_batchnorm_entries_are_members():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    with torch.no_grad():
        model[1].bias.uniform_(-1, 1)
        model[1].running_mean.uniform_(-1, 1)
    mask_rows(model, "0.weight", [1, 2])
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert small[1].num_features == small[1].running_var.numel() == 4


class Tokens(nn.Module):
    """[N, L, C] tokens: Linear stream, LayerNorm over the channels, an MLP, a residual sum."""

    def __init__(self, c=8, affine=True):
        super().__init__()
        self.embed, self.norm = nn.Linear(5, c), nn.LayerNorm(c, elementwise_affine=affine)
        self.fc1, self.fc2, self.head = nn.Linear(c, 12), nn.Linear(12, c), nn.Linear(c, 3)

    def forward(self, x):
        t = self.embed(x)
        t = t + self.fc2(torch.relu(self.fc1(self.norm(t))))
        return self.head(t.mean(1))


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_is_a_member_that_normalises_over_the_kept_channels(affine):
    torch.manual_seed(0)
    model = Tokens(affine=affine).eval()
    if affine:
        with torch.no_grad():
            model.norm.weight.uniform_(0.5, 1.5)
            model.norm.bias.uniform_(-1, 1)
    mask_rows(model, "embed.weight", [1, 6])
    mask_rows(model, "fc2.weight", [1, 3, 6])  # the stream loses 1 and 6 (both producers drop them)
    x = torch.randn(3, 4, 5)
    small = check_compact(model, x)
    assert small.norm.normalized_shape == (6,) and small.fc1.in_features == small.head.in_features == 6
    if affine:
        assert torch.equal(small.norm.weight, model.norm.weight[[0, 2, 3, 4, 5, 7]])
    plan = plan_channels(model, x[:1])
    g = group_of(plan, "embed")
    assert g["norms"] == ["norm"] and not g["fixed"] and (("norm.weight" in g["params"]) == affine)
    # the semantics, by hand: the kept channels normalised alone, the removed ones zero
    ref = zero_removed_channels(model, x[:1])
    with torch.no_grad():
        t = model.embed(x)
        kept = [0, 2, 3, 4, 5, 7]
        expected = torch.zeros_like(t)
        w = model.norm.weight[kept] if affine else None
        b = model.norm.bias[kept] if affine else None
        expected[..., kept] = nn.functional.layer_norm(t[..., kept], (6,), w, b, model.norm.eps)
        got = {}
        hook = ref.gm.fc1.register_forward_pre_hook(lambda m, a: got.setdefault("in", a[0]))
        ref(x)
        hook.remove()
    torch.testing.assert_close(got["in"], expected)


def test_groupnorm_is_a_barrier_and_keeps_its_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
    mask_rows(model, "0.weight", [0])
    with pytest.warns(UserWarning, match="GroupNorm"):
        small = compact(model, torch.randn(1, 3, 2, 2))
    assert small[0].out_channels == 4


# --- elementwise ---------------------------------------------------------------------------

@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.Hardtanh(), nn.Mish(), nn.Dropout(), nn.Identity(),
                                 nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)])
def test_zero_to_zero_operations_pass_the_channels(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 1), act, nn.Conv2d(5, 2, 1)).eval()
    mask_rows(model, "0.weight", [0, 3])
    assert check_compact(model, torch.randn(2, 3, 4, 4))[2].in_channels == 3


def test_reduction_over_the_spatial_dims_keeps_the_channels():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 5, 1), nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    model = mask_rows(M(), "conv.weight", [4])
    assert check_compact(model, torch.randn(2, 3, 4, 4)).fc.in_features == 4


def test_the_op_table_has_named_properties():
    assert ops.module_kind(nn.ReLU()).zero_to_zero and not ops.module_kind(nn.ReLU()).spatial_only
    assert ops.module_kind(nn.Sigmoid()).gate and not ops.module_kind(nn.ReLU()).gate
    assert ops.module_kind(nn.MaxPool2d(2)).spatial_only
    assert ops.module_kind(nn.Linear(2, 2)) is None


# --- reshape, permute, index/split ------------------------------------------------------------

class Patches(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.fc, self.head = nn.Conv2d(3, 6, 2, stride=2), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # reshape keeps the channels, transpose moves them
        t = t + self.fc(t)
        return self.head(t[:, 0])                    # indexing keeps the channels


def test_reshape_permute_and_indexing_move_the_channel_dim():
    torch.manual_seed(0)
    model = Patches().eval()
    mask_rows(model, "embed.weight", [0, 2])
    mask_rows(model, "fc.weight", [0, 2, 5])
    small = check_compact(model, torch.randn(2, 3, 4, 4))
    assert (small.embed.out_channels, small.fc.in_features, small.fc.out_features, small.head.in_features) == (4,) * 4


class Chunked(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.h1, self.h2 = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return self.h1(a) + self.h2(b)


def test_chunk_parts_keep_equal_counts():
    torch.manual_seed(0)
    model = mask_rows(Chunked(), "conv.weight", [0, 1, 4])  # parts keep 2 and 3 -> both keep 3
    small = check_compact(model, torch.randn(2, 3, 2, 2))
    assert (small.conv.out_channels, small.h1.in_channels, small.h2.in_channels) == (6, 3, 3)
    assert group_of(plan_channels(model, torch.randn(1, 3, 2, 2)), "conv")["kept"].tolist() == [0, 2, 3, 5, 6, 7]


# --- cat_add -------------------------------------------------------------------------------

class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 5, 1)
        self.head = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)  # side by side
        return self.head(y), self.c(x) + self.c.bias.view(1, -1, 1, 1) * 0


def test_cat_along_the_channels_keeps_each_parts_channels_at_its_offset():
    torch.manual_seed(0)
    model = Concat()
    mask_rows(model, "a.weight", [1])
    mask_rows(model, "b.weight", [0, 2])
    snap = snapshot(model)
    small = compact(model, torch.randn(1, 3, 2, 2))
    assert_untouched(model, snap)
    assert (small.a.out_channels, small.b.out_channels, small.head.in_channels) == (3, 1, 4)


class ViTLike(nn.Module):
    """Patch embedding, a class token (cat along the tokens), a position embedding (added), a
    LayerNorm'd MLP residual block, and a head on the class token: no attention."""

    def __init__(self, c=8):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, c, 2, stride=2)
        self.class_token = nn.Parameter(torch.randn(1, 1, c))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, c))
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 16), nn.Linear(16, c)
        self.ln_out, self.head = nn.LayerNorm(c), nn.Linear(c, 3)

    def forward(self, x):
        n = x.shape[0]
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.class_token.expand(n, -1, -1), t], dim=1) + self.pos_embedding
        t = t + self.fc2(nn.functional.gelu(self.fc1(self.ln(t))))
        return self.head(self.ln_out(t)[:, 0])


def test_class_token_and_position_embedding_are_members():
    torch.manual_seed(0)
    model = ViTLike().eval()
    mask_rows(model, "conv_proj.weight", [1, 5])
    mask_rows(model, "fc2.weight", [1, 2, 5])
    x = torch.randn(2, 3, 4, 4)
    small = check_compact(model, x)
    kept = [0, 2, 3, 4, 6, 7]
    assert small.class_token.shape == (1, 1, 6) and small.pos_embedding.shape == (1, 5, 6)
    assert torch.equal(small.class_token, model.class_token[..., kept])
    assert torch.equal(small.pos_embedding, model.pos_embedding[..., kept])
    assert small.ln.normalized_shape == small.ln_out.normalized_shape == (6,)
    g = group_of(plan_channels(model, x[:1]), "conv_proj")
    assert {"class_token", "pos_embedding", "ln.weight", "ln.bias"} <= set(g["params"])


def test_adding_a_constant_that_does_not_vary_along_the_channels_is_a_barrier():
    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
            self.register_buffer("offset", torch.ones(1, 1, 1, 1))

        def forward(self, x):
            return self.head(self.conv(x) + self.offset)

    model = mask_rows(Offset(), "conv.weight", [0])
    with pytest.warns(UserWarning, match="addition"):
        assert compact(model, torch.randn(1, 3, 2, 2)).conv.out_channels == 4


# --- gate ----------------------------------------------------------------------------------

class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.squeeze, self.excite = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1), nn.Conv2d(2, 6, 1)
        self.scale = nn.Parameter(torch.rand(6, 1, 1) + 0.5)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        g = torch.sigmoid(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        return self.head(self.scale * (g * y))


def test_gate_follows_the_data_and_a_parameter_scale_is_a_member():
    torch.manual_seed(0)
    model = mask_rows(SE(), "conv.weight", [0, 4])
    plan = plan_channels(model, torch.randn(1, 3, 2, 2))
    assert any(g["followers"] == ["excite"] for g in plan.groups)
    small = check_compact(model, torch.randn(2, 3, 3, 3))
    assert (small.excite.out_channels, small.squeeze.in_channels, small.scale.shape[0]) == (4, 4, 4)


# --- attention -----------------------------------------------------------------------------

class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(5, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        t = self.embed(x)
        return self.head(self.attn(t, t, t, need_weights=False)[0])


def test_attention_is_a_barrier_and_its_output_a_fixed_space():
    torch.manual_seed(0)
    model = mask_rows(Attn().eval(), "embed.weight", [0])
    with pytest.warns(UserWarning, match="attention"):
        small = compact(model, torch.randn(1, 3, 5))
    assert small.embed.out_features == 8
    plan = plan_channels(model, torch.randn(1, 3, 5))
    assert group_of(plan, "embed")["fixed"]


# --- the registry --------------------------------------------------------------------------

class Scale(nn.Module):
    """A custom per-channel layer: ``y = x * s`` (``s`` of shape [C, 1, 1]) -- not a torch.nn
    module, so torch.fx treats it as a leaf only when told; here it is a leaf via the tracer."""

    def __init__(self, c):
        super().__init__()
        self.s = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x):
        return x * self.s


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.scale, self.head = nn.Conv2d(3, 5, 1), Scale(5), nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(self.scale(self.conv(x)))


def test_register_rule_for_a_custom_leaf_module(monkeypatch):
    import torch.fx as fx
    real = fx.Tracer.is_leaf_module
    monkeypatch.setattr(fx.Tracer, "is_leaf_module",
                        lambda self, m, q: isinstance(m, Scale) or real(self, m, q))
    torch.manual_seed(0)
    model = mask_rows(Custom(), "conv.weight", [1, 3])
    x = torch.randn(2, 3, 2, 2)
    with pytest.warns(UserWarning, match="Scale"):  # no rule: a barrier, the channels are kept
        assert compact(model, x[:1]).conv.out_channels == 5

    def scale(tr, node, args):
        """Scale keeps its input's channels; ``s`` is sliced with them."""
        tr.member_param(f"{node.target}.s", 0, args[0])
        return tr.passthrough(node, args[0])

    register_rule(Scale, scale)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_rule(Scale, scale)
        small = check_compact(model, x)
        assert small.conv.out_channels == small.scale.s.shape[0] == small.head.in_channels == 3
    finally:
        unregister_rule(Scale)
    assert rules.lookup is not None


def test_register_rule_checks_its_arguments():
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_rule(int, lambda *a: None)
    with pytest.raises(TypeError, match="callable"):
        register_rule(Scale, "not a function")
    with pytest.raises(ValueError, match="kind"):
        register_rule("relu", lambda *a: None, kind="tensor")
    with pytest.raises(ValueError, match="already registered"):
        register_rule(nn.ReLU, lambda *a: None)


def test_every_builtin_rule_has_a_docstring():
    tables = (rules._MODULES, rules._MODULE_NAMES, rules._FUNCTIONS, rules._FUNCTION_NAMES, rules._METHODS)
    fns = {r.fn for t in tables for r in t.values()}
    assert len(fns) >= 14
    for fn in fns:
        assert fn.__doc__ and len(fn.__doc__) > 40, fn.__name__


class LayerNorm2d(nn.LayerNorm):  # torchvision's: permute, functional layer_norm, permute back
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize("norm", [LayerNorm2d(6), "rms"])
def test_functional_layernorm_and_rmsnorm_are_members(norm):
    torch.manual_seed(0)
    if norm == "rms":
        model = nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Linear(6, 2))
        x = torch.randn(3, 4)
    else:
        model = nn.Sequential(nn.Conv2d(3, 6, 1), norm, nn.Conv2d(6, 2, 1))
        x = torch.randn(2, 3, 3, 3)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        if getattr(model[1], "bias", None) is not None:
            model[1].bias.uniform_(-1, 1)
    mask_rows(model, "0.weight", [1, 4])
    small = check_compact(model, x)
    assert tuple(small[1].normalized_shape) == (4,) and small[1].weight.shape == (4,)
