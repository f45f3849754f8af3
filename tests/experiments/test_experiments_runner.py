"""The experiment runner: cache hits and misses by config hash, seeds, summaries, bad input."""

import json

import pytest
import torch

from prunekit.experiments import runner
from prunekit.experiments.runner import Experiment, Result, Stat

CALLS: list[tuple[int, int]] = []


def _trial(cfg, seed):
    CALLS.append((cfg["k"], seed))
    g = torch.Generator().manual_seed(seed)
    noise = float(torch.rand(1, generator=g))
    return [{"setting": name, "sparsity": s, "value": cfg["k"] * s + noise, "ms": noise * 7}
            for name in ("a", "b") for s in (0.5, 0.9)]


def _exp(**kw):
    return Experiment("runner-test", "a test", _trial, config={"k": 2, "seeds": [0, 1, 2]},
                      keys=("setting", "sparsity"), metrics=("value", "ms"), quick={"k": 1},
                      noisy=("ms",), **kw)


def test_cache_hits_misses_and_config_change(tmp_path):
    exp = _exp()
    CALLS.clear()
    r1 = runner.run(exp, cache_dir=tmp_path, shipped=False, progress=False)
    assert (r1.hits, r1.misses) == (0, 3) and CALLS == [(2, 0), (2, 1), (2, 2)]
    r2 = runner.run(exp, cache_dir=tmp_path, shipped=False, progress=False)
    assert (r2.hits, r2.misses) == (3, 0) and len(CALLS) == 3      # nothing recomputed
    assert r2.trials == r1.trials
    r3 = runner.run(exp, {"k": 3}, cache_dir=tmp_path, shipped=False, progress=False)
    assert (r3.hits, r3.misses) == (0, 3) and CALLS[-1] == (3, 2)  # a changed config recomputes
    r4 = runner.run(exp, seeds=[2, 5], cache_dir=tmp_path, shipped=False, progress=False)
    assert (r4.hits, r4.misses) == (1, 1) and CALLS[-1] == (2, 5)  # a new seed alone is computed
    r5 = runner.run(exp, cache_dir=tmp_path, shipped=False, progress=False, force=True)
    assert r5.misses == 3 and r5.same_as(r1)
    doc = json.loads((tmp_path / "runner-test.json").read_text())
    assert len(doc["trials"]) == 3 + 3 + 1                          # one entry per (config, seed)
    assert {t["seed"] for t in doc["trials"].values()} == {0, 1, 2, 5}


def test_version_and_quick_change_the_key():
    exp = _exp()
    cfg = exp.configure()
    assert runner.trial_key(exp, cfg, 0) != runner.trial_key(exp, cfg, 1)
    assert runner.trial_key(exp, cfg, 0) != runner.trial_key(_exp(version=2), cfg, 0)
    assert runner.trial_key(exp, cfg, 0) != runner.trial_key(exp, exp.configure(quick=True), 0)
    assert runner.trial_key(exp, cfg, 0) == runner.trial_key(exp, {**cfg, "seeds": [9]}, 0)


def test_compute_false_only_reads(tmp_path):
    exp = _exp()
    runner.run(exp, seeds=[0], cache_dir=tmp_path, shipped=False, progress=False)
    r = runner.run(exp, cache_dir=tmp_path, shipped=False, progress=False, compute=False)
    assert r.seeds == [0] and r.misses == 0


def test_summary_mean_and_spread(tmp_path):
    r = runner.run(_exp(), cache_dir=tmp_path, shipped=False, progress=False)
    vals = r.values("value", setting="b", sparsity=0.9)
    assert len(vals) == 3
    st = r.stat("value", setting="b", sparsity=0.9)
    assert st.n == 3 and st.mean == pytest.approx(sum(vals) / 3)
    assert st.std == pytest.approx(float(torch.tensor(vals, dtype=torch.float64).std()))
    assert [(row["setting"], row["sparsity"]) for row in r.summary()] == [
        ("a", 0.5), ("a", 0.9), ("b", 0.5), ("b", 0.9)]
    table = r.table(["value"], where={"sparsity": 0.9})
    lines = table.splitlines()
    assert len(lines) == 6 and lines[0] == "| setting | value |" and lines[2].startswith("| a | ")
    assert lines[-1] == "Mean ± standard deviation over 3 seeds."
    assert st.format() in lines[3] and st.format("{:.2f}") == f"{st.mean:.2f} ± {st.std:.2f}"
    assert Stat.of([1.0]) == Stat(1.0, 0.0, 1)


def test_same_as_ignores_noisy_metrics(tmp_path):
    r = runner.run(_exp(), seeds=[0], cache_dir=tmp_path, shipped=False, progress=False)
    other = {0: [dict(row, ms=row["ms"] + 1) for row in r.trials[0]]}
    assert r.same_as(other)
    other[0][0]["value"] += 1e-9
    assert not r.same_as(other)
    assert not r.same_as({1: r.trials[0]})        # no shared seed


def test_shipped_results_are_read(tmp_path, monkeypatch):
    exp = _exp()
    shipped = tmp_path / "shipped"
    runner.run(exp, seeds=[0], cache_dir=shipped, shipped=False, progress=False)
    monkeypatch.setattr(runner, "SHIPPED_DIR", shipped)
    r = runner.run(exp, seeds=[0], cache_dir=tmp_path / "user", progress=False)
    assert (r.hits, r.misses) == (1, 0)
    r = runner.run(exp, seeds=[0], cache_dir=tmp_path / "user", shipped=False, progress=False)
    assert (r.hits, r.misses) == (0, 1)


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    assert runner.default_cache_dir() == tmp_path / "experiments"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"config": {"nope": 1}}, ValueError, "unknown keys \\['nope'\\]"),
    ({"config": [("k", 1)]}, TypeError, "config must be a mapping"),
    ({"seeds": []}, ValueError, "seeds must be a non-empty list"),
    ({"seeds": [0, 0]}, ValueError, "distinct"),
    ({"seeds": [-1]}, ValueError, "seeds"),
    ({"seeds": [True]}, ValueError, "seeds"),
    ({"force": "yes"}, TypeError, "force must be a bool"),
    ({"cache_dir": 3}, TypeError, "cache_dir must be a path"),
])
def test_bad_arguments_run_nothing(kwargs, error, match, tmp_path):
    CALLS.clear()
    kwargs.setdefault("cache_dir", tmp_path)
    with pytest.raises(error, match=match):
        runner.run(_exp(), shipped=False, progress=False, **kwargs)
    assert CALLS == [] and not (tmp_path / "runner-test.json").exists()


def test_bad_experiments_and_rows(tmp_path):
    with pytest.raises(ValueError, match="experiment must be one of"):
        runner.get("no-such-experiment")
    with pytest.raises(TypeError, match="trial must be callable"):
        Experiment("x", "x", None, config={"seeds": [0]}, keys=("a",), metrics=("b",))
    with pytest.raises(ValueError, match="quick overrides unknown"):
        Experiment("x", "x", _trial, config={"seeds": [0]}, keys=("a",), metrics=("b",), quick={"z": 1})
    with pytest.raises(ValueError, match="noisy must name metrics"):
        Experiment("x", "x", _trial, config={"seeds": [0]}, keys=("a",), metrics=("b",), noisy=("c",))
    bad = Experiment("x", "x", lambda cfg, seed: [{"setting": "a", "value": float("nan")}],
                     config={"seeds": [0]}, keys=("setting",), metrics=("value",))
    with pytest.raises(ValueError, match="finite number"):
        runner.run(bad, cache_dir=tmp_path, shipped=False, progress=False)
    missing = Experiment("x", "x", lambda cfg, seed: [{"setting": "a"}],
                         config={"seeds": [0]}, keys=("setting",), metrics=("value",))
    with pytest.raises(ValueError, match="lacks \\['value'\\]"):
        runner.run(missing, cache_dir=tmp_path, shipped=False, progress=False)
    assert not (tmp_path / "x.json").exists()
    r = runner.run(_exp(), seeds=[0], cache_dir=tmp_path, shipped=False, progress=False)
    with pytest.raises(ValueError, match="metric must be one of"):
        r.stat("accuracy", setting="a", sparsity=0.5)
    with pytest.raises(ValueError, match="missing \\['sparsity'\\]"):
        r.stat("value", setting="a")
    with pytest.raises(ValueError, match="no row"):
        r.stat("value", setting="z", sparsity=0.5)


def test_register_rejects_a_second_experiment_of_the_same_name():
    exp = runner.register(Experiment("runner-test-reg", "t", _trial, config={"k": 1, "seeds": [0]},
                                     keys=("setting", "sparsity"), metrics=("value",)))
    assert runner.register(exp) is exp
    with pytest.raises(ValueError, match="already registered"):
        runner.register(Experiment("runner-test-reg", "t", _trial, config={"k": 1, "seeds": [0]},
                                   keys=("setting", "sparsity"), metrics=("value",)))
    with pytest.raises(TypeError, match="must be an Experiment"):
        runner.register("runner-test-reg")


def test_command_line_runs_then_shows(tmp_path, capsys):
    from prunekit.experiments.__main__ import main

    exp = runner.register(Experiment("runner-test-cli", "a CLI test", _trial,
                                     config={"k": 1, "seeds": [0, 1]},
                                     keys=("setting", "sparsity"), metrics=("value",)))
    args = ["--cache-dir", str(tmp_path)]
    assert main(["show", exp.name, *args]) == 1                     # nothing cached yet
    assert main(["run", exp.name, "--no-progress", *args]) == 0
    assert "0 cached, 2 computed" in capsys.readouterr().out
    assert main(["show", exp.name, *args]) == 0
    out = capsys.readouterr().out
    assert "2 cached, 0 computed" in out and "| a | 0.5 |" in out
    assert main(["list"]) == 0 and "runner-test-cli" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "no-such-experiment"])
