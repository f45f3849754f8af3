"""Unstructured vs structured (prunekit.experiments.contrasts.granularity): the same parameter
count on both sides, whole channels as close to the target as they allow, real MAC savings."""

import math

import pytest
import torch

from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, common, granularity as G


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(G.EXPERIMENT, quick=True, seeds=[0], cache_dir=tmp_path_factory.mktemp("cache"),
                      shipped=False, progress=False)


def test_quick_run_has_grid_and_both_sides(quick):
    rows = quick.trials[0]
    assert {r["sparsity"] for r in rows} >= set(GRID)
    assert {G.SIDE_OF[r["setting"]] for r in rows} == set(G.SIDES)
    assert set(G.SIDE_OF.values()) == set(G.SIDES)
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 and r["speedup"] > 0


def test_equal_parameter_count_and_macs(quick):
    rows = {(r["setting"], r["sparsity"]): r for r in quick.trials[0]}
    n = sum(math.prod(s) for s in G.prunable(common.pretrained(0)).values())
    for s in GRID:
        st, un = rows["structured", s], rows["unstructured", s]
        # the unstructured side removes exactly what the structured side removed
        assert un["params"] == st["params"] == round(n * (1 - st["achieved_sparsity"]))
        assert abs(st["achieved_sparsity"] - s) < 0.01
        # dense kernels run every MAC of the unstructured model; the compacted one runs fewer
        assert un["macs"] == un["dense_macs"] and st["macs"] < st["dense_macs"]
        assert un["macs_effective"] < un["macs"]


@pytest.mark.parametrize("s", [0.3, *GRID, 0.95])
def test_widths_within_one_channel_of_target(s):
    shapes = G.prunable(common.pretrained(0))
    widths = G.channel_widths(shapes, G.CONFIG["pruned"], s)
    dense = G.chain_params(shapes, {})
    gap = abs(G.chain_params(shapes, widths) - (1 - s) * dense)
    # the cheapest single channel of any pruned layer (its filter and the next layer's inputs)
    names = list(shapes)
    cheapest = min(G.chain_params(shapes, widths) - G.chain_params(shapes, {**widths, n: widths[n] - 1})
                   for n in G.CONFIG["pruned"] if widths[n] > 1)
    assert gap <= cheapest
    assert all(1 <= widths[n] <= shapes[n][0] for n in widths) and names[-1] not in widths


def test_structured_and_unstructured_models():
    dense = common.pretrained(0)
    x = torch.cat([b for b, _ in common.digits_loaders()[1]])[:8]
    shapes = G.prunable(dense)
    widths = G.channel_widths(shapes, G.CONFIG["pruned"], 0.7)
    small = G.structured(dense, widths, x[:1])
    kept = G.chain_params(shapes, widths)
    assert sum(m.weight.numel() for m in small.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))) == kept
    assert small.features[0].out_channels == widths["features.0.weight"]
    # L1 filters: the first conv keeps exactly its filters of largest L1 norm
    l1 = dense.features[0].weight.detach().abs().sum((1, 2, 3))
    top = torch.sort(l1, descending=True).values[: widths["features.0.weight"]]
    assert torch.allclose(torch.sort(small.features[0].weight.detach().abs().sum((1, 2, 3)),
                                     descending=True).values, top)
    n = sum(math.prod(s) for s in shapes.values())
    sparse = G.unstructured(dense, n - kept)
    assert G._prunable_nonzeros(sparse) == kept
    assert G._prunable_nonzeros(dense) == n        # the input is untouched


def test_quick_trial_is_deterministic(quick):
    again = runner.run_trial(G.EXPERIMENT, quick.config, seed=0)
    assert quick.same_as({0: again})
