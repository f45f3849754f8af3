"""summary(): params, non-zeros and MACs against hand computation; latency()."""

import pytest
import torch
from torch import nn

import prunekit as pk
from helpers import tiny_cnn


def test_summary_counts_match_hand_computation():
    model = tiny_cnn()
    x = torch.randn(1, 3, 8, 8)
    s = pk.summary(model, x)
    conv0 = 8 * 3 * 3 * 3 * 8 * 8          # Cout*Cin*k*k*Hout*Wout
    conv3 = 16 * 8 * 3 * 3 * 3 * 3         # stride 2, no padding: 8 -> 3
    fc = 144 * 10
    rows = {r.name: r for r in s.layers}
    assert rows["0"].macs == conv0 and rows["3"].macs == conv3 and rows["6"].macs == fc
    assert s.macs == conv0 + conv3 + fc
    assert s.params == sum(p.numel() for p in model.parameters())
    assert s.size_bytes == 4 * s.params + sum(b.numel() * b.element_size() for b in model.buffers())
    assert s.effective_macs == s.macs


def test_summary_after_pruning():
    model = tiny_cnn()
    x = torch.randn(1, 3, 8, 8)
    dense = pk.summary(model, x)
    masks = pk.prune(model, 0.75, scope="layer")
    s = pk.summary(model, x)
    rows = {r.name: r for r in s.layers}
    for n, m in masks.items():
        layer = n.rsplit(".", 1)[0]
        kept = int(m.sum())
        assert rows[layer].nonzeros == kept + int(torch.count_nonzero(getattr(model[int(layer)], "bias")))
        assert rows[layer].effective_macs == round(rows[layer].macs * kept / m.numel())
    assert s.macs == dense.macs                       # dense kernels do the same work
    assert s.effective_macs < 0.3 * dense.macs
    assert s.params == dense.params and s.nonzeros < dense.nonzeros
    assert s.size_bytes == dense.size_bytes           # masks are not counted
    assert s.sparse_size_bytes < 0.5 * s.size_bytes
    assert "total" in str(s)
    assert abs(pk.layer_sparsity(model)["0.weight"] - 0.75) < 0.01


def test_count_helpers_and_macs_scale_with_batch():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    assert pk.count_params(model) == 5 * 7 + 7 + 7 * 2 + 2
    one, _ = pk.count_macs(model, torch.randn(1, 5))
    four, per = pk.count_macs(model, torch.randn(4, 5))
    assert one == 5 * 7 + 7 * 2 and four == 4 * one and per["0"] == 4 * 35
    pk.prune(model, 0.5)
    assert pk.count_nonzeros(model) == pk.count_params(model) - round(0.5 * 49)


def test_latency_returns_a_timing():
    t = pk.latency(nn.Linear(16, 16), torch.randn(1, 16), min_run_time=0.05)
    assert t.median > 0 and t.iqr >= 0 and t.runs >= 1 and t.threads == 1
    assert "ms" in str(t)


def test_macs_of_torch_multihead_attention_in_eval_mode():
    """Projections (4 L d^2) and the two attention products (2 L^2 d), also where eval mode would
    take nn.MultiheadAttention's fused fast path; the fast-path setting is restored."""

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    before = torch.backends.mha.get_fastpath_enabled()
    L, d = 10, 16
    assert pk.count_macs(Attend().eval(), torch.randn(1, L, d))[0] == 4 * L * d * d + 2 * L * L * d
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_compare_latency_interleaves_and_keeps_each_candidates_best_round():
    calls = []

    class Recorder(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    a, b = Recorder("a"), Recorder("b")
    t = pk.metrics.compare_latency({"a": a, "b": b}, torch.zeros(1), rounds=3, min_run_time=0.01)
    assert set(t) == {"a", "b"} and all(v.median > 0 for v in t.values())
    # interleaved: the calls alternate in blocks a, b, a, b, a, b (never all a's first)
    blocks = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert blocks == ["a", "b"] * 3
    # a big layer is slower than a tiny one, whatever the load
    t = pk.metrics.compare_latency({"tiny": nn.Linear(2, 2), "big": nn.Linear(512, 512)},
                                   {"tiny": torch.zeros(64, 2), "big": torch.zeros(64, 512)},
                                   rounds=2, min_run_time=0.05)
    assert t["big"].median > t["tiny"].median


def test_compare_latency_bad_arguments():
    with pytest.raises(TypeError, match="candidates"):
        pk.metrics.compare_latency([nn.Linear(2, 2)], torch.zeros(1, 2))
    with pytest.raises(TypeError, match="candidates\\['x'\\]"):
        pk.metrics.compare_latency({"x": 3}, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="rounds"):
        pk.metrics.compare_latency({"x": nn.Linear(2, 2)}, torch.zeros(1, 2), rounds=0)
    with pytest.raises(ValueError, match="example_inputs"):
        pk.metrics.compare_latency({"x": nn.Linear(2, 2)}, {"y": torch.zeros(1, 2)})


def test_timing_claim_retries_before_calling_a_claim_false():
    measured = iter([{"a": 2.0, "b": 1.0}, {"a": 2.0, "b": 1.0}, {"a": 0.5, "b": 1.0}])
    held, t = pk.metrics.timing_claim(lambda: next(measured), lambda t: t["a"] < t["b"], attempts=3)
    assert held and t == {"a": 0.5, "b": 1.0}            # the third attempt held
    count = []
    held, _ = pk.metrics.timing_claim(lambda: count.append(1) or {"a": 2.0},
                                      lambda t: t["a"] < 1, attempts=4)
    assert not held and len(count) == 4                   # false only when every attempt says so
    with pytest.raises(ValueError, match="attempts"):
        pk.metrics.timing_claim(lambda: None, lambda t: True, attempts=0)
    with pytest.raises(TypeError):
        pk.metrics.timing_claim(None, lambda t: True)


def test_latency_leaves_logging_as_it_was():
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    before = logger.level
    pk.latency(nn.Linear(4, 4), torch.zeros(1, 4), min_run_time=0.01)
    assert logger.level == before


def test_timing_claim_checks_given_timings_first():
    calls = []
    held, t = pk.metrics.timing_claim(lambda: calls.append(1) or {"a": 2.0},
                                      lambda t: t["a"] < 1, attempts=3, first={"a": 0.5})
    assert held and t == {"a": 0.5} and calls == []          # nothing re-timed
    held, t = pk.metrics.timing_claim(lambda: calls.append(1) or {"a": 0.5},
                                      lambda t: t["a"] < 1, attempts=3, first={"a": 2.0})
    assert held and calls == [1]                              # one re-measurement


def test_latency_leaves_the_logger_level_and_checks_types():
    import logging

    noisy = logging.getLogger("torch.utils.cpp_extension")
    before = noisy.level
    try:
        for level in (logging.DEBUG, logging.WARNING, logging.NOTSET):
            noisy.setLevel(level)
            pk.latency(nn.Linear(2, 2), torch.zeros(1, 2), min_run_time=0.01)
            assert noisy.level == level
    finally:
        noisy.setLevel(before)
    for kwargs, exc, word in (({"threads": 1.5}, TypeError, "threads"), ({"threads": True}, TypeError, "threads"),
                              ({"threads": 0}, ValueError, "threads"),
                              ({"min_run_time": "1"}, TypeError, "min_run_time"),
                              ({"min_run_time": float("nan")}, ValueError, "min_run_time"),
                              ({"min_run_time": -1}, ValueError, "min_run_time")):
        with pytest.raises(exc, match=word):
            pk.latency(nn.Linear(2, 2), torch.zeros(1, 2), **kwargs)
    with pytest.raises(TypeError, match="model"):
        pk.latency("not a model", torch.zeros(1, 2))
    with pytest.raises(TypeError, match="rounds"):
        pk.metrics.compare_latency({"x": nn.Linear(2, 2)}, torch.zeros(1, 2), rounds=2.0)
