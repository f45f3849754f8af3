"""The one-shot vs. iterative contrast: runs, hits its sparsities exactly, spends equal steps."""

import pytest

import prunekit as pk
from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, schedule
from prunekit.experiments.contrasts.common import pretrained
from prunekit.schedules import iterative


def _n_weights(model):
    return sum(m.numel() for m in pk.get_masks(model).values())


def _n_pruned(model):
    return sum(int((~m).sum()) for m in pk.get_masks(model).values())


def test_quick_run_has_grid_and_both_sides(tmp_path):
    res = runner.run(schedule.EXPERIMENT, quick=True, seeds=[0], cache_dir=tmp_path, shipped=False, progress=False)
    rows = res.trials[0]
    assert {r["sparsity"] for r in rows} >= set(GRID)
    assert {schedule.SIDE_OF[r["setting"]] for r in rows} == set(schedule.SIDES)
    for r in rows:
        assert r["final_sparsity"] == pytest.approx(r["sparsity"], abs=1e-4)
        assert 0.0 <= r["accuracy"] <= 1.0


@pytest.mark.parametrize("sparsity", [0.7, 0.95])
def test_every_schedule_ends_exactly_at_the_target_with_equal_steps(sparsity):
    runs = {
        "one-shot": lambda m, cb: schedule.one_shot(m, sparsity, 7, 0, callback=cb),
        "iterative": lambda m, cb: schedule.iterative_prune(m, sparsity, 3, 7, 0, callback=cb),
        "gradual": lambda m, cb: schedule.gradual(m, sparsity, 7, 0, end=0.5, frequency=2, callback=cb),
    }
    for name, run in runs.items():
        model = pretrained(0)
        steps = []
        run(model, lambda info: steps.append(info.step))
        n = _n_weights(model)
        assert _n_pruned(model) == round(sparsity * n), name
        assert len(steps) == 7, name          # the same number of optimiser steps for all


def test_round_steps_sum_to_the_total():
    for total in (7, 12, 150):
        for k in (1, 3, 5):
            parts = schedule.round_steps(total, k)
            assert len(parts) == k and sum(parts) == total and max(parts) - min(parts) <= 1


def test_iterative_prunes_on_the_geometric_schedule(monkeypatch):
    calls = []
    real = pk.prune

    def spy(model, sparsity, *args, **kwargs):
        calls.append(sparsity)
        return real(model, sparsity, *args, **kwargs)

    monkeypatch.setattr(pk, "prune", spy)
    model = pretrained(0)
    assert schedule.iterative_prune(model, 0.9, 3, 3, 0) == 3
    assert calls == iterative(0.9, 3)
    assert calls[0] == pytest.approx(1 - 0.1 ** (1 / 3))   # same fraction of the remaining weights per round


def test_quick_trial_is_deterministic():
    cfg = schedule.EXPERIMENT.configure(quick=True)
    first = runner.run_trial(schedule.EXPERIMENT, cfg, 0)
    res = runner.Result(schedule.EXPERIMENT, cfg, {0: first})
    assert res.same_as({0: runner.run_trial(schedule.EXPERIMENT, cfg, 0)})
