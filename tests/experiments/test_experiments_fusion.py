"""prunekit.experiments.fusion: the cached results of the book's chapter "Fusion".

A tiny configuration (``QUICK``) exercises every experiment in a few seconds; the numbers of
record come from ``CONFIG`` and are checked by the notebook against the shipped JSON.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunekit.experiments import fusion


@pytest.fixture(scope="module")
def quick():
    return fusion.run(fusion.QUICK, progress=False)


def test_quick_run_has_every_experiment(quick):
    assert set(quick) == {"config", "deep_compression", "order", "int8", "kd", "decomposition",
                          "nas", "seconds"}
    json.dumps(quick)                                       # JSON-able
    stages = quick["deep_compression"]["stages"]
    assert list(stages) == ["dense", "pruned", "pruned + fine-tuned", "shared",
                            "shared + centroids trained", "+ Huffman"]
    assert stages["dense"]["bits"] == 32 * 28218
    # each stage stores less than the dense model
    assert stages["dense"]["bits"] > stages["pruned + fine-tuned"]["bits"] \
        > stages["shared + centroids trained"]["bits"]
    for name, layer in quick["deep_compression"]["layers"].items():
        assert layer["distinct"] - 1 <= 2 ** layer["weight_bits"], name   # + the zero
    assert set(quick["kd"]["KD"]) == {"0.9"} and len(quick["kd"]["KD"]["0.9"]) == 1
    d = quick["decomposition"]
    assert d["factorised"]["0.25"]["weights"] == d["pruned"]["0.25"]["weights"]
    assert d["factorised"]["0.25"]["weights"] <= 0.25 * d["dense_weights"]
    n = quick["nas"]
    for name in ("EagleEye", "uniform", "AMC", "MetaPruning"):
        assert all(f <= fusion.QUICK["nas_budget"] for f in n[name]["mac_fraction"]), name
        assert len(n[name]["kept"][0]) == len(n["layers"]), name
    assert quick["int8"]["pruned"]["int8"]["bytes"] < quick["int8"]["pruned"]["fp32"]["bytes"]


def test_seeded_runs_are_deterministic():
    cfg = {**fusion.QUICK, "kd_steps": 5}
    a, b = fusion.kd(cfg, progress=False), fusion.kd(cfg, progress=False)
    assert a == b


def test_pruned_bits_counts_relative_indices_and_fillers():
    w = torch.zeros(40)
    w[[0, 3, 39]] = 1.0        # gaps 0, 2, 35: 35 > 7 needs 35 // 8 = 4 fillers with 3 bits
    assert fusion.pruned_bits(w, 3) == (3 + 4) * (32 + 3)
    assert fusion.pruned_bits(w, 8) == 3 * (32 + 8)


def test_tucker_ranks_fit_the_budget():
    conv = nn.Conv2d(32, 64, 3)
    for f in (0.5, 0.25, 0.1):
        ro, ri = fusion.tucker_ranks(conv, f)
        assert 32 * ri + ri * ro * 9 + ro * 64 <= f * 64 * 32 * 9
        # the next rank up would not fit
        r = ro + 1
        ri2 = max(1, round(r * 32 / 64))
        assert 32 * ri2 + ri2 * r * 9 + r * 64 > f * 64 * 32 * 9


def test_shipped_results_match_the_config():
    r = fusion.load()
    assert r["config"] == fusion.CONFIG
    assert len(r["kd"]["KD"]["0.9"]) == len(fusion.CONFIG["seeds"])
