"""Every granularity through make_masks / prune: exact counts, shapes of what is removed,
slow reference implementations, errors, and equality with torch.nn.utils.prune."""

import itertools
import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn
from prunekit.granularity import PATTERNS


def nm_cnn(seed: int = 0) -> nn.Module:
    """A CNN whose every weight has an input dimension divisible by 8 (N:M-friendly)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 8),
    )


def conv3_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6, 2))


def magnitude(model):
    return {n: p.detach().abs() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}


# --- slow reference implementations of the documented rules ------------------------------

def stable_lowest(values: list[float], k: int) -> set[int]:
    """Indices of the k lowest values, ties to the earlier index (stable ascending sort)."""
    return set(sorted(range(len(values)), key=lambda i: (values[i], i))[:k])


def channel_reference(scores: dict, sparsity: float, scope: str, normalise: bool) -> dict:
    """Channels ranked by L2 norm (or RMS when normalised) by Python loops, in exact
    arithmetic (squared, as fractions: sqrt is monotone); exact counts; every layer keeps
    its best channel."""
    per_layer = {}
    for name, s in scores.items():
        rows = s.reshape(s.shape[0], -1).tolist()
        per_layer[name] = [Fraction(sum(int(v) ** 2 for v in r), len(r) if normalise else 1) for r in rows]
    removed = {}
    if scope == "layer":
        for name, v in per_layer.items():
            removed[name] = stable_lowest(v, min(round(sparsity * len(v)), len(v) - 1))
    else:
        flat = [(v, name, i) for name, vals in per_layer.items() for i, v in enumerate(vals)]
        best = {name: max(range(len(v)), key=lambda i: (v[i], i)) for name, v in per_layer.items()}
        free = [j for j, (_, name, i) in enumerate(flat) if best[name] != i]
        k = min(round(sparsity * len(flat)), len(free))
        gone = sorted(free, key=lambda j: (flat[j][0], j))[:k]
        removed = {name: set() for name in scores}
        for j in gone:
            removed[flat[j][1]].add(flat[j][2])
    return removed


def nm_reference(s: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M by loops: groups of M consecutive input channels at one (out, kernel position)."""
    keep = torch.zeros(s.shape, dtype=torch.bool)
    for o in range(s.shape[0]):
        for pos in itertools.product(*(range(d) for d in s.shape[2:])):
            for c0 in range(0, s.shape[1], m):
                vals = [s[(o, c0 + j) + pos].item() for j in range(m)]
                for j in sorted(range(m), key=lambda j: (-vals[j], j))[:n]:
                    keep[(o, c0 + j) + pos] = True
    return keep


def block_reference(scores: dict, r: int, c: int, sparsity: float, scope: str) -> dict:
    tiles = {}
    for name, s in scores.items():
        x = s.reshape(s.shape[0], -1)
        tiles[name] = [(i, j, int((x[i * r:(i + 1) * r, j * c:(j + 1) * c].long() ** 2).sum()))
                       for i in range(x.shape[0] // r) for j in range(x.shape[1] // c)]
    out = {n: torch.ones(s.shape[0], s[0].numel(), dtype=torch.bool) for n, s in scores.items()}
    groups = [[name] for name in scores] if scope == "layer" else [list(scores)]
    for names in groups:
        flat = [(name, i, j, v) for name in names for (i, j, v) in tiles[name]]
        for idx in stable_lowest([f[3] for f in flat], min(round(sparsity * len(flat)), len(flat) - 1)):
            name, i, j, _ = flat[idx]
            out[name][i * r:(i + 1) * r, j * c:(j + 1) * c] = False
    return {n: out[n].reshape(scores[n].shape) for n in scores}


# --- parsing -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, canonical", [
    ("unstructured", "unstructured"), ("Channel", "channel"), ("2:4", "2:4"), (" 1:4 ", "1:4"),
    ("4:8", "4:8"), ("BLOCK:4X4", "block:4x4"), ("block:1x4", "block:1x4"), ("pattern", "pattern"),
    ("Head", "head"), (" layer", "layer"),
])
def test_granularity_names(name, canonical):
    assert pk.granularity.parse(name).name == canonical


@pytest.mark.parametrize("name, words", [
    ("5:4", ["N=5", "M=4"]), ("0:4", ["1 <= N <= M-1"]), ("4:4", ["N=4"]), ("block:0x4", ["R=0"]),
    ("block:4x0", ["C=0"]), ("nope", ["unknown", "unstructured", "2:4"]), ("block4x4", ["unknown"]),
    ("heads", ["unknown", "head", "layer"]),
])
def test_bad_granularity_names(name, words):
    with pytest.raises(ValueError) as info:
        pk.make_masks({"w": torch.rand(8, 8)}, 0.5, granularity=name)
    for w in words:
        assert w in str(info.value)
    assert "granularity" in str(info.value)


def test_every_granularity_is_implemented_and_listed():
    for name in ("unstructured", "channel", "head", "layer", "pattern"):
        assert any(g.startswith(name) for g in pk.granularity.GRANULARITIES)
        assert pk.granularity.parse_granularity(name).kind in pk.granularity.SCOPES_SUPPORTED


@pytest.mark.parametrize("granularity", ["head", "layer"])
def test_model_unit_granularities_need_the_model(granularity):
    with pytest.raises(ValueError, match=f"granularity '{granularity}'.*model=model"):
        pk.make_masks({"w": torch.rand(8, 8)}, 0.5, granularity=granularity)
    with pytest.raises(ValueError, match="model=model"):
        pk.make_masks({"w": torch.rand(8, 8)}, 0.5, granularity=granularity, shapes={"w": (8, 8)})


@pytest.mark.parametrize("granularity, scope, ok", [
    ("head", "layer", True), ("head", "global", True), ("layer", "global", True), ("layer", "layer", False),
])
def test_scopes_supported(granularity, scope, ok):
    model = pk.models.TinyViT(depth=1)
    scores = magnitude(model)
    if ok:
        assert pk.make_masks(scores, 0.5, granularity, scope, model=model)
    else:
        with pytest.raises(ValueError, match="scope must be 'global', got scope='layer'"):
            pk.make_masks(scores, 0.5, granularity, scope, model=model)


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction.*'l1', 'l2', 'sum', 'mean'"):
        pk.make_masks({"w": torch.rand(4, 4)}, 0.5, "channel", reduction="max")


# --- channel -----------------------------------------------------------------------------

channel_shapes = st.lists(
    st.tuples(st.integers(1, 9), st.integers(1, 5), st.sampled_from([(), (1, 1), (3, 3), (2,)])),
    min_size=1, max_size=4)


@st.composite
def channel_scores(draw):
    result = {}
    tied = draw(st.booleans())
    for i, (out, inp, k) in enumerate(draw(channel_shapes)):
        shape = (out, inp) + k
        n = math.prod(shape)
        # small integers: every channel score is computed exactly, so ties are real ties
        elems = st.integers(0, 2) if tied else st.integers(0, 20)
        vals = draw(st.lists(elems, min_size=n, max_size=n))
        result[f"l{i}.weight"] = torch.tensor(vals, dtype=torch.float32).view(shape)
    return result


def removed_channels(mask: torch.Tensor) -> set[int]:
    rows = mask.reshape(mask.shape[0], -1)
    assert torch.all(rows.all(1) | ~rows.any(1)), "a channel is partly removed"
    return set(torch.nonzero(~rows.all(1)).flatten().tolist())


@settings(max_examples=150, deadline=None)
@given(scores=channel_scores(), sparsity=st.floats(0, 0.999), scope=st.sampled_from(["layer", "global"]))
def test_channel_masks_match_reference(scores, sparsity, scope):
    masks = pk.make_masks(scores, sparsity, "channel", scope)
    ref = channel_reference(scores, sparsity, scope, normalise=scope == "global")
    total = sum(s.shape[0] for s in scores.values())
    for name, s in scores.items():
        assert masks[name].shape == s.shape and masks[name].dtype == torch.bool
        assert removed_channels(masks[name]) == ref[name], name
        assert masks[name].reshape(s.shape[0], -1).all(1).any(), "every layer keeps a channel"
    removed = sum(len(removed_channels(m)) for m in masks.values())
    if scope == "global":
        assert removed == min(round(sparsity * total), total - len(scores))
    else:
        assert removed == sum(min(round(sparsity * s.shape[0]), s.shape[0] - 1) for s in scores.values())


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75, 0.9])
def test_channel_equals_torch_ln_structured(amount):
    ours, theirs = tiny_cnn(), tiny_cnn()
    masks = pk.prune(ours, amount, granularity="channel", scope="layer")  # default reduction: L2
    for name, module in theirs.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            torch_prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
            assert torch.equal(masks[f"{name}.weight"], module.weight_mask.bool()), name


@pytest.mark.parametrize("amount", [0.3, 0.6])
def test_channel_l1_reduction_is_li_et_al_filter_norm(amount):
    ours, theirs = tiny_cnn(1), tiny_cnn(1)
    masks = pk.prune(ours, amount, granularity="channel", scope="layer", reduction="l1")
    for name, module in theirs.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            torch_prune.ln_structured(module, "weight", amount=amount, n=1, dim=0)
            assert torch.equal(masks[f"{name}.weight"], module.weight_mask.bool()), name


def test_channel_reductions():
    s = torch.tensor([[3.0, -4.0], [1.0, 1.0], [-6.0, 0.0]])
    expected_removed = {"l2": 1, "l1": 1, "sum": 2, "mean": 2}  # norms: 5, 1.41, 6 / sums: -1, 2, -6
    for red, gone in expected_removed.items():
        m = pk.make_masks({"w": s}, 1 / 3, "channel", "layer", reduction=red)["w"]
        assert removed_channels(m) == {gone}, red


def test_global_channel_ranking_normalises_by_fan_in():
    # identical per-weight magnitudes, fan-in 2 vs 50: raw L2 norms would favour the wide layer
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scores = {"narrow": vals[:, None].expand(4, 2).clone(), "wide": vals[:, None].expand(4, 50).clone()}
    masks = pk.make_masks(scores, 0.5, "channel", "global")
    assert removed_channels(masks["narrow"]) == {0, 1}
    assert removed_channels(masks["wide"]) == {0, 1}
    # layer scope is unaffected by the normalisation (constant within a layer)
    raw = {"narrow": scores["narrow"] * 10, "wide": scores["wide"]}
    assert removed_channels(pk.make_masks(raw, 0.5, "channel", "layer")["narrow"]) == {0, 1}


def test_global_channel_keeps_one_channel_per_layer():
    scores = {"weak": torch.full((4, 3), 0.01), "strong": torch.rand(6, 3) + 1}
    masks = pk.make_masks(scores, 0.5, "channel", "global")
    assert removed_channels(masks["weak"]) == {0, 1, 2}  # the last of equals survives
    assert len(removed_channels(masks["strong"])) == 2  # round(0.5 * 10) = 5 in total
    masks = pk.make_masks(scores, 0.99, "channel", "global")  # capped at 10 - 2 layers
    assert sum(len(removed_channels(m)) for m in masks.values()) == 8


def test_layer_channel_keeps_one_channel():
    masks = pk.make_masks({"a": torch.rand(1, 5), "b": torch.rand(2, 5)}, 0.9, "channel", "layer")
    assert masks["a"].all()
    assert len(removed_channels(masks["b"])) == 1


def test_channel_level_scores_are_used_as_they_are():
    shapes = {"conv.weight": (4, 3, 3, 3), "fc.weight": (5, 7)}
    scores = {"conv.weight": torch.tensor([0.3, -1.0, 2.0, 0.1]), "fc.weight": torch.tensor([5.0, 4, 3, 2, 1])}
    masks = pk.make_masks(scores, 0.5, "channel", "layer", shapes=shapes)
    assert masks["conv.weight"].shape == (4, 3, 3, 3) and masks["fc.weight"].shape == (5, 7)
    assert removed_channels(masks["conv.weight"]) == {1, 3}  # signed values, not their norm
    assert removed_channels(masks["fc.weight"]) == {3, 4}
    # without shapes a 1-D score is ambiguous (channel scores or a 1-D parameter): masks are
    # always parameter-shaped, so this is an error naming the way out
    with pytest.raises(ValueError, match=r"scores\['conv.weight'\] is 1-D.*shapes=.*model="):
        pk.make_masks(scores, 0.5, "channel", "layer")
    # a model gives the shapes
    model = tiny_cnn()
    by_model = pk.make_masks({"0.weight": torch.arange(8.0)}, 0.5, "channel", model=model)
    assert by_model["0.weight"].shape == model[0].weight.shape
    # shapes=model still works, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="model=model"):
        old = pk.make_masks({"0.weight": torch.arange(8.0)}, 0.5, "channel", shapes=model)
    assert torch.equal(old["0.weight"], by_model["0.weight"])


@pytest.mark.parametrize("granularity", ["unstructured", "2:4", "block:1x4", "pattern"])
def test_channel_level_scores_with_finer_granularity_are_an_error(granularity):
    with pytest.raises(ValueError, match="finer granularity") as info:
        pk.make_masks({"c.weight": torch.rand(8)}, 0.6, granularity, shapes={"c.weight": (8, 4, 3, 3)})
    assert "'c.weight'" in str(info.value) and "[8]" in str(info.value)


def test_score_shape_that_fits_nothing():
    with pytest.raises(ValueError, match=r"scores\['w'\] has shape \[3\].*\[4, 5\]"):
        pk.make_masks({"w": torch.rand(3)}, 0.5, "channel", shapes={"w": (4, 5)})
    with pytest.raises(ValueError, match="shapes has no entry"):
        pk.make_masks({"w": torch.rand(3)}, 0.5, "channel", shapes={"v": (3,)})


def test_iterative_channel_pruning_is_cumulative():
    model = tiny_cnn()
    first = pk.prune(model, 0.25, granularity="channel", scope="layer")
    second = pk.prune(model, 0.5, granularity="channel", scope="layer")
    for name, m in second.items():
        n = m.shape[0]
        assert len(removed_channels(m)) == round(0.5 * n), name
        assert removed_channels(first[name]) <= removed_channels(m)  # never un-prunes
        assert torch.equal(pk.get_masks(model)[name], m)


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_channel_after_unstructured_never_unprunes(criterion):
    model = tiny_cnn()
    old = pk.prune(model, 0.6, criterion)
    new = pk.prune(model, 0.25, criterion, granularity="channel", scope="layer")
    for name in new:
        assert not (new[name] & ~old[name]).any()
        assert torch.equal(pk.get_masks(model)[name], new[name])


def test_iterative_global_channel_pruning_with_random_scores():
    model = tiny_cnn()
    pk.prune(model, 0.3, "random", "channel", "global", seed=1)
    masks = pk.prune(model, 0.6, "random", "channel", "global", seed=2)  # new random scores
    total = sum(m.shape[0] for m in masks.values())
    assert sum(len(removed_channels(m)) for m in masks.values()) == round(0.6 * total)


# --- N:M ---------------------------------------------------------------------------------

@st.composite
def nm_cases(draw):
    m = draw(st.sampled_from([2, 3, 4, 8]))
    n = draw(st.integers(1, m - 1))
    out = draw(st.integers(1, 3))
    inp = m * draw(st.integers(1, 3))
    kernel = draw(st.sampled_from([(), (1, 1), (2, 3), (3,)]))
    shape = (out, inp) + kernel
    size = math.prod(shape)
    tied = draw(st.booleans())
    elems = st.integers(0, 2) if tied else st.floats(-10, 10, allow_nan=False, width=32)
    vals = torch.tensor(draw(st.lists(elems, min_size=size, max_size=size)), dtype=torch.float32)
    return n, m, vals.view(shape)


@settings(max_examples=200, deadline=None)
@given(case=nm_cases())
def test_nm_matches_reference_and_keeps_n_of_every_group(case):
    n, m, s = case
    mask = pk.make_masks({"w": s}, None, f"{n}:{m}")["w"]
    assert torch.equal(mask, nm_reference(s, n, m))
    groups = mask.movedim(1, -1).reshape(-1, m)  # channels-last groups
    assert torch.all(groups.sum(-1) == n)
    assert int((~mask).sum()) == round((1 - n / m) * s.numel())


def test_nm_conv_groups_run_along_input_channels_channels_last():
    # One output channel, 4 input channels, 1x2 kernel. Channels-last groups are
    # {w[0, :, 0, 0]} and {w[0, :, 0, 1]}; grouping the flattened in*kh*kw would differ.
    s = torch.tensor([[[[1.0, 9.0]], [[2.0, 8.0]], [[3.0, 7.0]], [[4.0, 6.0]]]])  # [1, 4, 1, 2]
    mask = pk.make_masks({"w": s}, 0.5, "2:4")["w"]
    assert mask[0, :, 0, 0].tolist() == [False, False, True, True]
    assert mask[0, :, 0, 1].tolist() == [True, True, False, False]
    # grouping the flattened in*kh*kw (PyTorch's memory order) would keep 7 and 6, not 3 and 4
    naive = pk.make_masks({"w": s.reshape(1, 8)}, 0.5, "2:4")["w"].reshape(s.shape)
    assert naive[0, :, 0, 1].tolist() == [True, True, True, True] and not torch.equal(mask, naive)


def test_nm_ties_keep_lower_index():
    mask = pk.make_masks({"w": torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 5.0, 5.0, 5.0]])}, None, "2:4")["w"]
    assert mask.tolist() == [[True, True, False, False, False, True, True, False]]


def test_nm_sparsity_must_match():
    pk.make_masks({"w": torch.rand(2, 8)}, 0.5, "2:4")
    pk.make_masks({"w": torch.rand(2, 8)}, 0.75, "1:4")
    pk.make_masks({"w": torch.rand(2, 8)}, 1 - 5 / 8, "5:8")
    with pytest.raises(ValueError, match=r"'2:4'.*0\.5.*sparsity=0\.6"):
        pk.make_masks({"w": torch.rand(2, 8)}, 0.6, "2:4")
    with pytest.raises(TypeError, match="sparsity"):
        pk.make_masks({"w": torch.rand(2, 8)}, "0.5", "2:4")


def test_nm_m_must_divide_the_input_dimension():
    with pytest.raises(ValueError, match=r"M=3.*'fc\.weight'.*size 8"):
        pk.make_masks({"fc.weight": torch.rand(6, 8)}, None, "2:3")
    with pytest.raises(ValueError, match=r"'0\.weight'.*size 3"):
        pk.prune(tiny_cnn(), granularity="2:4")  # conv with 3 input channels
    with pytest.raises(ValueError, match="input dimension"):
        pk.make_masks({"bias": torch.rand(8)}, None, "2:4")


def test_nm_prune_on_a_model_and_on_a_masked_model():
    model = nm_cnn()
    masks = pk.prune(model, granularity="2:4", scope="layer")  # scope is irrelevant
    assert set(masks) == {"0.weight", "2.weight", "5.weight", "7.weight"}
    assert all(torch.all(m.movedim(1, -1).reshape(-1, 4).sum(-1) == 2) for m in masks.values())
    other = nm_cnn()
    old = pk.prune(other, 0.3)
    new = pk.prune(other, granularity="2:4")
    for name, m in new.items():
        assert torch.equal(m, pk.make_masks({"w": magnitude(nm_cnn())[name].masked_fill(~old[name], -math.inf)},
                                            None, "2:4")["w"] & old[name])
        assert torch.all(m.movedim(1, -1).reshape(-1, 4).sum(-1) <= 2)
        assert not (m & ~old[name]).any()


def test_nm_scope_is_ignored():
    scores = magnitude(nm_cnn())
    a = pk.make_masks(scores, None, "4:8", "global")
    b = pk.make_masks(scores, 0.5, "4:8", "layer")
    assert all(torch.equal(a[n], b[n]) for n in scores)


# --- blocks ------------------------------------------------------------------------------

@st.composite
def block_cases(draw):
    r, c = draw(st.sampled_from([(1, 1), (1, 4), (2, 2), (4, 1), (2, 3)]))
    result = {}
    tied = draw(st.booleans())
    for i in range(draw(st.integers(1, 3))):
        out = r * draw(st.integers(1, 3))
        inp, kernel = draw(st.sampled_from([(c, ()), (2 * c, ()), (c, (1, 1)), (c, (3, 3)), (2 * c, (2,))]))
        shape = (out, inp) + kernel
        size = math.prod(shape)
        elems = st.integers(0, 2) if tied else st.integers(0, 20)
        result[f"l{i}.weight"] = torch.tensor(draw(st.lists(elems, min_size=size, max_size=size)),
                                              dtype=torch.float32).view(shape)
    return r, c, result


@settings(max_examples=150, deadline=None)
@given(case=block_cases(), sparsity=st.floats(0, 0.999), scope=st.sampled_from(["layer", "global"]))
def test_block_masks_match_reference(case, sparsity, scope):
    r, c, scores = case
    masks = pk.make_masks(scores, sparsity, f"block:{r}x{c}", scope)
    ref = block_reference(scores, r, c, sparsity, scope)
    n_tiles = 0
    for name, s in scores.items():
        assert masks[name].shape == s.shape
        assert torch.equal(masks[name], ref[name]), name
        tiles = masks[name].reshape(s.shape[0] // r, r, -1, c)
        assert torch.all(tiles.all(3).all(1) | ~tiles.any(3).any(1)), "a tile is partly removed"
        n_tiles += tiles.shape[0] * tiles.shape[2]
    removed_tiles = sum(int((~m).sum()) for m in masks.values()) // (r * c)
    if scope == "global":
        assert removed_tiles == min(round(sparsity * n_tiles), n_tiles - 1)


def test_block_tiles_must_divide():
    with pytest.raises(ValueError, match=r"'fc\.weight'.*\[8, 10\].*R must divide 8 and C 10"):
        pk.make_masks({"fc.weight": torch.rand(8, 10)}, 0.5, "block:3x3")
    with pytest.raises(ValueError, match=r"\[8, 27\]"):
        pk.make_masks({"c.weight": torch.rand(8, 3, 3, 3)}, 0.5, "block:4x4")


def test_block_layer_counts_and_conv_2d_view():
    s = torch.rand(8, 2, 2, 2)  # 2-D view [8, 8]: 4 tiles of 4x4
    m = pk.make_masks({"w": s}, 0.5, "block:4x4", "layer")["w"]
    assert int((~m).sum()) == 2 * 16
    view = m.reshape(8, 8)
    for i, j in itertools.product(range(2), range(2)):
        tile = view[4 * i:4 * i + 4, 4 * j:4 * j + 4]
        assert tile.all() or not tile.any()


# --- kernel patterns ---------------------------------------------------------------------

def test_pattern_library():
    assert PATTERNS.shape == (8, 3, 3) and PATTERNS.dtype == torch.bool
    assert len({tuple(p.flatten().tolist()) for p in PATTERNS}) == 8
    for p in PATTERNS:
        assert int(p.sum()) == 4 and p[1, 1]
        cells = {(i, j) for i in range(3) for j in range(3) if p[i, j]}
        seen, todo = set(), [(1, 1)]
        while todo:  # 4-connected flood fill from the centre
            i, j = todo.pop()
            if (i, j) in cells and (i, j) not in seen:
                seen.add((i, j))
                todo += [(i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)]
        assert seen == cells


def pattern_reference(s: torch.Tensor, sparsity: float):
    """Best pattern per kernel by loops (largest kept sum, first on ties), then remove
    the k kernels with the lowest best sums, k closest to the target sparsity."""
    out, inp = s.shape[:2]
    choice, best = {}, {}
    for o, i in itertools.product(range(out), range(inp)):
        sums = [float(s[o, i][PATTERNS[p]].sum()) for p in range(len(PATTERNS))]
        choice[o, i] = max(range(len(sums)), key=lambda p: (sums[p], -p))
        best[o, i] = sums[choice[o, i]]
    K = out * inp
    # closest in exact arithmetic, an exact tie to the even count; a kernel always stays
    k = min(range(K), key=lambda k: (abs(Fraction(5 * K + 4 * k, 9 * K) - Fraction(sparsity)), k % 2))
    keys = list(best)
    removed = {keys[j] for j in stable_lowest([best[key] for key in keys], k)}
    return choice, removed


@settings(max_examples=60, deadline=None)
@given(out=st.integers(1, 4), inp=st.integers(1, 4), sparsity=st.floats(5 / 9, 0.99), tied=st.booleans(),
       seed=st.integers(0, 10_000))
def test_pattern_masks_match_reference(out, inp, sparsity, tied, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 3, (out, inp, 3, 3), generator=g).float() if tied else torch.rand(out, inp, 3, 3, generator=g)
    mask = pk.make_masks({"c.weight": s}, sparsity, "pattern")["c.weight"]
    choice, removed = pattern_reference(s, sparsity)
    for (o, i), p in choice.items():
        if (o, i) in removed:
            assert not mask[o, i].any()
        else:
            assert torch.equal(mask[o, i], PATTERNS[p])  # a library pattern, the argmax one
    assert int((~mask).sum()) == 5 * out * inp + 4 * len(removed)


def test_pattern_only_and_minimum_sparsity():
    s = torch.rand(4, 5, 3, 3)
    for sparsity in (None, 5 / 9):
        m = pk.make_masks({"w": s}, sparsity, "pattern")["w"]
        assert torch.all(m.sum((2, 3)) == 4)
    with pytest.raises(ValueError, match=r"at least 5/9.*sparsity=0\.5"):
        pk.make_masks({"w": s}, 0.5, "pattern")


def test_pattern_sparsity_is_closest_to_target():
    s = torch.rand(6, 5, 3, 3)
    for target in (0.6, 0.7, 0.8, 0.9):
        m = pk.make_masks({"w": s}, target, "pattern")["w"]
        achieved = 1 - m.sum().item() / m.numel()
        assert abs(achieved - target) <= 4 / (2 * m.numel()) + 1e-12  # within half a kernel's step


def test_pattern_reduction_l2_is_euclidean_projection():
    # T up (pattern 0) has the largest sum (4 > 3.9); the bottom-right square (pattern 7)
    # the largest sum of squares (5.61 > 4): PatDNN's Euclidean projection keeps that one
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.9]])
    by_sum = pk.make_masks({"w": k[None, None]}, None, "pattern")["w"][0, 0]
    by_l2 = pk.make_masks({"w": k[None, None]}, None, "pattern", reduction="l2")["w"][0, 0]
    assert torch.equal(by_sum, PATTERNS[0])
    assert torch.equal(by_l2, PATTERNS[7])


def test_pattern_rejects_non_3x3_parameters():
    with pytest.raises(ValueError, match=r"3x3.*'6\.weight'.*\[10, 144\]"):
        pk.prune(tiny_cnn(), 0.7, granularity="pattern")
    with pytest.raises(ValueError, match=r"'c\.weight'.*\[4, 3, 5, 5\]"):
        pk.make_masks({"c.weight": torch.rand(4, 3, 5, 5)}, None, "pattern")
    masks = pk.prune(conv3_net(), 0.7, granularity="pattern", exclude="5.weight")
    assert set(masks) == {"0.weight", "2.weight"}


# --- all granularities: idempotence, include/exclude, prune ------------------------------

ALL = [("unstructured", 0.6), ("channel", 0.5), ("2:4", 0.5), ("1:8", None), ("block:2x4", 0.5),
       ("block:1x1", 0.3), ("pattern", 0.8)]


def scores_for(granularity):
    if granularity == "pattern":
        return {n: s for n, s in magnitude(nm_cnn()).items() if s.dim() == 4}
    return magnitude(nm_cnn())


@pytest.mark.parametrize("granularity, sparsity", ALL)
@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("masking", ["zero", "-inf"])
def test_idempotence(granularity, sparsity, scope, masking):
    scores = scores_for(granularity)
    masks = pk.make_masks(scores, sparsity, granularity, scope)
    fill = 0.0 if masking == "zero" else -math.inf
    again = pk.make_masks({n: s.masked_fill(~masks[n], fill) for n, s in scores.items()}, sparsity, granularity, scope)
    for n in scores:
        assert torch.equal(again[n], masks[n]), n


@pytest.mark.parametrize("granularity, sparsity", ALL)
def test_prune_respects_include_and_exclude(granularity, sparsity):
    model = nm_cnn()
    snap = {n: p.detach().clone() for n, p in model.named_parameters()}
    if granularity == "pattern":
        masks = pk.prune(model, sparsity, granularity=granularity, include="2.weight")
        assert set(masks) == {"2.weight"}
    else:
        masks = pk.prune(model, sparsity, granularity=granularity, exclude=["0.weight", "7.weight"])
        assert set(masks) == {"2.weight", "5.weight"}
    masked = set(pk.get_masks(model))
    assert masked == set(masks)
    params = dict(model.named_parameters())
    for n, p in snap.items():
        if n not in masked:
            assert torch.equal(params[n], p)


@pytest.mark.parametrize("granularity, sparsity", ALL)
def test_prune_never_unprunes_and_is_repeatable(granularity, sparsity):
    model = nm_cnn()
    kw = {"include": ["0.weight", "2.weight"]} if granularity == "pattern" else {}
    first = pk.prune(model, sparsity, granularity=granularity, **kw)
    second = pk.prune(model, sparsity, granularity=granularity, **kw)
    for n in first:
        assert torch.equal(first[n], second[n]), n  # pruning to the same sparsity changes nothing


@pytest.mark.parametrize("spec, sparsity, exc, words", [
    ("5:4", 0.5, ValueError, ["N=5"]),
    ("2:3", None, ValueError, ["M=3", "0.weight", "size 8"]),
    ("block:0x4", 0.5, ValueError, ["R=0"]),
    ("block:3x3", 0.5, ValueError, ["0.weight", "[16, 72]"]),
    ("pattern", 0.7, ValueError, ["3x3", "5.weight"]),
    ("pattern", 0.3, ValueError, ["5/9"]),
    ("2:4", 0.6, ValueError, ["1 - N/M", "0.6"]),
    ("filters", 0.5, ValueError, ["unknown granularity", "unstructured"]),
    ("head", 0.5, ValueError, ["granularity 'head'"]),  # nm_cnn has no attention heads
    ("layer", 0.5, ValueError, ["granularity 'layer'"]),  # ... and no residual blocks
    ("channel", None, TypeError, ["sparsity"]),
    ("channel", 1.0, ValueError, ["sparsity"]),
])
def test_bad_granularity_calls_leave_the_model_untouched(spec, sparsity, exc, words):
    model = nm_cnn()
    snap = snapshot(model)
    with pytest.raises(exc) as info:
        pk.prune(model, sparsity, granularity=spec)
    for w in words:
        assert w in str(info.value)
    assert_untouched(model, snap)
    pk.prune(model, 0.3)  # an already masked model stays untouched too
    snap = snapshot(model)
    with pytest.raises(exc):
        pk.prune(model, sparsity, granularity=spec)
    assert_untouched(model, snap)


def test_channel_mask_can_be_applied_and_compacts_outputs():
    model = tiny_cnn()
    masks = pk.prune(model, 0.5, granularity="channel", scope="layer")
    conv = model[0]
    gone = removed_channels(masks["0.weight"])
    assert len(gone) == 4
    x = torch.randn(2, 3, 8, 8)
    out = nn.functional.conv2d(x, conv.weight, None, padding=1)
    assert torch.all(out[:, sorted(gone)] == 0)


def test_pattern_scope_is_ignored():
    scores = scores_for("pattern")
    a = pk.make_masks(scores, 0.8, "pattern", "global")
    b = pk.make_masks(scores, 0.8, "pattern", "layer")
    assert all(torch.equal(a[n], b[n]) for n in scores)
