"""Latency and size of int8 against fp32, dense and channel-pruned, on CPU (the book's fusion
chapter).

The digits CNN of the zoo (``cnn-digits``) and its L1 channel-pruned, compacted, fine-tuned
version (:func:`prunekit.experiments.fusion.channel_pruned`, the chapter's configuration),
each in fp32 and in int8 (:func:`prunekit.fusion.quantize_int8`, static post-training
quantization with the x86 engine). Latency is ``pk.metrics.compare_latency`` (one thread,
interleaved rounds, each model's least disturbed round) on a batch of test images; the
table gives each model's median, its IQR, and its speedup against dense fp32 measured in the
same run, with the file size (``state_dict_bytes``) and the test accuracy.

    python benchmarks/bench_int8.py [--batch 256] [--rounds 5] [--min-run-time 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import torch

from prunekit import data, train, zoo
from prunekit.experiments import fusion
from prunekit.fusion import quantize_int8, state_dict_bytes
from prunekit.metrics import compare_latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)   # torch.ao's eager mode
    warnings.filterwarnings("ignore", category=UserWarning)
    train_loader, test_loader = data.digits()
    dense = zoo.load("cnn-digits")
    pruned = fusion.channel_pruned(dense, fusion.CONFIG, seed=0)
    calib = [x for x, _ in itertools.islice(train_loader, fusion.CONFIG["int8_calibration_batches"])]
    models = {"dense fp32": dense, "dense int8": quantize_int8(dense, calib),
              "pruned fp32": pruned, "pruned int8": quantize_int8(pruned, calib)}
    x = torch.cat([x for x, _ in test_loader])[: args.batch]
    t = compare_latency(models, x, rounds=args.rounds, min_run_time=args.min_run_time)
    base = t["dense fp32"].median
    print(f"batch {len(x)}, 1 thread, {args.rounds} interleaved rounds; torch {torch.__version__}\n")
    print(f"{'model':12s} {'median ms':>10s} {'IQR ms':>8s} {'speedup':>8s} {'bytes':>8s} {'accuracy':>9s}")
    for name, m in models.items():
        print(f"{name:12s} {t[name].median * 1e3:10.3f} {t[name].iqr * 1e3:8.3f} "
              f"{base / t[name].median:7.2f}x {state_dict_bytes(m):8,d} "
              f"{train.evaluate(m, test_loader):9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
