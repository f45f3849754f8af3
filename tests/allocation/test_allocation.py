"""make_masks: exact counts, the tie rule, scopes, and equality with torch.nn.utils.prune."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from helpers import tiny_cnn


def reference_keep(scores: dict, sparsity: float) -> dict:
    """The documented rule written the slow, obvious way: stable ascending sort, never all."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    k = min(round(sparsity * flat.numel()), flat.numel() - 1)
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:k]] = False
    out, i = {}, 0
    for n, s in scores.items():
        out[n] = keep[i:i + s.numel()].view(s.shape)
        i += s.numel()
    return out


shapes = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 7)), min_size=1, max_size=4)


@st.composite
def score_dicts(draw):
    """Scores with many ties (small integer values) or none (floats)."""
    result = {}
    tied = draw(st.booleans())
    for i, shape in enumerate(draw(shapes)):
        n = shape[0] * shape[1]
        if tied:
            vals = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
            result[f"l{i}.weight"] = torch.tensor(vals, dtype=torch.float32).view(shape)
        else:
            vals = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n))
            result[f"l{i}.weight"] = torch.tensor(vals, dtype=torch.float32).view(shape)
    return result


sparsities = st.floats(0.0, 0.999, exclude_max=False)


@settings(max_examples=200, deadline=None)
@given(scores=score_dicts(), sparsity=sparsities)
def test_global_matches_stable_sort_rule(scores, sparsity):
    masks = pk.make_masks(scores, sparsity, scope="global")
    ref = reference_keep(scores, sparsity)
    n = sum(s.numel() for s in scores.values())
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == min(round(sparsity * n), n - 1)
    for name in scores:
        assert masks[name].dtype == torch.bool and masks[name].shape == scores[name].shape
        assert torch.equal(masks[name], ref[name])


@settings(max_examples=150, deadline=None)
@given(scores=score_dicts(), sparsity=sparsities)
def test_layer_scope_prunes_each_tensor_exactly(scores, sparsity):
    masks = pk.make_masks(scores, sparsity, scope="layer")
    for name, s in scores.items():
        assert int((~masks[name]).sum()) == min(round(sparsity * s.numel()), s.numel() - 1)
        assert torch.equal(masks[name], reference_keep({name: s}, sparsity)[name])


@settings(max_examples=100, deadline=None)
@given(scores=score_dicts(), a=sparsities, b=sparsities)
def test_masks_are_nested_across_sparsities(scores, a, b):
    lo, hi = sorted((a, b))
    m_lo, m_hi = pk.make_masks(scores, lo), pk.make_masks(scores, hi)
    for name in scores:  # whatever is kept at the higher sparsity is kept at the lower one
        assert not (m_hi[name] & ~m_lo[name]).any()


def test_kept_scores_dominate_pruned_scores():
    torch.manual_seed(0)
    scores = {"a": torch.randn(50, 20), "b": torch.randn(30)}
    masks = pk.make_masks(scores, 0.7)
    kept = torch.cat([scores[n][masks[n]] for n in scores])
    pruned = torch.cat([scores[n][~masks[n]] for n in scores])
    assert kept.min() >= pruned.max()


def test_ninety_percent_global_removes_round_of_n():
    model = tiny_cnn()
    masks = pk.prune(model, 0.9)
    n = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.9 * n)


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9, 0.97])
def test_global_equals_torch_global_unstructured(amount):
    ours, theirs = tiny_cnn(), tiny_cnn()
    masks = pk.prune(ours, amount, scope="global")
    params = [(m, "weight") for m in theirs.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    names = [n for n in masks]
    assert len(names) == len(params)
    for name, (module, _) in zip(names, params):
        assert torch.equal(masks[name], module.weight_mask.bool()), name


@pytest.mark.parametrize("amount", [0.3, 0.8])
def test_layer_scope_equals_torch_l1_unstructured(amount):
    ours, theirs = tiny_cnn(), tiny_cnn()
    masks = pk.prune(ours, amount, scope="layer")
    for name, module in theirs.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch_prune.l1_unstructured(module, "weight", amount=amount)
            assert torch.equal(masks[f"{name}.weight"], module.weight_mask.bool())


def test_per_layer_sparsity_dict():
    scores = {"a": torch.arange(10.0), "b": torch.arange(20.0)}
    masks = pk.make_masks(scores, {"a": 0.2, "b": 0.75}, scope="layer")
    assert masks["a"].tolist() == [False] * 2 + [True] * 8
    assert int(masks["b"].sum()) == 5


def test_global_prunes_small_layers_more():
    scores = {"small": torch.full((100,), 0.1), "large": torch.full((100,), 10.0)}
    masks = pk.make_masks(scores, 0.5, scope="global")
    assert int(masks["small"].sum()) == 0 and int(masks["large"].sum()) == 100


def test_zero_sparsity_keeps_everything():
    masks = pk.make_masks({"w": torch.randn(4, 4)}, 0.0)
    assert masks["w"].all()


def test_min_keep_spares_the_best_unit_of_each_tensor():
    scores = {"a": torch.tensor([0.1, 0.2, 0.3]), "b": torch.tensor([5.0, 6.0, 6.0, 7.0])}
    keep = pk.allocation.allocate(scores, 0.7, "global", min_keep=1)  # round(4.9) = 5 = 7 - 2 layers
    assert keep["a"].tolist() == [False, False, True]
    assert keep["b"].tolist() == [False, False, False, True]
    keep = pk.allocation.allocate({"b": torch.tensor([6.0, 6.0])}, 0.9, "layer", min_keep=1)
    assert keep["b"].tolist() == [False, True]  # of equals, the later one survives (stable order)
    keep = pk.allocation.allocate(scores, 0.5, "global", min_keep=0)
    assert keep["a"].tolist() == [False, False, False]


@pytest.mark.parametrize("kernels, sparsity, k", [(8, 5 / 9, 0), (8, 0.8, 4), (9, 0.99, 9), (10, 0.6, 1), (1, 0.7, 0)])
def test_pattern_kernel_count_is_closest(kernels, sparsity, k):
    assert pk.allocation.pattern_kernel_count(kernels, sparsity) == k
    best = min(range(kernels + 1), key=lambda j: abs((5 * kernels + 4 * j) / (9 * kernels) - sparsity))
    assert abs((5 * kernels + 4 * k) / (9 * kernels) - sparsity) == pytest.approx(
        abs((5 * kernels + 4 * best) / (9 * kernels) - sparsity))
