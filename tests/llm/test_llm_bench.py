"""benchmarks/bench_llm.py runs and reports what the methods guarantee on its layer."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_llm.py"


def test_bench_llm_quick_run(capsys):
    spec = importlib.util.spec_from_file_location("bench_llm", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--n", "64", "--tokens", "256", "--runs", "1"])
    out = capsys.readouterr().out
    assert "| method | pattern | seconds per layer (median) |" in out
    assert set(res) == {(m, p) for m in ("magnitude", "wanda", "sparsegpt") for p in ("50%", "2:4")}
    for p in ("50%", "2:4"):
        assert res[("sparsegpt", p)]["rel_error"] <= res[("wanda", p)]["rel_error"] <= res[("magnitude", p)]["rel_error"]
