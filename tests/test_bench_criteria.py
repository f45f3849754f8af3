"""benchmarks/bench_criteria.py runs, prints its tables and shows known properties of cnn-digits."""

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_criteria.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_criteria", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(text: str, name: str) -> list[str]:
    """The cells of the table rows of ``name`` (one list per table it appears in)."""
    return [m.group(1).split(" | ") for m in re.finditer(rf"^\| `{name}` \| (.*) \|$", text, re.M)]


def test_bench_criteria_quick_run(capsys):
    bench = load_bench()
    res = bench.main(["--criteria", "magnitude,random,l1_filter", "--steps", "2",
                      "--channel-sparsities", "0.5"])
    out = capsys.readouterr().out

    assert "| criterion (weights removed) | 50% one-shot | 50% fine-tuned | 80% one-shot" in out
    assert "| criterion (channels removed) | 50% one-shot | 50% fine-tuned |\n" in out
    assert "(moderate)" not in out and res["channels_moderate"] == {}
    # magnitude and random in both tables (random and magnitude reduced to channels),
    # l1_filter in channels only
    assert [len(r) for r in row(out, "magnitude")] == [6, 2]
    assert [len(r) for r in row(out, "random")] == [6, 2]
    assert [len(r) for r in row(out, "l1_filter")] == [2]
    assert set(res["weights"]) == {(n, s) for n in ("magnitude", "random") for s in (0.5, 0.8, 0.9)}
    assert set(res["channels"]) == {(n, 0.5) for n in ("random", "magnitude", "l1_filter")}

    # the printed cells are the returned accuracies
    assert row(out, "magnitude")[0][0] == f"{res['weights']['magnitude', 0.5][0]:.1%}"
    assert row(out, "random")[0][4] == f"{res['weights']['random', 0.9][0]:.1%}"

    assert abs(res["dense"] - 0.989) < 0.001
    assert res["weights"]["magnitude", 0.5][0] >= 0.97  # global magnitude at 50% costs nothing
    assert res["weights"]["random", 0.9][0] <= 0.2      # random at 90% is at chance
    assert "2 fine-tuning steps" in out and "total run time" in out
