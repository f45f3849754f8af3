"""Schedules: known values, endpoints, properties, the CubicSL cross-check, argument errors."""

from __future__ import annotations

import math
import warnings

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn

from prunekit.schedules import agp, cosine_decay, iterative


def _cubic(t, s_i, s_f, t0, t_end):
    return s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3


# ---------------------------------------------------------------- agp: known values

def test_agp_known_values_every_step():
    got = [agp(t, final_sparsity=0.9, begin_step=10, end_step=20) for t in range(25)]
    assert got[:11] == [0.0] * 11
    assert got[20:] == [0.9] * 5
    for t in range(11, 20):  # 0.9 * (1 - (1 - (t-10)/10)^3)
        assert got[t] == pytest.approx(0.9 * (1 - (1 - (t - 10) / 10) ** 3), abs=1e-15)
    assert got[15] == pytest.approx(0.7875)  # 0.9 * (1 - 1/8)


def test_agp_holds_between_update_steps():
    kw = dict(final_sparsity=0.8, initial_sparsity=0.2, begin_step=4, end_step=16, frequency=3)
    got = [agp(t, **kw) for t in range(20)]
    assert got[:5] == [0.2] * 5            # before and at begin: s_i
    assert got[5:7] == [0.2] * 2           # held until the first update after begin
    for t in range(7, 16):
        last = 4 + (t - 4) // 3 * 3
        assert got[t] == pytest.approx(_cubic(last, 0.2, 0.8, 4, 16), abs=1e-15)
    assert got[7] == got[8] == got[9] != got[10]
    assert got[16:] == [0.8] * 4


def test_agp_end_step_is_an_update_step_when_frequency_does_not_divide():
    kw = dict(final_sparsity=0.5, begin_step=0, end_step=10, frequency=4)
    assert agp(8, **kw) == agp(9, **kw) == pytest.approx(_cubic(8, 0.0, 0.5, 0, 10))
    assert agp(10, **kw) == 0.5


def test_agp_equal_initial_and_final_is_flat():
    assert {agp(t, final_sparsity=0.3, initial_sparsity=0.3, begin_step=0, end_step=5) for t in range(9)} == {0.3}


settings_st = st.tuples(
    st.floats(0, 0.999), st.floats(0, 0.999), st.integers(0, 50), st.integers(1, 200), st.integers(1, 30)
).map(lambda a: (min(a[0], a[1]), max(a[0], a[1]), a[2], a[2] + a[3], a[4]))


@given(settings_st)
def test_agp_monotone_with_exact_endpoints(args):
    s_i, s_f, t0, t_end, dt = args
    kw = dict(final_sparsity=s_f, initial_sparsity=s_i, begin_step=t0, end_step=t_end, frequency=dt)
    values = [agp(t, **kw) for t in range(-2, t_end + 3)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert agp(t0, **kw) == s_i and agp(-1, **kw) == s_i
    assert agp(t_end, **kw) == s_f and agp(t_end + 100, **kw) == s_f
    assert all(s_i <= v <= s_f for v in values)
    for t in range(t0, t_end, dt):  # at the update steps: the cubic itself
        assert agp(t, **kw) == pytest.approx(_cubic(t, s_i, s_f, t0, t_end), abs=1e-12)


# ---------------------------------------------------------------- agp vs torch.ao CubicSL

def _cubic_sl_values(s_i, s_f, t0, dt, n, steps):
    from torch.ao.pruning import WeightNormSparsifier
    from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL

    model = nn.Sequential(nn.Linear(4, 4))
    sparsifier = WeightNormSparsifier(sparsity_level=s_f, sparse_block_shape=(1, 1), zeros_per_block=1)
    sparsifier.prepare(model, config=[{"tensor_fqn": "0.weight"}])
    scheduler = CubicSL(sparsifier, init_sl=s_i, init_t=t0, delta_t=dt, total_t=n)
    values = [scheduler.get_last_sl()[0]]  # last_epoch == 0 after construction
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(1, steps):
            sparsifier.step()
            scheduler.step()
            values.append(scheduler.get_last_sl()[0])
    return values


@pytest.mark.parametrize("s_i, s_f, t0, dt, n", [(0.0, 0.9, 5, 3, 6), (0.1, 0.75, 0, 1, 10), (0.3, 0.6, 2, 4, 4)])
def test_agp_matches_torch_cubic_sl_at_update_steps(s_i, s_f, t0, dt, n):
    """CubicSL(init_sl=s_i, init_t=t0, delta_t=dt, total_t=n) with sparsity_level=s_f is agp with
    begin_step=t0, end_step=t0 + n*dt, frequency=dt at every update step and outside the ramp;
    between update steps CubicSL evaluates the cubic at the step itself, agp holds the last value."""
    t_end = t0 + n * dt
    steps = t_end + 5
    theirs = _cubic_sl_values(s_i, s_f, t0, dt, n, steps)
    kw = dict(final_sparsity=s_f, initial_sparsity=s_i, begin_step=t0, end_step=t_end, frequency=dt)
    ours = [agp(t, **kw) for t in range(steps)]
    for t in range(steps):
        on_grid = t <= t0 or t >= t_end or (t - t0) % dt == 0
        if on_grid:
            assert ours[t] == pytest.approx(theirs[t], abs=1e-12), t
        else:  # CubicSL moves on at every step, agp holds: agp lags, never leads
            assert ours[t] < theirs[t]
            assert ours[t] == pytest.approx(theirs[t0 + (t - t0) // dt * dt], abs=1e-12)


# ---------------------------------------------------------------- iterative

def test_iterative_closed_form():
    assert iterative(0.875, 3) == pytest.approx([0.5, 0.75, 0.875], abs=1e-15)
    assert iterative(0.875, 3)[-1] == 0.875
    assert iterative(0.9, 1) == [0.9]
    assert iterative(0.0, 4) == [0.0] * 4
    got = iterative(0.8, 5)
    assert got == pytest.approx([1 - 0.2 ** (k / 5) for k in range(1, 6)], abs=1e-15)


@given(st.floats(0, 0.9999), st.integers(1, 40))
def test_iterative_removes_the_same_fraction_of_what_remains(s_f, rounds):
    s = iterative(s_f, rounds)
    assert len(s) == rounds and s[-1] == s_f
    assert all(a <= b for a, b in zip(s, s[1:]))
    kept = [1.0] + [1 - x for x in s]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert ratios == pytest.approx([(1 - s_f) ** (1 / rounds)] * rounds, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- cosine_decay

def test_cosine_decay_known_values():
    assert cosine_decay(0, initial=0.3, end_step=100) == 0.3
    assert cosine_decay(50, initial=0.3, end_step=100) == pytest.approx(0.15, abs=1e-15)
    assert cosine_decay(25, initial=0.3, end_step=100) == pytest.approx(0.15 * (1 + math.sqrt(0.5)), abs=1e-15)
    assert cosine_decay(100, initial=0.3, end_step=100) == 0.0
    assert cosine_decay(1000, initial=0.3, end_step=100) == 0.0


@given(st.floats(0, 1), st.integers(1, 500))
def test_cosine_decay_monotone_and_bounded(a, t_end):
    values = [cosine_decay(t, initial=a, end_step=t_end) for t in range(t_end + 3)]
    assert values[0] == a and values[t_end:] == [0.0] * 3
    assert all(x >= y for x, y in zip(values, values[1:]))
    assert all(0.0 <= v <= a for v in values)


# ---------------------------------------------------------------- errors name the argument

AGP_OK = dict(final_sparsity=0.5, begin_step=0, end_step=10)


@pytest.mark.parametrize("kw, exc, name", [
    (dict(final_sparsity=1.0), ValueError, "final_sparsity"),
    (dict(final_sparsity=-0.1), ValueError, "final_sparsity"),
    (dict(final_sparsity=float("nan")), ValueError, "final_sparsity"),
    (dict(final_sparsity="0.5"), TypeError, "final_sparsity"),
    (dict(final_sparsity=True), TypeError, "final_sparsity"),
    (dict(initial_sparsity=1.5), ValueError, "initial_sparsity"),
    (dict(initial_sparsity=0.6), ValueError, "initial_sparsity"),
    (dict(end_step=0), ValueError, "end_step"),
    (dict(begin_step=10), ValueError, "end_step"),
    (dict(begin_step=-1), ValueError, "begin_step"),
    (dict(begin_step=1.0), TypeError, "begin_step"),
    (dict(end_step=10.5), TypeError, "end_step"),
    (dict(frequency=0), ValueError, "frequency"),
    (dict(frequency=2.0), TypeError, "frequency"),
])
def test_agp_bad_arguments(kw, exc, name):
    with pytest.raises(exc, match=name):
        agp(3, **{**AGP_OK, **kw})


def test_agp_bad_step():
    with pytest.raises(TypeError, match="step"):
        agp(1.5, **AGP_OK)


@pytest.mark.parametrize("args, exc, name", [
    ((1.0, 3), ValueError, "final_sparsity"), ((-0.5, 3), ValueError, "final_sparsity"),
    ((None, 3), TypeError, "final_sparsity"), ((0.5, 0), ValueError, "rounds"),
    ((0.5, 2.0), TypeError, "rounds"), ((0.5, True), TypeError, "rounds"),
])
def test_iterative_bad_arguments(args, exc, name):
    with pytest.raises(exc, match=name):
        iterative(*args)


@pytest.mark.parametrize("step, kw, exc, name", [
    (-1, dict(initial=0.3, end_step=10), ValueError, "step"),
    (1, dict(initial=1.5, end_step=10), ValueError, "initial"),
    (1, dict(initial=0.3, end_step=0), ValueError, "end_step"),
    (1, dict(initial=0.3, end_step=torch.tensor(3)), TypeError, "end_step"),
    (0.5, dict(initial=0.3, end_step=10), TypeError, "step"),
])
def test_cosine_decay_bad_arguments(step, kw, exc, name):
    with pytest.raises(exc, match=name):
        cosine_decay(step, **kw)
