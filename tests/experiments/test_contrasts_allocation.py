"""Layer-wise vs global (prunekit.experiments.contrasts.allocation): uniform prunes every layer
alike, global removes exactly round(s N) weights, ERK follows its formula."""

import math

import pytest

from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, common, allocation as A


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(A.EXPERIMENT, quick=True, seeds=[0], cache_dir=tmp_path_factory.mktemp("cache"),
                      shipped=False, progress=False)


def test_quick_run_has_grid_and_both_sides(quick):
    rows = quick.trials[0]
    assert {r["sparsity"] for r in rows} >= set(GRID) | {0.95, 0.98}
    assert {A.SIDE_OF[r["setting"]] for r in rows} == set(A.SIDES)
    assert set(A.SIDE_OF) == set(A.SETTINGS)
    for r in rows:
        dens = [1 - v for v in r["layer_sparsity"].values()]
        assert r["min_layer_density"] == pytest.approx(min(dens), abs=1e-6)
        assert len(r["layer_sparsity"]) == 5      # first and last layer are pruned too


def _counts(masks):
    return {n: (int((~m).sum()), m.numel()) for n, m in masks.items()}


@pytest.mark.parametrize("s", [*GRID, 0.98])
def test_uniform_prunes_every_layer_alike(s):
    counts = _counts(A.prune_with(common.pretrained(0), "uniform", s))
    for removed, n in counts.values():
        assert abs(removed - s * n) <= 0.5 + 1e-9    # within one weight: round(s * n)


@pytest.mark.parametrize("setting", ["global magnitude", "LAMP"])
@pytest.mark.parametrize("s", [*GRID, 0.98])
def test_global_removes_exactly_round_s_n(setting, s):
    counts = _counts(A.prune_with(common.pretrained(0), setting, s))
    total = sum(n for _, n in counts.values())
    assert sum(r for r, _ in counts.values()) == round(s * total)


def _erk_by_hand(shapes, density):
    """Evci et al. 2020: density_l = eps * (sum of dims) / (product of dims), eps solved for the
    overall budget; a layer whose density would exceed 1 is made dense and eps solved again."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    dense: set = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        eps = (density * sum(numel.values()) - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in rest)
        over = [n for n in rest if eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.add(max(over, key=raw.get))


@pytest.mark.parametrize("s", [*GRID, 0.95, 0.98])
def test_erk_densities_follow_the_formula(s):
    counts = _counts(A.prune_with(common.pretrained(0), "ERK", s))
    shapes = {n: tuple(p.shape) for n, p in common.pretrained(0).named_parameters() if n in counts}
    assert list(shapes) == list(counts)
    expected = _erk_by_hand(shapes, 1 - s)
    for n, (removed, k) in counts.items():
        assert abs((k - removed) - expected[n] * k) <= 0.5 + 1e-6   # kept = round(density * n)
    assert any(d == 1.0 for d in expected.values()) == any(r == 0 for r, _ in counts.values())


def test_quick_trial_is_deterministic(quick):
    again = runner.run_trial(A.EXPERIMENT, quick.config, seed=0)
    assert quick.same_as({0: again})
