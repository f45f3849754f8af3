"""Unstructured sparsity on a CPU: dense matmul against torch.sparse CSR, and the break-even.

A Linear layer ``y = x W^T`` with ``W`` of shape ``[n, n]`` is pruned by magnitude to each
sparsity; the same product is then timed with the dense kernel (zeros and all) and with
``torch.sparse`` CSR (``W_csr @ x^T``), in the same run, one thread, with
``torch.utils.benchmark`` (median and IQR). The break-even sparsity is where CSR becomes
faster; it is interpolated linearly between the measured sparsities.

    python benchmarks/bench_sparse.py [--n 2048] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import torch

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
from torch.utils import benchmark  # noqa: E402

import prunekit as pk  # noqa: E402

SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]


def timed(stmt: str, env: dict, threads: int) -> benchmark.Measurement:
    return benchmark.Timer(stmt=stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=0.5)


def break_even(sparsities: list[float], speedups: list[float]) -> float | None:
    """First sparsity where the speedup crosses 1, by linear interpolation."""
    pts = list(zip(sparsities, speedups))
    if pts[0][1] >= 1:
        return pts[0][0]
    for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
        if v0 < 1 <= v1:
            return s0 + (1 - v0) * (s1 - s0) / (v1 - v0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="the layer is n x n")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    layer = torch.nn.Linear(args.n, args.n, bias=False)
    x = torch.randn(args.batch, args.n)
    xt = x.t().contiguous()
    scores = pk.score(layer, "magnitude")
    print(f"Linear {args.n}x{args.n}, batch {args.batch}, {args.threads} thread(s); "
          f"times are medians (IQR)")
    print(f"{'sparsity':>9}{'dense ms':>16}{'CSR ms':>16}{'CSR speedup':>13}")
    speedups = []
    for s in SPARSITIES:
        w = layer.weight.detach() * pk.make_masks(scores, s)["weight"]
        w_csr = w.to_sparse_csr()
        assert torch.allclose((w_csr @ xt).t(), x @ w.t(), atol=1e-3)
        dense = timed("x @ w.t()", {"x": x, "w": w}, args.threads)
        csr = timed("w_csr @ xt", {"w_csr": w_csr, "xt": xt}, args.threads)
        speedups.append(dense.median / csr.median)
        print(f"{s:>9.1%}{dense.median * 1e3:>9.2f} ({dense.iqr * 1e3:.2f}){csr.median * 1e3:>9.2f} "
              f"({csr.iqr * 1e3:.2f}){speedups[-1]:>12.2f}x")
    be = break_even(SPARSITIES, speedups)
    print("break-even sparsity (CSR as fast as dense): "
          + (f"{be:.1%}" if be is not None else f"not reached up to {SPARSITIES[-1]:.1%}"))


if __name__ == "__main__":
    main()
