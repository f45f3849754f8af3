"""prunekit.experiments.when: the cached results of the book's chapter "When to prune".

A tiny configuration (``QUICK``) exercises every experiment in a few seconds; the numbers of
record come from ``CONFIG`` and are checked by the notebook against the shipped JSON.
"""

from __future__ import annotations

import json

import pytest
import torch

import prunekit as pk
from prunekit.experiments import when


@pytest.fixture(scope="module")
def quick():
    return when.run(when.QUICK, progress=False)


def test_quick_run_has_every_experiment(quick):
    assert set(quick) == {"config", "collapse", "during", "soft_filter", "movement", "after",
                          "lottery", "runtime", "tokens", "seconds"}
    assert set(quick["collapse"]["sanity"]) == {"snip"}
    c = quick["collapse"]
    assert c["compressions"] == when.QUICK["collapse_compressions"]
    assert set(c["kept"]) == set(when.QUICK["collapse_methods"])
    # compression 1: nothing pruned; 10: exactly round(N / 10) weights kept by the global methods
    n = sum(c["sizes"])
    assert all(rows[0] == c["sizes"] for rows in c["kept"].values())
    for method in ("magnitude", "snip", "SynFlow (one-shot)", "SynFlow (iterative)", "FORCE"):
        assert sum(c["kept"][method][1]) == n - round(0.9 * n), method
    assert c["max_compression"]["magnitude"] == 10.0          # collapses at 100x
    assert c["max_compression"]["SynFlow (iterative)"] == 100.0
    assert set(quick["during"]["accuracy"]) == set(when.DURING)
    assert quick["during"]["dst_counts_constant"] is True
    assert len(quick["lottery"]["ticket"][0]) == when.QUICK["ticket_levels"]


def test_dst_keeps_every_layer_count():
    cfg = {**when.QUICK, "steps": 30}
    for method in ("SET", "RigL"):
        r = when.train_sparse(method, 0, cfg, record="fc2.weight")
        counts = torch.tensor(r["counts"])
        assert len(counts) == 3 and (counts == counts[0]).all()   # updates at steps 10, 20, 30
        assert all(int(f.sum()) == r["kept"]["fc2.weight"] for f in r["frames"])
        assert list(r["kept"].values()) == counts[0].tolist()


def test_lottery_tickets_are_rewound_and_nested():
    cfg = {**when.QUICK, "ticket_steps": 5, "ticket_levels": 2}
    r = when.lottery(0, cfg, keep_models=True)
    assert r["sparsity"] == [0.5, 0.75]
    previous = None
    for ticket in r["models"]:
        masks = pk.get_masks(ticket)
        state = {k.replace("_orig", ""): v for k, v in ticket.state_dict().items()
                 if not k.endswith("_mask")}
        for key, value in r["init"].items():
            if key in masks:
                assert torch.equal(state[key][masks[key]], value[masks[key]]), key
            else:
                assert torch.equal(state[key], value), key
        if previous is not None:
            assert all(not (masks[k] & ~previous[k]).any() for k in masks)
        previous = masks


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        when.train_sparse("lottery", 0, when.QUICK)


def test_main_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(when, "run", lambda cfg, progress=True: {"config": cfg, "seconds": 0.0})
    out = tmp_path / "w.json"
    assert when.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["config"]["seeds"] == when.QUICK["seeds"]


def test_shipped_results_match_the_code():
    """The JSON the book loads was computed with today's CONFIG."""
    r = when.load()
    assert r["config"] == json.loads(json.dumps(when.CONFIG))
    assert len(r["during"]["accuracy"]["RigL"]) == len(when.CONFIG["seeds"])
    assert r["during"]["dst_counts_constant"] is True


def test_sanity_variants_keep_the_layer_ratios():
    import itertools

    from prunekit import data

    train_loader, _ = data.digits(flatten=True)
    batches = list(itertools.islice(train_loader, 2))
    cfg = when.QUICK
    def counts(masks):
        return {k: int(m.sum()) for k, m in masks.items()}

    base = pk.get_masks(when.sanity_model("snip", "mask", 0, batches, cfg, 10.0))
    for variant in ("shuffled", "reinit", "inverted"):
        masks = pk.get_masks(when.sanity_model("snip", variant, 0, batches, cfg, 10.0))
        if variant != "inverted":                    # same ratios per layer
            assert counts(masks) == counts(base), variant
        assert sum(counts(masks).values()) == sum(counts(base).values())
    shuffled = pk.get_masks(when.sanity_model("snip", "shuffled", 0, batches, cfg, 10.0))
    assert any(not torch.equal(shuffled[k], base[k]) for k in base)
    assert when.sanity_model("FORCE", "inverted", 0, batches, cfg, 10.0) is None
    with pytest.raises(ValueError, match="unknown variant"):
        when.sanity_model("snip", "flipped", 0, batches, cfg, 10.0)


def test_run_uses_one_thread_and_restores_the_count(monkeypatch):
    seen = []
    monkeypatch.setattr(when, "_run", lambda cfg, progress: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        when.run(when.QUICK, progress=False)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_soft_filter_and_hard_keep_the_same_filters(quick):
    # SmallCNN 16-32-64 at 50%: exactly 8, 16, 32 filters kept, so the same MACs
    sf = quick["soft_filter"]
    assert set(sf) == {"SFP", "hard"}
    assert sf["SFP"]["filters"] == sf["hard"]["filters"] == [8, 16, 32]
    assert sf["SFP"]["macs"] == sf["hard"]["macs"] == 44160
    r = when.soft_filter(0, {**when.QUICK, "sfp": {"sparsity": 0.5, "epochs": 2}})
    assert r["SFP"]["history"] == [[8, 16, 32], [8, 16, 32]]      # one update per epoch


def test_movement_run_is_reproducible(quick):
    mv = quick["movement"]
    assert set(mv) == {"dense", "movement", "magnitude"}
    again = when.movement(0, when.QUICK)
    assert again == {k: v[0] for k, v in mv.items()}
