"""Latency of compacted (physically smaller) models against the dense model, on CPU.

Channel pruning at 25/50/75% of every coupled channel group (``pk.prune_groups``,
magnitude, the classifier excluded; ``--per-layer`` uses ``pk.prune(...,
granularity="channel", scope="layer")`` instead), then ``pk.compact``. Models: prunekit's small ``ResNet()`` (CIFAR-sized, random weights) at
1x3x32x32 and 32x3x32x32, and torchvision's resnet18 (random weights) at 1x3x224x224.
Latency is ``pk.latency(model, x, threads=2)`` (``torch.utils.benchmark``, median and
IQR of one ``blocked_autorange``); the dense model and the compacted ones are measured
in the same run, interleaved round by round so that drift of a shared machine hits all
of them; the table shows the median over rounds of the medians and of the IQRs.

Columns: parameters, MAC reduction (dense MACs / compacted MACs), measured speedup
(dense median / compacted median) and speedup / MAC reduction (goal >= 0.8 at 50%:
the speedup the MAC count promises is mostly delivered). With ``--per-layer``, compact
keeps the union of the channels the adding convs of a residual stage keep, so the MAC
reduction at a given sparsity is below what the sparsity suggests.

    python benchmarks/bench_structured.py [--rounds 3] [--min-run-time 0.5] [--threads 2] [--per-layer]
                                          [--round-to 8] [--only small|resnet18] [--channels-last]

``--round-to R`` adds rows ``S/R`` where every group keeps a multiple of R channels
(``prune_groups(..., round_to=R)``): vector units and blocked kernels often prefer
channel counts that are multiples of 8 or 16. ``--channels-last`` times every model in
``torch.channels_last`` (NHWC) memory format, the layout oneDNN's CPU convolutions prefer;
on the machine that wrote the book it lifts resnet18's speedup / MAC reduction at 50% from
about 0.6 (NCHW) to about 0.85.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn

import prunekit as pk
from prunekit.models import ResNet

SPARSITIES = (0.25, 0.5, 0.75)


def compacted(model: nn.Module, sparsity: float, x: torch.Tensor, classifier: str, per_layer: bool,
              round_to: int | None = None) -> nn.Module:
    m = copy.deepcopy(model)
    exclude = [f"{classifier}.weight"]
    if per_layer:
        pk.prune(m, sparsity, criterion="magnitude", granularity="channel", scope="layer", exclude=exclude)
    else:
        pk.prune_groups(m, sparsity, x[:1], criterion="magnitude", scope="layer", exclude=exclude,
                        round_to=round_to)
    return pk.compact(m, x[:1]).eval()


def bench(label: str, model: nn.Module, x: torch.Tensor, classifier: str, args) -> None:
    model = model.eval()
    variants = {"dense": model}
    for s in SPARSITIES:
        variants[f"{s:.0%}"] = compacted(model, s, x, classifier, args.per_layer)
        if args.round_to:
            variants[f"{s:.0%}/{args.round_to}"] = compacted(model, s, x, classifier, args.per_layer, args.round_to)
    macs = {k: pk.count_macs(m, x)[0] for k, m in variants.items()}
    if args.channels_last:  # NHWC activations and weights: oneDNN's preferred layout for CPU convolutions
        variants = {k: m.to(memory_format=torch.channels_last) for k, m in variants.items()}
        x = x.contiguous(memory_format=torch.channels_last)
    timings: dict[str, list[pk.metrics.Timing]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleaved
        for k, m in variants.items():
            timings[k].append(pk.latency(m, x, threads=args.threads, min_run_time=args.min_run_time))
    med = {k: statistics.median(t.median for t in ts) for k, ts in timings.items()}
    iqr = {k: statistics.median(t.iqr for t in ts) for k, ts in timings.items()}
    how = "per-layer channel masks" if args.per_layer else "coupled groups"
    fmt = "channels_last" if args.channels_last else "contiguous (NCHW)"
    print(f"\n{label}, input {tuple(x.shape)}, {how}, {fmt}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'sparsity':>8} {'params':>12} {'MACs':>15} {'MAC red.':>8} {'median ms':>10} {'IQR ms':>8} "
          f"{'speedup':>8} {'spd/MACred':>10}")
    for k, m in variants.items():
        red = macs["dense"] / macs[k]
        spd = med["dense"] / med[k]
        print(f"{k:>8} {pk.count_params(m):>12,} {macs[k]:>15,} {red:>7.2f}x {med[k] * 1e3:>10.3f} "
              f"{iqr[k] * 1e3:>8.3f} {spd:>7.2f}x {spd / red:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-layer", action="store_true", help="prune each layer on its own, not by group")
    ap.add_argument("--round-to", type=int, default=None,
                    help="also measure groups that keep a multiple of this many channels (rows 'S/R')")
    ap.add_argument("--channels-last", action="store_true",
                    help="time models and inputs in torch.channels_last memory format")
    ap.add_argument("--only", choices=["small", "resnet18"], default=None, help="run one of the models only")
    args = ap.parse_args()
    from torchvision.models import resnet18

    torch.manual_seed(0)
    ours = ResNet()
    g = torch.Generator().manual_seed(1)
    if args.only in (None, "small"):
        bench("prunekit ResNet()", ours, torch.randn(1, 3, 32, 32, generator=g), "fc", args)
        bench("prunekit ResNet()", ours, torch.randn(32, 3, 32, 32, generator=g), "fc", args)
    if args.only in (None, "resnet18"):
        torch.manual_seed(0)
        bench("torchvision resnet18", resnet18(weights=None), torch.randn(1, 3, 224, 224, generator=g), "fc", args)


if __name__ == "__main__":
    main()
