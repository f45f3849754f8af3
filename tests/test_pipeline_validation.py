"""Issue 14 (hostile input): sparsity rounding never empties a pool, hostile sparsities and
scopes, argument errors before the criterion runs, OBD's labels, meta and lazy models."""

from __future__ import annotations

import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot
from prunekit.criteria import api
from prunekit.structured.layers import find_blocks
from prunekit.models import ResNet, TinyViT


def mlp(seed: int = 0) -> nn.Module:
    """The issue's 192-weight model: 8 -> 16 -> 4."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def mlp_data() -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 8, generator=g), torch.randint(0, 4, (6,), generator=g))]


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet(widths=(8, 16)).eval()


def resnet_data() -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 16, 16, generator=g), torch.randint(0, 10, (2,), generator=g))]


# --------------------------------------------------------------- 1. never everything

sparsities = st.floats(0.0, 1.0, exclude_max=True)


@st.composite
def score_dicts(draw, tile=(1, 1)):
    """1-3 small tensors whose shapes are multiples of ``tile``, with or without ties."""
    r, c = tile
    tied = draw(st.booleans())
    out = {}
    for i in range(draw(st.integers(1, 3))):
        shape = (r * draw(st.integers(1, 3)), c * draw(st.integers(1, 3)))
        n = shape[0] * shape[1]
        vals = draw(st.lists(st.integers(0, 2) if tied else st.floats(-10, 10, allow_nan=False),
                             min_size=n, max_size=n))
        out[f"l{i}.weight"] = torch.tensor(vals, dtype=torch.float32).view(shape)
    return out


def removed(mask: torch.Tensor) -> int:
    return int((~mask).sum())


@settings(max_examples=150)
@given(scores=score_dicts(), sparsity=sparsities)
def test_layer_scope_keeps_a_weight_of_every_tensor_counts_exact_otherwise(scores, sparsity):
    masks = pk.make_masks(scores, sparsity, "unstructured", "layer")
    for name, s in scores.items():
        assert masks[name].any(), name
        assert removed(masks[name]) == min(round(sparsity * s.numel()), s.numel() - 1)
        # the one kept is the best (the last of a stable ascending sort)
        if removed(masks[name]) == s.numel() - 1:
            assert masks[name].reshape(-1)[torch.sort(s.reshape(-1), stable=True).indices[-1]]


@settings(max_examples=150)
@given(scores=score_dicts(), sparsity=sparsities, scope=st.sampled_from(["layer", "global"]))
def test_channels_keep_one_per_tensor_in_either_scope(scores, sparsity, scope):
    masks = pk.make_masks(scores, sparsity, "channel", scope)
    n = sum(s.shape[0] for s in scores.values())
    gone = 0
    for name, s in scores.items():
        rows = masks[name].all(dim=1)
        assert rows.any(), name
        assert torch.equal(rows, masks[name].any(dim=1))  # whole rows
        gone += int((~rows).sum())
        if scope == "layer":
            assert int((~rows).sum()) == min(round(sparsity * s.shape[0]), s.shape[0] - 1)
    if scope == "global":
        assert gone == min(round(sparsity * n), n - len(scores))


@settings(max_examples=100)
@given(data=st.data(), sparsity=sparsities, scope=st.sampled_from(["layer", "global"]))
def test_block_tiles_never_all_removed(data, sparsity, scope):
    tile = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    scores = data.draw(score_dicts(tile))
    masks = pk.make_masks(scores, sparsity, f"block:{tile[0]}x{tile[1]}", scope)
    size = tile[0] * tile[1]
    tiles = {n: s.numel() // size for n, s in scores.items()}
    if scope == "layer":
        for name in scores:
            assert masks[name].any(), name
            assert removed(masks[name]) // size == min(round(sparsity * tiles[name]), tiles[name] - 1)
    else:
        total = sum(tiles.values())
        assert sum(removed(m) for m in masks.values()) // size == min(round(sparsity * total), total - 1)


@settings(max_examples=100)
@given(scores=score_dicts(), sparsity=sparsities)
def test_global_scope_never_removes_every_weight(scores, sparsity):
    """Global ranking may empty a tensor (layer collapse, as torch's global_unstructured),
    but never all of them: at most N - 1 of N weights go."""
    masks = pk.make_masks(scores, sparsity, "unstructured", "global")
    n = sum(s.numel() for s in scores.values())
    assert sum(removed(m) for m in masks.values()) == min(round(sparsity * n), n - 1)
    assert any(m.any() for m in masks.values())


@settings(max_examples=60)
@given(out=st.integers(1, 3), inp=st.integers(1, 3), sparsity=st.floats(5 / 9, 1.0, exclude_max=True))
def test_pattern_keeps_a_kernel_of_every_layer(out, inp, sparsity):
    torch.manual_seed(0)
    mask = pk.make_masks({"c.weight": torch.rand(out, inp, 3, 3)}, sparsity, "pattern")["c.weight"]
    kernels = mask.reshape(out * inp, 9).any(dim=1)
    assert kernels.any()
    assert int((~kernels).sum()) == min(pk.allocation.pattern_kernel_count(out * inp, sparsity), out * inp - 1)


@pytest.mark.parametrize("sparsity", [0.999, 0.9999999])
def test_the_issues_192_weight_model_is_never_emptied(sparsity):
    model = mlp()
    assert sum(m.weight.numel() for m in model if isinstance(m, nn.Linear)) == 192
    masks = pk.prune(model, sparsity, scope="layer")
    assert [int(m.sum()) for m in masks.values()] == [1, 1]
    assert all(int(m.sum()) == 1 for m in pk.get_masks(model).values())
    masks = pk.prune(mlp(), sparsity)  # global: one weight of the 192 survives, not none
    assert sum(int(m.sum()) for m in masks.values()) == 1


def test_layer_granularity_keeps_a_block():
    torch.manual_seed(0)
    v = TinyViT(depth=2).eval()
    blocks = find_blocks(v)
    masks = pk.make_masks(pk.score(v, "magnitude"), 0.999, "layer", model=v)
    kept = [b.name for b in blocks if masks[b.params[0]].all()]
    assert len(kept) == 1


# ------------------------------------------------------- 2. hostile sparsity values

BAD_SPARSITIES = [
    (10 ** 400, ValueError), (-10 ** 400, ValueError), (1, ValueError), (-1, ValueError), (1.0, ValueError),
    (float("nan"), ValueError), (float("inf"), ValueError), (float("-inf"), ValueError), (Fraction(3, 2), ValueError),
    (True, TypeError), (False, TypeError), ("0.5", TypeError), (0.5 + 0j, TypeError), (torch.tensor(0.5), TypeError),
    ([0.5], TypeError), (None, TypeError),
]


@pytest.mark.parametrize("value, exc", BAD_SPARSITIES, ids=lambda v: repr(v)[:20])
def test_bad_sparsity_is_a_clear_error(value, exc):
    model = mlp()
    snap = snapshot(model)
    with pytest.raises(exc, match="sparsity") as info:
        pk.prune(model, value)
    assert len(str(info.value)) < 300  # a 400-digit number is shortened
    assert_untouched(model, snap)
    with pytest.raises(exc, match="sparsity"):
        pk.make_masks({"w": torch.rand(4, 4)}, value)
    with pytest.raises(exc, match=r"sparsity\['0.weight'\]"):  # the same value inside a dict
        pk.prune(model, {"0.weight": value, "2.weight": 0.5}, scope="layer")
    assert_untouched(model, snap)


@pytest.mark.parametrize("value, exc, words", [
    ({"0.weight": 0.5}, ValueError, ["missing ['2.weight']"]),
    ({"0.weight": 0.5, "2.weight": 0.5, "4.weight": 0.5}, ValueError, ["unknown ['4.weight']"]),
    ({"0.weight": 0.5, "2.weight": 0.5, 3: 0.5}, TypeError, ["keys", "3"]),
    ({"0.weight": 0.5, "2.weight": 0.5, None: 0.5, "zz": 0.5}, TypeError, ["keys", "None"]),
    ({}, ValueError, ["missing"]),
])
def test_bad_sparsity_dict_names(value, exc, words):
    model = mlp()
    snap = snapshot(model)
    for call in (lambda: pk.prune(model, value, scope="layer"),
                 lambda: pk.make_masks(pk.score(model, "magnitude"), value, scope="layer")):
        with pytest.raises(exc, match="sparsity") as info:
            call()
        for w in words:
            assert w in str(info.value)
    with pytest.raises(ValueError, match="scope='layer'"):
        pk.prune(model, {"0.weight": 0.5, "2.weight": 0.5})
    assert_untouched(model, snap)


@settings(max_examples=100)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 500, 10 ** 500),
                       st.fractions(), st.booleans(), st.text(max_size=3), st.complex_numbers()))
def test_any_number_is_accepted_exactly_in_0_1_else_named_error(value):
    try:
        got = pk.allocation.check_sparsity(value)
    except (TypeError, ValueError) as e:
        assert "sparsity" in str(e)
        assert isinstance(value, (bool, str, complex)) or not 0 <= value < 1 or math.isnan(value)
    else:
        assert not isinstance(value, bool) and 0 <= value < 1 and got == float(value)


# -------------------------------------------------------------- 3. scope, any case

@pytest.mark.parametrize("scope", ["Global", "GLOBAL", " layer ", "Layer"])
def test_scope_is_case_insensitive_like_granularity_and_criterion(scope):
    canonical = scope.strip().lower()
    scores = pk.score(mlp(), "magnitude")
    for gran in ("unstructured", "channel", "block:2x2"):
        got = pk.make_masks(scores, 0.6, gran, scope)
        want = pk.make_masks(scores, 0.6, gran, canonical)
        assert all(torch.equal(got[n], want[n]) for n in want)
    a, b = mlp(), mlp()
    got = pk.prune(a, 0.6, "MAGNITUDE", "Unstructured", scope)
    want = pk.prune(b, 0.6, "magnitude", "unstructured", canonical)
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_scope_case_on_the_group_path_changes_nothing():
    x = torch.randn(1, 3, 16, 16)
    a, b = resnet(), resnet()
    got = pk.prune(a, 0.5, granularity="channel", scope="Global", example_inputs=x)
    want = pk.prune(b, 0.5, granularity="channel", scope="global", example_inputs=x)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("scope, exc", [("globl", ValueError), ("", ValueError), (None, TypeError), (1, TypeError),
                                        (["layer"], TypeError)])
def test_bad_scope_is_a_clear_error(scope, exc):
    model = mlp()
    snap = snapshot(model)
    with pytest.raises(exc, match="scope"):
        pk.prune(model, 0.5, scope=scope)
    with pytest.raises(exc, match="scope"):
        pk.make_masks({"w": torch.rand(4)}, 0.5, scope=scope)
    assert_untouched(model, snap)


# ------------------------------------------- 4. argument errors before the criterion

@pytest.fixture
def spy():
    """Two data-driven criteria (weight- and channel-level) that record every call."""
    calls: list[str] = []

    @api.register("spy_weight", description="|w|, recording its calls", needs_data=True)
    def spy_weight(model, targets, data, **kwargs):
        calls.append("spy_weight")
        return {t.name: t.tensor.detach().abs() for t in targets}

    @api.register("spy_channel", description="channel L2 norms, recording its calls", needs_data=True,
                  level="channel")
    def spy_channel(model, targets, data, **kwargs):
        calls.append("spy_channel")
        return {t.name: t.tensor.detach().reshape(t.shape[0], -1).norm(dim=1) for t in targets}

    yield calls
    api.unregister("spy_weight")
    api.unregister("spy_channel")


def test_the_spies_do_run_on_good_calls(spy):
    pk.prune(mlp(), 0.5, "spy_weight", data=mlp_data())
    pk.prune(mlp(), 0.5, "spy_channel", "channel", data=mlp_data())
    pk.prune(resnet(), 0.5, "spy_weight", "channel", data=resnet_data(), example_inputs=torch.randn(1, 3, 16, 16))
    assert spy == ["spy_weight", "spy_channel", "spy_weight"]


FIVE = [  # (model, kwargs, words): the issue's five errors that came after the passes over the data
    ("mlp", {"criterion": "spy_weight", "sparsity": {"0.weight": 0.5, "x.weight": 0.5}, "scope": "layer"},
     ["sparsity dict", "unknown ['x.weight']"]),
    ("mlp", {"criterion": "spy_weight", "sparsity": {"0.weight": 0.5}, "scope": "layer"}, ["missing ['2.weight']"]),
    ("mlp", {"criterion": "spy_weight", "granularity": "head"}, ["granularity 'head'", "no attention heads"]),
    ("mlp", {"criterion": "spy_weight", "granularity": "layer"}, ["granularity 'layer'", "no skippable"]),
    ("resnet", {"criterion": "spy_weight", "granularity": "layer", "scope": "layer"}, ["scope must be 'global'"]),
    ("mlp", {"criterion": "spy_channel", "granularity": "unstructured"}, ["spy_channel", "per output channel"]),
    ("resnet", {"criterion": "spy_channel", "granularity": "2:4", "sparsity": None,
                "exclude": ["conv1.weight"]}, ["spy_channel", "'2:4'"]),
    ("resnet", {"criterion": "spy_weight", "granularity": "channel", "reduction": "max",
                "example_inputs": torch.randn(1, 3, 16, 16)}, ["reduction", "'l2'"]),
    ("resnet", {"criterion": "spy_weight", "granularity": "channel", "scope": "Globl",
                "example_inputs": torch.randn(1, 3, 16, 16)}, ["scope"]),
    ("resnet", {"criterion": "spy_weight", "granularity": "head", "sparsity": {"blocks.0.attn": 0.5}},
     ["granularity 'head'"]),
]


@pytest.mark.parametrize("which, kwargs, words", FIVE, ids=[str(i) for i in range(len(FIVE))])
def test_argument_errors_come_before_the_criterion_runs(spy, which, kwargs, words):
    model, data = (mlp(), mlp_data()) if which == "mlp" else (resnet(), resnet_data())
    kwargs = {"sparsity": 0.5, **kwargs}
    snap = snapshot(model)
    with pytest.raises(ValueError) as info:
        pk.prune(model, data=data, **kwargs)
    for w in words:
        assert w in str(info.value)
    assert spy == []  # no forward or backward pass was spent
    assert_untouched(model, snap)


def test_group_path_traces_before_the_criterion_runs(spy):
    """A batch the model cannot take fails in the trace, before any pass over the data (the
    message itself is the trace's; wrapping it is another item of the issue)."""
    model = resnet()
    snap = snapshot(model)
    with pytest.raises((ValueError, RuntimeError)):
        pk.prune(model, 0.5, "spy_weight", "channel", data=resnet_data(), example_inputs=torch.randn(1, 5, 16, 16))
    assert spy == []
    assert_untouched(model, snap)


@pytest.mark.parametrize("criterion", ["fpgm", "apoz", "l1_filter", "hrank"])
@pytest.mark.parametrize("granularity", ["unstructured", "2:4", "block:2x2"])
def test_builtin_channel_criteria_with_weight_granularity_fail_before_scoring(monkeypatch, criterion, granularity):
    def never(*args, **kwargs):
        raise AssertionError("the criterion ran")

    monkeypatch.setattr(pk.pipeline, "score", never)
    model = resnet()
    snap = snapshot(model)
    sparsity = None if granularity == "2:4" else 0.5
    with pytest.raises(ValueError, match=f"criterion {criterion!r} gives one score per output channel"):
        pk.prune(model, sparsity, criterion, granularity, data=resnet_data(), exclude=["conv1.weight"])
    assert_untouched(model, snap)


def test_a_dict_may_name_parameters_the_criterion_leaves_out():
    """The dict is checked against the pruned parameters before scoring; a parameter the
    criterion skips (bn_scale(missing="skip"): fc has no BatchNorm) is just not pruned."""
    model = resnet()
    names = [t.name for t in pk.targets.find_targets(model)]
    masks = pk.prune(model, {n: 0.5 for n in names}, "bn_scale", "channel", scope="layer", missing="skip")
    assert "fc.weight" not in masks and "conv1.weight" in masks


# ---------------------------------------------------------------- 5. OBD's labels

@pytest.mark.parametrize("hessian", ["fisher", "exact", "hutchinson"])
def test_obd_rejects_more_labels_than_inputs_like_the_others(hessian):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    data = [(torch.randn(2, 3), torch.randint(0, 2, (5,)))]
    snap = snapshot(model)
    with pytest.raises(ValueError) as snip_error:
        pk.score(model, "snip", data=data)
    with pytest.raises(ValueError) as obd_error:
        pk.score(model, "obd", data=data, hessian=hessian, probes=1)
    assert str(obd_error.value) == str(snip_error.value)
    assert_untouched(model, snap)


def test_obd_fisher_unchanged_on_good_data():
    """The whole-batch check adds no term: fisher equals the mean squared per-sample gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(3, 3), torch.randint(0, 2, (3,))
    got = pk.score(model, "obd", data=[(x, y)])
    for name, p in model.named_parameters():
        if not name.endswith("weight"):
            continue
        g2 = torch.zeros_like(p)
        for i in range(3):
            (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), p)
            g2 += g.pow(2) / 3
        assert torch.allclose(got[name], 0.5 * g2 * p.detach().pow(2))


# ------------------------------------------------------------ 6. meta and lazy models

def meta_mlp() -> nn.Module:
    with torch.device("meta"):
        return mlp()


def lazy_mlp() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 4))


def structure(model: nn.Module) -> tuple:
    return ([n for n, _ in model.named_parameters()], [n for n, _ in model.named_buffers()],
            [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()])


@pytest.mark.parametrize("make, words", [(meta_mlp, ["model", "'0.weight'", "meta device"]),
                                         (lazy_mlp, ["model", "'0.weight'", "uninitialised (lazy)", "forward"])])
@pytest.mark.parametrize("kwargs", [{}, {"granularity": "channel"}, {"scope": "layer", "granularity": "2:4",
                                                                   "sparsity": None},
                                    {"granularity": "channel", "example_inputs": torch.randn(1, 8)},
                                    {"criterion": "snip", "data": mlp_data()}])
def test_meta_and_lazy_models_are_refused_before_anything(make, words, kwargs):
    model = make()
    before = structure(model)
    with pytest.raises(ValueError) as info:
        pk.prune(model, **{"sparsity": 0.5, **kwargs})
    for w in words:
        assert w in str(info.value)
    assert structure(model) == before
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter) or model[0].weight.is_meta


def test_make_masks_refuses_meta_scores_and_lazy_shapes():
    meta_scores = {"0.weight": torch.empty(16, 8, device="meta")}
    with pytest.raises(ValueError, match=r"scores\['0.weight'\] is on the meta device"):
        pk.make_masks(meta_scores, 0.5)
    scores = {"2.weight": torch.rand(4, 16)}
    with pytest.raises(ValueError, match="model has an uninitialised"):
        pk.make_masks(scores, 0.5, "channel", model=lazy_mlp())
    # a meta model is a fine source of shapes
    masks = pk.make_masks(scores, 0.5, "channel", model=meta_mlp())
    assert masks["2.weight"].shape == (4, 16)


def test_score_refuses_lazy_and_meta_models():
    lazy = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="model"):
        pk.score(lazy, "magnitude")
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="model"):
        pk.score(meta, "magnitude")


# -------------------------------------- 7. one validation, at the boundary (issue 10, P3)

@pytest.fixture
def ran():
    """A weight-level criterion registered for the test that records whether it ran."""
    import prunekit.criteria as criteria

    calls: list[str] = []

    def spy_fn(model, targets, **kwargs):
        calls.append("ran")
        return {t.name: t.tensor.detach().abs() for t in targets}

    criteria.register("spy_ran", description="|w|, recording that it ran")(spy_fn)
    try:
        yield calls
    finally:  # the registry's API may change: remove the entry from whichever table holds it
        for holder in (criteria, getattr(criteria, "registry", None)):
            table = getattr(holder, "_REGISTRY", None)
            if isinstance(table, dict):
                table.pop("spy_ran", None)


LATE = [  # the three checks the code review found after score() (P3)
    ("vit", {"sparsity": 0.5, "granularity": "layer", "scope": "layer"}, "scope must be 'global'"),
    ("resnet", {"sparsity": 0.5, "granularity": "channel", "example_inputs": torch.randn(1, 3, 16, 16),
                "reduction": "max"}, "reduction"),
    ("resnet", {"sparsity": {"conv1.weight": 0.5}, "scope": "layer"}, "sparsity dict"),
]


@pytest.mark.parametrize("which, kwargs, words", LATE, ids=["layer-scope", "coupled-reduction", "dict-names"])
def test_late_checks_now_raise_before_the_criterion(ran, which, kwargs, words):
    torch.manual_seed(0)
    model = TinyViT(depth=1).eval() if which == "vit" else resnet()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=words):
        pk.prune(model, criterion="spy_ran", **kwargs)
    assert ran == []
    assert_untouched(model, snap)
    pk.prune(model, 0.5, "spy_ran")  # the spy does run on a good call
    assert ran == ["ran"]


def _count_calls(monkeypatch, name: str) -> list:
    """Replace ``prunekit._validate.<name>`` in every prunekit module that holds it by a counter."""
    import sys

    import prunekit._validate as v
    original, calls = getattr(v, name), []

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("prunekit") and mod is not None and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, counting)
    return calls


@pytest.mark.parametrize("layers", [3, 6])
@pytest.mark.parametrize("granularity", ["unstructured", "channel", "2:4", "block:2x2"])
def test_sparsity_scope_and_scores_are_checked_once_per_call(monkeypatch, layers, granularity):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(layers)])
    sparsity = None if granularity == "2:4" else 0.5
    counts = {n: _count_calls(monkeypatch, n) for n in ("check_sparsity", "check_scope", "check_scores")}
    pk.prune(model, sparsity, granularity=granularity)
    assert {n: len(c) for n, c in counts.items()} == {
        "check_sparsity": 0 if sparsity is None else 1, "check_scope": 1, "check_scores": 1}


def test_make_masks_checks_once_too(monkeypatch):
    scores = {f"{i}.weight": torch.rand(4, 4) for i in range(5)}
    counts = {n: _count_calls(monkeypatch, n) for n in ("check_sparsity", "check_scope", "check_scores")}
    pk.make_masks(scores, 0.5, "channel", "global")
    assert [len(c) for c in counts.values()] == [1, 1, 1]


def test_the_request_is_frozen_and_complete():
    from dataclasses import FrozenInstanceError

    from prunekit._validate import mask_request
    req = mask_request(pk.granularity.parse("Block:2x2"), 0.25, " Layer", None, {"a": (4, 4), "b": (2, 6)})
    assert (req.granularity.name, dict(req.sparsity), req.scope, req.reduction) == (
        "block:2x2", {"a": 0.25, "b": 0.25}, "layer", "l2")
    with pytest.raises(FrozenInstanceError):
        req.scope = "global"
    assert dict(mask_request(pk.granularity.parse("1:4"), None, "global", "l1", {"a": (4, 4)}).sparsity) == {
        "a": 0.75}


# ------------------------------------------------ 8. the coupled switch (issue 10, P13)

def test_coupled_default_is_auto_and_explicit_values_agree():
    x = torch.randn(1, 3, 16, 16)
    auto = pk.prune(resnet(), 0.5, granularity="channel", example_inputs=x)
    forced = pk.prune(resnet(), 0.5, granularity="channel", example_inputs=x, coupled=True)
    groups = pk.prune_groups(resnet(), 0.5, x, scope="global")
    assert auto.keys() == forced.keys() == groups.keys()
    assert all(torch.equal(auto[n], forced[n]) and torch.equal(auto[n], groups[n]) for n in auto)
    per_layer = pk.prune(resnet(), 0.5, granularity="channel", example_inputs=x, coupled=False)
    plain = pk.prune(resnet(), 0.5, granularity="channel")
    assert per_layer.keys() == plain.keys() and all(torch.equal(per_layer[n], plain[n]) for n in plain)
    assert any(not torch.equal(auto[n], plain[n]) for n in auto)  # the switch changes the result


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"granularity": "channel", "coupled": True}, ValueError, ["coupled=True", "example_inputs"]),
    ({"granularity": "unstructured", "coupled": True, "example_inputs": torch.randn(1, 3, 16, 16)}, ValueError,
     ["coupled=True", "granularity='channel'"]),
    ({"granularity": "channel", "coupled": "yes"}, TypeError, ["coupled"]),
])
def test_bad_coupled_is_a_clear_error(ran, kwargs, exc, words):
    model = resnet()
    snap = snapshot(model)
    with pytest.raises(exc) as info:
        pk.prune(model, 0.5, "spy_ran", **kwargs)
    assert all(w in str(info.value) for w in words)
    assert ran == []
    assert_untouched(model, snap)


def _api_defaults() -> dict[str, dict[str, str]]:
    """The defaults table of book/api.md: {function: {argument: cell}}."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "book" / "api.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    header = next(line for line in text.splitlines() if line.startswith("| argument |"))
    funcs = [c.strip().strip("`") for c in header.strip("|").split("|")[1:]]
    out: dict[str, dict[str, str]] = {f: {} for f in funcs}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for arg in (a.strip().strip("`") for a in cells[0].split("/")):
            for f, cell in zip(funcs, cells[1:]):
                out[f][arg] = cell
    return out


def test_signature_defaults_equal_the_table_in_the_api_docs():
    import inspect
    table = _api_defaults()
    assert set(table) == {"make_masks", "prune", "prune_groups"}
    for fname, args in table.items():
        params = inspect.signature(getattr(pk, fname)).parameters
        for arg, cell in args.items():
            if cell.startswith("–"):
                assert arg not in params, (fname, arg)
            elif cell.startswith("(required)"):
                assert params[arg].default is inspect.Parameter.empty, (fname, arg)
            else:
                assert repr(params[arg].default) == cell.strip("`").replace('"', "'"), (fname, arg, cell)
        documented = set(args)
        assert {p for p in params if params[p].kind is not inspect.Parameter.VAR_KEYWORD} - {"scores"} <= documented, fname


# ------------------------------------------- 9. parameter-shaped masks (issue 10, P14)

def test_make_masks_returns_parameter_shaped_masks_with_model():
    model = resnet()
    scores = {n: p.detach().reshape(p.shape[0], -1).norm(dim=1) for n, p in model.named_parameters()
              if n.endswith("conv1.weight")}
    masks = pk.make_masks(scores, 0.5, "channel", model=model)
    params = dict(model.named_parameters())
    assert all(masks[n].shape == params[n].shape for n in scores)
    pk.apply_masks(model, masks)  # parameter-shaped: apply_masks takes them
    with pytest.raises(ValueError, match="is 1-D"):
        pk.make_masks(scores, 0.5, "channel")
