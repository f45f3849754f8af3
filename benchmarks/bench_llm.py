"""Time per layer of SparseGPT against Wanda and magnitude (prunekit.llm), on a CPU.

One ``nn.Linear(n, n)`` and ``tokens`` calibration inputs (correlated features, as in a
transformer), pruned to 50% and to 2:4 by each method, timed with ``torch.utils.benchmark``
(median of a few runs, one thread, the Hessian / input norms included: the whole layer call).
Wanda's paper reports a ~300x speed-up over SparseGPT for a whole LLaMA-7B (its Table 4:
pruning time of the score computation); this reports ours for one layer, with the
reconstruction error ``||X Wᵀ - X Ŵᵀ||² / ||X Wᵀ||²`` on the same inputs next to it.

With ``--tinylm`` it also prunes the zoo's tiny LLaMA with each method (32 calibration
sequences of 128 tokens from the training split) and prints the time and the held-out
perplexity, in the shape of Wanda's Table 2 (dense / magnitude / Wanda / SparseGPT x 50%, 2:4, 4:8).

    python benchmarks/bench_llm.py [--n 1024] [--tokens 2048] [--threads 1] [--runs 3] [--tinylm]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils import benchmark

from prunekit.llm import magnitude_prune_layer, perplexity, prune_sequential, sparsegpt_prune_layer, wanda_prune_layer

PATTERNS = {"50%": (0.5, 0, 0), "2:4": (None, 2, 4)}
LM_PATTERNS = {"50%": (0.5, 0, 0), "4:8": (None, 4, 8), "2:4": (None, 2, 4)}


def layer_and_inputs(n: int, tokens: int, seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, n, generator=g) / math.sqrt(n))
    mix = torch.randn(n, n, generator=g) / math.sqrt(n) + torch.eye(n)
    x = (torch.randn(tokens, n, generator=g) @ mix) * torch.exp(torch.randn(n, generator=g))
    return layer, x


def call(method: str, layer: nn.Linear, x: torch.Tensor, pattern: tuple) -> torch.Tensor:
    s, pn, pm = pattern
    if method == "magnitude":
        return magnitude_prune_layer(layer, s, prunen=pn, prunem=pm)
    if method == "wanda":
        return wanda_prune_layer(layer, x, s, prunen=pn, prunem=pm)
    return sparsegpt_prune_layer(layer, x, s, prunen=pn, prunem=pm)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="the layer is n x n")
    ap.add_argument("--tokens", type=int, default=2048, help="calibration tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per method (median)")
    ap.add_argument("--tinylm", action="store_true", help="also prune the zoo's tinylm with each method")
    ap.add_argument("--nsamples", type=int, default=32, help="calibration sequences for --tinylm")
    args = ap.parse_args(argv)
    dense, x = layer_and_inputs(args.n, args.tokens)
    y = x @ dense.weight.detach().T
    results: dict = {}
    print(f"nn.Linear({args.n}, {args.n}), {args.tokens} calibration tokens, {args.threads} thread(s), "
          f"torch {torch.__version__}\n")
    print("| method | pattern | seconds per layer (median) | vs Wanda | relative error ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² |")
    print("|---|---|---|---|---|")
    for pname, pattern in PATTERNS.items():
        times = {}
        for method in ("magnitude", "wanda", "sparsegpt"):
            layer = nn.Linear(args.n, args.n, bias=False)
            env = {"layer": layer, "dense": dense, "x": x, "call": call, "method": method, "pattern": pattern}
            timer = benchmark.Timer(stmt="layer.load_state_dict(dense.state_dict()); call(method, layer, x, pattern)",
                                    globals=env, num_threads=args.threads)
            m = timer.timeit(args.runs)
            times[method] = m.median
            err = float(((x @ layer.weight.detach().T - y) ** 2).sum() / (y ** 2).sum())
            results[(method, pname)] = {"seconds": m.median, "rel_error": err}
        for method, t in times.items():
            r = results[(method, pname)]
            print(f"| {method} | {pname} | {t:.4f} | {t / times['wanda']:.1f}x | {r['rel_error']:.4f} |")
    if args.tinylm:
        results["tinylm"] = bench_tinylm(args.nsamples, args.threads)
    return results


def bench_tinylm(nsamples: int, threads: int) -> dict:
    """Prune time and held-out perplexity of the zoo's tinylm for every method and pattern."""
    import time

    from prunekit import zoo
    from prunekit.llm import tinylm

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train_ids, test_ids = zoo.loaders("tinylm")
        seq = zoo.info("tinylm")["recipe"]["seq_len"]
        calib = tinylm.calibration(train_ids, nsamples, seq, seed=0)
        out = {"dense": {"ppl": perplexity(zoo.load("tinylm"), test_ids, seq_len=seq), "seconds": 0.0}}
        for method in ("magnitude", "wanda", "sparsegpt"):
            for pname, (s, n, m) in LM_PATTERNS.items():
                model = zoo.load("tinylm")
                start = time.perf_counter()
                prune_sequential(model, calib, method, s, prunen=n, prunem=m, progress=False)
                seconds = time.perf_counter() - start
                out[(method, pname)] = {"ppl": perplexity(model, test_ids, seq_len=seq), "seconds": seconds}
    finally:
        torch.set_num_threads(previous)
    print(f"\ntinylm ({nsamples} calibration sequences of {seq} tokens; held-out perplexity, "
          f"windows of {seq}; prune time in seconds)\n")
    print("| method | " + " | ".join(LM_PATTERNS) + " | prune time (50%) |")
    print("|---|" + "---|" * (len(LM_PATTERNS) + 1))
    print(f"| dense | {out['dense']['ppl']:.2f} | | | |")
    for method in ("magnitude", "wanda", "sparsegpt"):
        cells = " | ".join(f"{out[(method, p)]['ppl']:.2f}" for p in LM_PATTERNS)
        print(f"| {method} | {cells} | {out[(method, '50%')]['seconds']:.2f} |")
    return out


if __name__ == "__main__":
    main()
