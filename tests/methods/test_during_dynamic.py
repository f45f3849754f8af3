"""SET / RigL per-layer updates: exact small cases, a slow reference, properties, errors."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

from prunekit.methods.during.dynamic import drop_count, new_connections, rigl_update, set_update


def slow_rigl(weight, mask, grad, f):
    """Plain-Python reference: drop the k smallest |w| among active (lowest index first among
    ties), grow the k largest |g| among the inactive-after-drop (lowest index first)."""
    w, m, g = weight.flatten().tolist(), mask.flatten().tolist(), grad.flatten().tolist()
    k = math.floor(f * sum(m))
    active = sorted((abs(w[i]), i) for i in range(len(m)) if m[i])
    dropped = {i for _, i in active[:k]}
    kept = [m[i] and i not in dropped for i in range(len(m))]
    cands = sorted((-abs(g[i]), i) for i in range(len(m)) if not kept[i])
    grown = {i for _, i in cands[:k]}
    return torch.tensor([kept[i] or i in grown for i in range(len(m))]).view(mask.shape), dropped, grown


def test_rigl_exact_small_case():
    w = torch.tensor([[0.9, -0.2, 0.0, 0.4], [0.05, 0.0, -0.7, 0.0]])
    m = torch.tensor([[True, True, False, True], [True, False, True, False]])
    g = torch.tensor([[0.0, 5.0, 0.3, 0.0], [1.0, -2.0, 0.0, 0.1]])
    # 5 active, drop_fraction 0.5 -> k = 2: drop 0.05 (index 4) and -0.2 (index 1);
    # grow among indices {1, 2, 4, 5, 7}: |g| = 5.0 (1, just dropped), 2.0 (5)
    new = rigl_update(w, m, g, 0.5)
    assert new.tolist() == [[True, True, False, True], [False, True, True, False]]
    assert new_connections(m, new).tolist() == [[False] * 4, [False, True, False, False]]
    assert m.tolist() == [[True, True, False, True], [True, False, True, False]]  # inputs untouched


def test_rigl_ties_go_by_index():
    w = torch.tensor([0.1, 0.1, 0.1, 0.1])
    m = torch.tensor([True, True, True, False])
    g = torch.zeros(4)
    # k = floor(0.7 * 3) = 2: drop indices 0 and 1; grow among {0, 1, 3}, all |g| = 0: 0 and 1
    assert rigl_update(w, m, g, 0.7).tolist() == m.tolist()
    g = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert rigl_update(w, m, g, 0.7).tolist() == [True, False, True, True]


def test_zero_fraction_and_full_fraction():
    w = torch.tensor([3.0, 1.0, 2.0, 0.0])
    m = torch.tensor([True, True, True, False])
    g = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert rigl_update(w, m, g, 0.0).tolist() == m.tolist()
    # drop all three, grow the three largest |g| among all four: 3 first, then 0, 1 (index order)
    assert rigl_update(w, m, g, 1.0).tolist() == [True, True, False, True]
    assert drop_count(m, 0.99) == 2 and drop_count(m, 1.0) == 3


masks_st = st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.sampled_from([0.0, 0.5, -0.5, 1.0, 2.0, -3.0]), min_size=n, max_size=n),
))


@given(masks_st, st.floats(0, 1))
def test_rigl_against_slow_reference_and_invariants(data, f):
    w, m, g = (torch.tensor(x) for x in data)
    new = rigl_update(w, m, g, f)
    want, dropped, grown = slow_rigl(w, m, g, f)
    assert torch.equal(new, want)
    assert int(new.sum()) == int(m.sum())                       # the count never changes
    assert all(m[i] for i in dropped)                           # dropped among the old active
    assert all((not m[i]) or i in dropped for i in grown)       # grown among inactive-after-drop
    assert len(dropped) == len(grown) == math.floor(f * int(m.sum()))


@given(masks_st, st.floats(0, 1), st.integers(0, 2**31))
def test_set_invariants_and_determinism(data, f, seed):
    w, m, _ = (torch.tensor(x) for x in data)
    new = set_update(w, m, f, torch.Generator().manual_seed(seed))
    again = set_update(w, m, f, torch.Generator().manual_seed(seed))
    assert torch.equal(new, again)
    assert int(new.sum()) == int(m.sum())
    k = math.floor(f * int(m.sum()))
    _, dropped, _ = slow_rigl(w, m, torch.zeros_like(w), f)     # SET drops exactly as RigL
    kept = m.clone()
    kept[list(dropped)] = False
    assert torch.all(new[kept])                                 # the kept ones stay
    assert int((new & ~kept).sum()) == k                        # k grown, anywhere outside kept


def test_set_grows_uniformly_including_just_dropped():
    w = torch.tensor([1.0, 0.1, 0.0, 0.0, 0.0])
    m = torch.tensor([True, True, False, False, False])
    counts = torch.zeros(5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4000):
        counts += set_update(w, m, 0.5, gen).float()   # drop index 1, grow one of {1, 2, 3, 4}
    assert counts[0] == 4000
    assert torch.all((counts[1:] - 1000).abs() < 150), counts  # about 1000 each


def test_set_default_generator_and_shapes():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 2)
    m = w.abs() > 0.5
    new = set_update(w, m, 0.3)
    assert new.shape == m.shape and new.dtype == torch.bool and int(new.sum()) == int(m.sum())


@pytest.mark.parametrize("call, exc, name", [
    (lambda w, m, g: rigl_update(w.tolist(), m, g, 0.3), TypeError, "weight"),
    (lambda w, m, g: rigl_update(w, m.float(), g, 0.3), TypeError, "mask"),
    (lambda w, m, g: rigl_update(w, m[:2], g, 0.3), ValueError, "mask"),
    (lambda w, m, g: rigl_update(w, m, g[:2], 0.3), ValueError, "grad"),
    (lambda w, m, g: rigl_update(w, m, g.long(), 0.3), TypeError, "grad"),
    (lambda w, m, g: rigl_update(w, m, g * float("nan"), 0.3), ValueError, "grad"),
    (lambda w, m, g: rigl_update(w, m, g, 1.5), ValueError, "drop_fraction"),
    (lambda w, m, g: rigl_update(w, m, g, -0.1), ValueError, "drop_fraction"),
    (lambda w, m, g: rigl_update(w, m, g, "0.3"), TypeError, "drop_fraction"),
    (lambda w, m, g: set_update(w, m, 0.3, 7), TypeError, "generator"),
    (lambda w, m, g: set_update(w, m, float("nan")), ValueError, "drop_fraction"),
    (lambda w, m, g: new_connections(m, m.float()), TypeError, "new_mask"),
])
def test_bad_arguments(call, exc, name):
    w, m, g = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True]), torch.ones(3)
    with pytest.raises(exc, match=name):
        call(w, m, g)
