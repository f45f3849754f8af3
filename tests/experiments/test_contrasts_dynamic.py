"""contrasts.dynamic: static L1 channel pruning vs. FBS gating at equal conv MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, dynamic
from prunekit.experiments.contrasts.common import digits_loaders, pretrained
from prunekit.experiments.when import fbs_gated, static_channels
from prunekit.methods import ChannelGate


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(dynamic.EXPERIMENT, quick=True, seeds=[0],
                      cache_dir=tmp_path_factory.mktemp("dyn"), shipped=False, progress=False)


def test_rows_have_grid_and_both_sides(quick):
    rows = quick.rows()
    for s in GRID:
        assert {dynamic.SIDE_OF[r["setting"]] for r in rows if r["sparsity"] == s} == set(dynamic.SIDES)
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0


def test_both_sides_execute_the_target_conv_macs(quick):
    # the executed conv MACs are within the stated tolerance of 1 - sparsity, the same for both
    tol = dynamic.CONFIG["tolerance"]
    for s in GRID:
        static = next(r for r in quick.rows() if r["sparsity"] == s and r["setting"] == "static channels")
        gated = next(r for r in quick.rows() if r["sparsity"] == s and r["setting"] == "dynamic gating")
        assert abs(1.0 - static["conv_fraction"] - s) <= tol
        assert gated["conv_fraction"] == pytest.approx(static["conv_fraction"], abs=1e-6)
        assert static["channels"] == gated["channels"]
        # whole-network MACs: the dynamic side pays a little for its predictors
        assert 0.0 < gated["macs"] - static["macs"] < 0.05 * static["macs"] / (1 - s)


def test_static_model_is_compact_and_dynamic_counts_per_input():
    model = pretrained(0)
    loader, test = digits_loaders()
    x = next(iter(test))[0]
    geo = dynamic._conv_geometry(model, x[:1])
    keep, frac = dynamic.choose_keep(geo, 0.7)
    static = static_channels(model, keep, loader, 1, 0, x[:1])
    convs = [m for m in static.modules() if isinstance(m, nn.Conv2d)]
    kept = [m.out_channels for m in convs]
    assert kept == [round(keep * c) for _, c, _ in geo] and kept != [16, 32, 64]
    assert all(m.weight.ne(0).flatten(1).any(dim=1).all() for m in convs)   # no dead filter left
    assert dynamic.conv_macs(geo, kept) == pytest.approx(frac * dynamic.conv_macs(geo))
    gated = fbs_gated(model, keep, loader, 1, 0, 0.01)
    per_input = dynamic.dynamic_conv_macs(gated, geo, x)
    assert torch.all(per_input == dynamic.conv_macs(geo, kept))           # FBS: k channels per input
    assert sum(isinstance(m, ChannelGate) for m in gated.modules()) == 3


def test_trial_is_deterministic(quick):
    cfg = dynamic.EXPERIMENT.configure(quick=True)
    assert quick.same_as({0: runner.run_trial(dynamic.EXPERIMENT, cfg, 0)})
