"""prunekit.experiments.contrasts.scratch: training the pruned network from scratch vs
fine-tuning it (experiment ``scratch-vs-finetune``, Liu et al. 2019)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, scratch
from prunekit.experiments.contrasts.common import pretrained


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(scratch.EXPERIMENT, quick=True, seeds=[0],
                      cache_dir=tmp_path_factory.mktemp("cache"), shipped=False, progress=False)


@pytest.fixture(scope="module")
def base():
    return pretrained(0)


def test_quick_rows_cover_the_grid_and_both_sides(quick):
    rows = quick.trials[0]
    assert {r["sparsity"] for r in rows} == set(GRID)
    assert {(r["setting"], r["sparsity"]) for r in rows} == {(s, g) for s in scratch.SETTINGS for g in GRID}
    assert {scratch.SIDE_OF[r["setting"]] for r in rows} == set(scratch.SIDES)
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert abs(r["achieved_sparsity"] - r["sparsity"]) < 0.02


def test_budgets_are_as_stated(quick):
    cfg = quick.config
    dense_macs = max(r["macs"] for r in quick.trials[0])
    for r in quick.trials[0]:
        if r["setting"].endswith("fine-tune"):
            assert r["train_steps"] == cfg["finetune_steps"]
        elif r["setting"].endswith("scratch-E"):
            assert r["train_steps"] == cfg["scratch_steps"]
        else:       # scratch-B: scratch-E's steps x the MACs saved, at most twice
            ratio = min(cfg["scratch_b_cap"], dense_macs / r["macs"])
            assert r["train_steps"] == round(cfg["scratch_steps"] * ratio)
            assert cfg["scratch_steps"] < r["train_steps"] <= 2 * cfg["scratch_steps"]
    # the full configuration trains scratch-E for the recipe's 15 epochs of 22 batches
    full = scratch.EXPERIMENT.configure()
    assert full["scratch_steps"] is None and scratch._RECIPE["recipe"]["epochs"] == 15


def test_structured_pruning_keeps_the_largest_l1_filters(base):
    x = scratch.example_input()
    ratio = scratch.channel_ratio(0.7)
    small = scratch.structured_prune(base, ratio, x)
    w0, s0 = base.features[0].weight.detach(), small.features[0].weight.detach()
    keep = w0.abs().sum((1, 2, 3)).argsort(descending=True)[: s0.shape[0]].sort().values
    assert torch.equal(s0, w0[keep])
    assert small.classifier[2].out_features == round(ratio * 64)
    # the pruned network computes what the masked one does (compact checks it too)
    assert pk.count_params(small) < pk.count_params(base)


def test_scratch_models_have_the_compacted_architecture_but_new_weights(base):
    x = scratch.example_input()
    for s in GRID:
        small = scratch.structured_prune(base, scratch.channel_ratio(s), x)
        fresh = scratch.reinit(small, 1000)
        a, b = small.state_dict(), fresh.state_dict()
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
        assert pk.count_params(fresh) == pk.count_params(small)
        for name, p in small.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                assert not torch.allclose(p, dict(fresh.named_parameters())[name])
        # the unstructured counterpart keeps as many conv and linear weights
        achieved = 1.0 - scratch.prunable_weights(small) / scratch.prunable_weights(base)
        masks = pk.prune(copy.deepcopy(base), achieved, "magnitude")
        assert abs(sum(int(m.sum()) for m in masks.values()) - scratch.prunable_weights(small)) <= 1


def test_quick_trial_is_deterministic(quick):
    again = runner.run_trial(scratch.EXPERIMENT, quick.config, 0)
    assert quick.same_as({0: again})
