"""The data-free vs. data-driven contrast: runs, data-free criteria never see data, exact masks."""

import pytest
import torch

import prunekit as pk
from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, criteria
from prunekit.experiments.contrasts.common import pretrained


class NoData:
    """A loader that refuses to be iterated: a data-free criterion must never touch it."""

    def __iter__(self):
        raise AssertionError("a data-free criterion iterated the data")


def test_quick_run_has_grid_and_both_sides(tmp_path):
    res = runner.run(criteria.EXPERIMENT, quick=True, seeds=[0], cache_dir=tmp_path, shipped=False, progress=False)
    rows = res.trials[0]
    assert {r["sparsity"] for r in rows} >= set(GRID)
    assert {criteria.SIDE_OF[r["setting"]] for r in rows} == set(criteria.SIDES)


def test_data_free_criteria_never_see_data_and_data_driven_ones_do():
    x = torch.zeros(1, 1, 8, 8)
    free = [c for c, side in criteria.SIDE_OF.items() if side == "data-free"]
    driven = [c for c, side in criteria.SIDE_OF.items() if side == "data-driven"]
    assert "channel: L1" in free and "channel: Taylor" in driven
    for crit in free:
        criteria.prune_with(pretrained(0), crit, 0.5, NoData(), example_inputs=x, synflow_iterations=2)
    for crit in driven:
        with pytest.raises(AssertionError, match="iterated the data"):
            criteria.prune_with(pretrained(0), crit, 0.5, NoData(), example_inputs=x)


@pytest.mark.parametrize("crit", [*criteria.DATA_FREE, *criteria.DATA_DRIVEN])
def test_masks_have_the_exact_sparsity(crit):
    batches = criteria.score_batches(0, 1)
    model = pretrained(0)
    masks = criteria.prune_with(model, crit, 0.9, batches, example_inputs=batches[0][0][:1], synflow_iterations=3)
    n = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.9 * n)
    assert set(masks) == set(pk.get_masks(model))


def test_score_batches_are_the_same_for_a_seed():
    a, b, c = criteria.score_batches(3, 2), criteria.score_batches(3, 2), criteria.score_batches(4, 2)
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_quick_trial_is_deterministic():
    cfg = criteria.EXPERIMENT.configure(quick=True)
    first = runner.run_trial(criteria.EXPERIMENT, cfg, 0)
    res = runner.Result(criteria.EXPERIMENT, cfg, {0: first})
    assert res.same_as({0: runner.run_trial(criteria.EXPERIMENT, cfg, 0)})


@pytest.mark.parametrize("setting", list(criteria.CHANNEL))
def test_channel_settings_prune_the_same_fraction_of_channels_per_conv(setting):
    batches = criteria.score_batches(0, 1)
    model = pretrained(0)
    masks = criteria.prune_with(model, setting, 0.5, batches, example_inputs=batches[0][0][:1])
    convs = [n for n in masks if n.endswith(".weight") and masks[n].dim() == 4]
    assert len(convs) == 3
    for n in convs:
        dead = int((~masks[n].flatten(1).any(1)).sum())
        assert dead == round(0.5 * masks[n].shape[0]), n
    assert set(masks) == {"features.0.weight", "features.4.weight", "features.8.weight"}
