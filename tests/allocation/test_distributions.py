"""ER / ERK / uniform layer densities: hand-computed cases, the budget identity, dense layers,
agreement with a transcription of RigL's algorithm, and argument errors."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn

import prunekit as pk
from prunekit.allocation.distributions import erk, to_sparsity, uniform


def _budget_error(shapes, dens, density):
    n = {k: math.prod(v) for k, v in shapes.items()}
    total = sum(n.values())
    return abs(sum(dens[k] * n[k] for k in shapes) - density * total) / total


def test_erk_two_layers_by_hand():
    # p_a = (4+2)/8 = 0.75, p_b = (2+8)/16 = 0.625; eps = 12 / (6 + 10) = 0.75
    assert erk({"a": (4, 2), "b": (2, 8)}, 0.5) == {"a": 0.5625, "b": 0.46875}


def test_erk_makes_a_layer_dense_and_resolves():
    # density 0.9: eps = 21.6 / 16 = 1.35 -> d_a = 1.0125 > 1, so a is dense and
    # b gets (21.6 - 8) / 16 = 0.85
    d = erk({"a": (4, 2), "b": (2, 8)}, 0.9)
    assert d["a"] == 1.0 and d["b"] == pytest.approx(0.85, abs=1e-15)


def test_dense_layers_count_inside_the_budget():
    # a kept dense: b gets (12 - 8) / 16 = 0.25
    d = erk({"a": (4, 2), "b": (2, 8)}, 0.5, dense=["a"])
    assert d == {"a": 1.0, "b": 0.25}
    assert erk({"a": (4, 2), "b": (2, 8)}, 0.5, dense="a") == d  # one name as a string


def test_er_and_erk_differ_on_a_conv():
    shapes = {"conv": (4, 2, 3, 3), "fc": (10, 36)}  # 72 and 360 weights, budget 86.4
    er, k = erk(shapes, 0.2, kernel=False), erk(shapes, 0.2)
    # ER: p_conv = 6/8, p_fc = 46/360; eps = 86.4 / (54 + 46) = 0.864
    assert er["conv"] == pytest.approx(0.648, abs=1e-12) and er["fc"] == pytest.approx(0.1104, abs=1e-12)
    # ERK: p_conv = 12/72; eps = 86.4 / (12 + 46)
    eps = 86.4 / 58
    assert k["conv"] == pytest.approx(eps / 6, abs=1e-15) and k["fc"] == pytest.approx(eps * 46 / 360, abs=1e-15)
    assert er["conv"] > k["conv"] and er["fc"] < k["fc"]  # ER ignores the kernel: the conv looks smaller


def test_power_scale_zero_is_uniform():
    shapes = {"a": (4, 2), "b": (2, 8), "c": (16, 16)}
    assert erk(shapes, 0.3, power_scale=0.0) == pytest.approx(uniform(shapes, 0.3), abs=1e-15)


def test_density_one_and_tensors_as_shapes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4))
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    assert erk(weights, 1.0) == {"0.weight": 1.0, "2.weight": 1.0}
    assert erk(weights, 0.3) == erk({n: tuple(p.shape) for n, p in weights.items()}, 0.3)


def _rigl_reference(shapes, density, kernel=True, dense=()):
    """A plain transcription of the algorithm of rigl/sparse_utils.get_sparsities_erdos_renyi
    (floor of each layer's zeros, re-solve after making the largest-probability layers dense)."""
    sparsity = 1 - density
    full = set(dense)
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            zeros = math.floor(n * sparsity)
            if name in full:
                rhs -= zeros
            else:
                rhs += n - zeros
                dims = shape if kernel else shape[:2]
                raw[name] = sum(dims) / math.prod(dims)
                divisor += raw[name] * n
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps > 1:
            full.update(k for k, v in raw.items() if v == top)
        else:
            break
    return {k: 1.0 if k in full else eps * raw[k] for k in shapes}


shape_st = st.one_of(
    st.tuples(st.integers(1, 64), st.integers(1, 64)),
    st.tuples(st.integers(1, 32), st.integers(1, 32), st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5])),
)
shapes_st = st.dictionaries(st.sampled_from([f"l{i}" for i in range(8)]), shape_st, min_size=1, max_size=6)


@given(shapes_st, st.sampled_from([k / 8 for k in range(1, 9)]), st.booleans())
def test_erk_matches_the_rigl_algorithm(shapes, density, kernel):
    """Shapes scaled by 8 make floor(n * sparsity) exact for sparsities k/8, where the reference's
    integer budget equals ours."""
    shapes = {k: (v[0] * 8,) + v[1:] for k, v in shapes.items()}
    assert erk(shapes, density, kernel=kernel) == pytest.approx(_rigl_reference(shapes, density, kernel), rel=1e-12)


@given(shapes_st, st.floats(0.001, 1.0), st.booleans(), st.floats(0, 2), st.data())
def test_budget_identity(shapes, density, kernel, power, data):
    names = list(shapes)
    n = {k: math.prod(v) for k, v in shapes.items()}
    dense = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    if dense and sum(n[k] for k in dense) >= density * sum(n.values()) and density < 1:
        with pytest.raises(ValueError, match="dense"):
            erk(shapes, density, kernel=kernel, power_scale=power, dense=dense)
        return
    d = erk(shapes, density, kernel=kernel, power_scale=power, dense=dense)
    assert list(d) == names
    assert all(0 < v <= 1 for v in d.values())
    assert all(d[k] == 1.0 for k in dense)
    assert _budget_error(shapes, d, density) < 1e-9
    # among the sparse layers, density is proportional to the raw probability
    sparse = [k for k in names if d[k] < 1]
    for a in sparse:
        for b in sparse:
            dims_a = shapes[a] if kernel else shapes[a][:2]
            dims_b = shapes[b] if kernel else shapes[b][:2]
            pa = (sum(dims_a) / math.prod(dims_a)) ** power
            pb = (sum(dims_b) / math.prod(dims_b)) ** power
            assert d[a] * pb == pytest.approx(d[b] * pa, rel=1e-9)


def test_uniform_and_to_sparsity_feed_make_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 10))
    shapes = {n: p.shape for n, p in model.named_parameters() if n.endswith("weight")}
    dens = erk(shapes, 0.25)
    scores = {n: p.detach().abs() for n, p in model.named_parameters() if n in shapes}
    masks = pk.make_masks(scores, sparsity=to_sparsity(dens), scope="layer")
    for name, m in masks.items():
        assert int(m.sum()) == m.numel() - round((1 - dens[name]) * m.numel())
    assert uniform(shapes, 0.25) == {"0.weight": 0.25, "2.weight": 0.25}
    assert to_sparsity({"a": 0.25, "b": 1.0}) == {"a": 0.75, "b": 0.0}


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(shapes={"a": (4, 2)}, density=0.0), ValueError, "density"),
    (dict(shapes={"a": (4, 2)}, density=1.5), ValueError, "density"),
    (dict(shapes={"a": (4, 2)}, density=float("nan")), ValueError, "density"),
    (dict(shapes={"a": (4, 2)}, density="0.5"), TypeError, "density"),
    (dict(shapes={}, density=0.5), ValueError, "shapes"),
    (dict(shapes=[(4, 2)], density=0.5), TypeError, "shapes"),
    (dict(shapes={"a": (4, 0)}, density=0.5), ValueError, "shapes"),
    (dict(shapes={"a": (4, 2.0)}, density=0.5), TypeError, "shapes"),
    (dict(shapes={"a": (4,)}, density=0.5, kernel=False), ValueError, "shapes"),
    (dict(shapes={"a": (4, 2)}, density=0.5, kernel=1), TypeError, "kernel"),
    (dict(shapes={"a": (4, 2)}, density=0.5, power_scale=-1.0), ValueError, "power_scale"),
    (dict(shapes={"a": (4, 2)}, density=0.5, power_scale=float("inf")), ValueError, "power_scale"),
    (dict(shapes={"a": (4, 2)}, density=0.5, dense=["b"]), ValueError, "dense"),
    (dict(shapes={"a": (4, 2), "b": (2, 2)}, density=0.3, dense=["a"]), ValueError, "dense"),
    (dict(shapes={"a": (4, 2)}, density=0.5, dense=[1]), TypeError, "dense"),
])
def test_erk_bad_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        erk(**kwargs)


def test_uniform_and_to_sparsity_bad_arguments():
    with pytest.raises(ValueError, match="density"):
        uniform({"a": (2, 2)}, 0)
    with pytest.raises(ValueError, match="densities"):
        to_sparsity({"a": 1.5})
    with pytest.raises(TypeError, match="densities"):
        to_sparsity([0.5])
