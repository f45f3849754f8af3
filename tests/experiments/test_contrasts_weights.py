"""prunekit.experiments.contrasts.weights: pruning initialised vs pre-trained weights at an
equal training budget (experiment ``init-vs-pretrained``)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import prunekit as pk
from prunekit import train
from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, weights
from prunekit.experiments.contrasts.common import digits_loaders

EQUAL_BUDGET = ("at init: SNIP", "at init: random ERK", "after training: magnitude")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(weights.EXPERIMENT, quick=True, seeds=[0],
                      cache_dir=tmp_path_factory.mktemp("cache"), shipped=False, progress=False)


def test_quick_rows_cover_the_grid_and_both_sides(quick):
    rows = quick.trials[0]
    assert {r["sparsity"] for r in rows} >= set(GRID)
    assert {weights.SIDE_OF[r["setting"]] for r in rows if r["setting"] in weights.SIDE_OF} \
        == set(weights.SIDES)
    assert set(weights.SIDE_OF) == set(weights.SETTINGS) - {"after training (2x budget)"}
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0
        # the masks remove the asked fraction of the conv and linear weights
        sizes = {n: p.numel() for n, p in weights.fresh(0).named_parameters() if n in r["layer_density"]}
        kept = sum(r["layer_density"][n] * sizes[n] for n in sizes)
        assert kept / sum(sizes.values()) == pytest.approx(1 - r["sparsity"], abs=2e-3)


def test_every_setting_trains_the_same_counted_steps(monkeypatch):
    """Count the optimizer steps of the real training loop, independently of the rows."""
    cfg = weights.EXPERIMENT.configure(quick=True)
    seen = []
    original = train.train

    def counting(*args, callback=None, **kwargs):
        def both(info):
            seen.append(1)
            if callback is not None:
                callback(info)
        return original(*args, callback=both, **kwargs)

    monkeypatch.setattr(train, "train", counting)
    rows = weights.trial(cfg, 0)
    b = cfg["budget"]
    for r in rows:
        assert r["setting"] in EQUAL_BUDGET and r["train_steps"] == b
    # per sparsity: SNIP b + ERK b + magnitude's fine-tuning b/2; the dense half once
    n = len(cfg["sparsities"])
    assert len(seen) == n * (2 * b + (b - b // 2)) + b // 2


def test_reference_row_states_twice_the_budget(monkeypatch):
    # the bookkeeping only, made cheap: a fresh network stands in for the pre-trained one,
    # and the recipe "pre-trains" for one epoch (22 steps)
    monkeypatch.setattr(weights, "pretrained", weights.fresh)
    recipe = copy.deepcopy(weights._RECIPE)
    recipe["recipe"]["epochs"] = 1
    monkeypatch.setattr(weights, "_RECIPE", recipe)
    cfg = weights.EXPERIMENT.configure({"budget": 12, "reference": True, "sparsities": [0.9]})
    rows = weights.trial(cfg, 0)
    by = {r["setting"]: r for r in rows}
    assert [by[s]["train_steps"] for s in weights.SETTINGS] == [12, 12, 12, 24]
    with pytest.raises(ValueError, match="budget"):
        weights.trial({**cfg, "budget": 11}, 0)


@pytest.mark.parametrize("method", ["snip", "random ERK"])
def test_masks_at_init_stay_fixed_through_training(method):
    loader = digits_loaders()[0]
    train.set_seed(0, loader)
    batches = list(itertools.islice(loader, 2))
    net = weights.fresh(0)
    masks = {n: m.clone() for n, m in weights.mask_at_init(net, method, 0.9, batches, 0).items()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert weights.train_counted(net, 6, 0) == 6
    after = pk.get_masks(net)
    assert set(after) == set(masks)
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(after[name], mask)
        module = net.get_submodule(name.rsplit(".", 1)[0])
        w = module.weight.detach()                       # the effective (masked) weight
        assert (w[~mask] == 0).all()
        assert not torch.equal(params[name + "_orig"].detach()[mask], before[name + "_orig"][mask])


def test_quick_trial_is_deterministic(quick):
    again = runner.run_trial(weights.EXPERIMENT, quick.config, 0)
    assert quick.same_as({0: again})
