"""Global unstructured magnitude masks at 90% on torchvision's resnet50 (random weights).

prunekit (`pk.prune`: score + exact global threshold + apply) against
`torch.nn.utils.prune.global_unstructured` with L1Unstructured, measured in the same
run on fresh copies of the same model, one thread, median of several repeats.

    python benchmarks/bench_masks.py [--repeats 5] [--sparsity 0.9]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def time_once(fn, model: nn.Module) -> float:
    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    fn(m)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.9)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50()
    s = args.sparsity

    def ours(m):
        pk.prune(m, s, criterion="magnitude", scope="global")

    def theirs(m):
        torch_prune.global_unstructured(prunable(m), pruning_method=torch_prune.L1Unstructured, amount=s)

    # same masks (random float weights have no ties)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ours(a), theirs(b)
    same = all(torch.equal(ma.weight_mask, mb.weight_mask) for (ma, _), (mb, _) in zip(prunable(a), prunable(b)))
    n = sum(m.weight.numel() for m, _ in prunable(model))
    print(f"resnet50: {n:,} prunable weights, sparsity {s:.0%}, identical masks: {same}")

    t_ours, t_theirs = [], []
    for _ in range(args.repeats):  # interleave so drift of a shared machine hits both
        t_theirs.append(time_once(theirs, model))
        t_ours.append(time_once(ours, model))
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    spread = lambda ts: max(ts) - min(ts)  # noqa: E731
    print(f"torch.nn.utils.prune.global_unstructured: median {mt:.3f} s (range {spread(t_theirs):.3f} s)")
    print(f"prunekit.prune:                           median {mo:.3f} s (range {spread(t_ours):.3f} s)")
    print(f"ratio prunekit / torch: {mo / mt:.3f}  (goal <= 1.0; design goal <= 0.2)")


if __name__ == "__main__":
    main()
