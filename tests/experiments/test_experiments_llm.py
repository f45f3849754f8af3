"""prunekit.experiments.llm: the cached results of the book's chapter on language models.

A tiny configuration (``QUICK``) exercises every experiment in a few seconds; the numbers of
record come from ``CONFIG`` and are checked by the notebook against the shipped JSON.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from prunekit.experiments import llm  # noqa: E402


@pytest.fixture(scope="module")
def quick():
    return llm.run(llm.QUICK, progress=False)


def test_quick_run_has_every_experiment(quick):
    assert set(quick) == {"config", "torch", "grid", "sweep", "calibration", "owl", "structured",
                          "seconds"}
    q = llm.QUICK
    g = quick["grid"]
    assert set(g["ppl"]) == set(q["methods"])
    assert all(set(v) == set(q["patterns"]) for v in g["ppl"].values())
    s = quick["sweep"]
    assert s["sparsity"] == q["sweep"]
    # sparsity 0 prunes nothing: every method gives the dense perplexity and the same text
    for method in q["methods"]:
        assert s["ppl"][method][0] == pytest.approx(g["dense"], rel=1e-6)
        assert s["text"][method][0] == s["text"]["magnitude"][0]
        assert s["text"][method][0].startswith(q["prompt"])
    c = quick["calibration"]
    assert c["sizes"] == q["calib_sizes"]
    assert len(c["ppl"]["wanda"]["50%"]) == len(q["calib_sizes"])
    o = quick["owl"]
    assert len(o["ratios"]) == 4
    layer_s = o["sparsities"]["0.5"]
    assert sum(layer_s) / len(layer_s) == pytest.approx(0.5)
    assert max(layer_s) - min(layer_s) == pytest.approx(2 * q["owl_lambda"])   # OWL's interval
    most = max(range(4), key=lambda i: o["ratios"][i])
    assert layer_s[most] == min(layer_s)           # the most outlier-rich block is pruned least


def test_quick_structured(quick):
    st = quick["structured"]
    m = st["models"]
    dense = m["dense"]["params"]
    # one of four blocks removed; a quarter of the heads and MLP channels of every block removed
    assert m["depth (ShortGPT)"]["params"] == m["depth (last)"]["params"] < dense
    assert all(v == {"heads": 3, "channels": 192} for v in st["width_kept"].values())
    assert m["width"]["params"] < dense
    assert st["shortgpt_drop"] == [min(range(4), key=lambda i: st["block_influence"][i])]
    assert st["last_drop"] == [3]
    assert all(v["tokens_per_s"] > 0 for v in m.values())


def test_json_roundtrip_and_load(quick, tmp_path):
    path = tmp_path / "llm.json"
    path.write_text(json.dumps(quick))
    assert llm.load(path)["grid"]["dense"] == quick["grid"]["dense"]


def test_prune_is_the_grid_number(quick):
    _, test_ids, calib = llm.data(llm.QUICK)
    model = llm.prune("wanda", "50%", calib, llm.QUICK["nsamples"])
    from prunekit.llm import perplexity
    ppl = perplexity(model, test_ids, seq_len=llm.QUICK["seq_len"])
    assert ppl == pytest.approx(quick["grid"]["ppl"]["wanda"]["50%"], rel=1e-6)


def test_shipped_results_match_the_config():
    if not llm.RESULTS.exists():
        pytest.skip("results not computed")
    r = llm.load()
    assert r["config"] == json.loads(json.dumps(llm.CONFIG))
    assert r["grid"]["dense"] < min(r["grid"]["ppl"]["sparsegpt"].values())
