"""``"N:M"`` (e.g. ``"2:4"``): N of every M consecutive weights along the input dimension.

Groups run along dim 1 moved last (channels-last, the GEMM layout of NVIDIA's sparse
tensor cores and its ASP tool; Mishra et al. 2021, *Accelerating Sparse Deep Neural
Networks*; Zhou et al. 2021, *Learning N:M Fine-grained Structured Sparse Neural Networks
From Scratch*). The sparsity is fixed at ``1 - N/M``; the choice is local, so ``scope`` is
validated and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .base import _TOL, Granularity, register


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N largest of every M consecutive scores along dim 1 moved last (channels-last).

    Ties keep the lower index. Requires ``score.shape[1] % m == 0``. Each weight's rank in
    its group (how many group members beat it: a higher score, or an equal score at a
    lower index) is counted with one vectorised comparison per group position -- a loop
    over M, not over weights, and several times faster than sorting millions of tiny groups.

    >>> nm_mask(torch.tensor([[3., 1., 2., 4.]]), 2, 4).tolist()
    [[True, False, False, True]]
    """
    x = score.detach().movedim(1, -1)  # [out, *kernel, in]: channels-last
    cl_shape = x.shape
    g = x.reshape(-1, m).T.contiguous()  # [M, groups]: row i = i-th member of every group
    rank = torch.zeros(g.shape, dtype=torch.uint8 if m <= 255 else torch.int32, device=g.device)
    for i in range(m - 1):
        later_wins = g[i + 1:] > g[i]  # a later member beats member i only with a strictly higher score
        rank[i] += later_wins.sum(dim=0, dtype=rank.dtype)
        rank[i + 1:] += ~later_wins  # otherwise member i (lower index) beats it
    keep = (rank < n).T.reshape(cl_shape)
    return keep.movedim(-1, 1).contiguous()


@dataclass(frozen=True, eq=False, repr=False)
class NM(Granularity):
    """N kept of every M; ``n`` and ``m`` with ``1 <= n <= m - 1``."""

    n: int
    m: int
    kind = "nm"
    allocates = False

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    def fixed_sparsity(self) -> float:
        return 1 - self.n / self.m

    def check_sparsity_value(self, s: float, given: object) -> None:
        fixed = self.fixed_sparsity()
        if abs(s - fixed) > _TOL:
            raise ValueError(f"granularity {self.name!r} fixes the sparsity at 1 - N/M = {fixed:g}, but sparsity="
                             f"{given!r}; pass sparsity=None or {fixed:g}")

    def check_applicable(self, name, shape) -> None:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"granularity {self.name!r} needs a weight with an input dimension, but {name!r} "
                             f"has shape {list(shape)}; exclude it (exclude=[{name!r}])")
        if shape[1] % self.m:
            raise ValueError(f"granularity {self.name!r}: M={self.m} must divide the input dimension (dim 1) of "
                             f"{name!r}, which has size {shape[1]} (shape {list(shape)})")

    def local_masks(self, scores, req) -> dict[str, torch.Tensor]:
        return {n: nm_mask(s, self.n, self.m) for n, s in scores.items()}


def _parse(key: str, given: str) -> NM | None:
    if not (nm := re.fullmatch(r"(\d+):(\d+)", key)):
        return None
    n, m = int(nm[1]), int(nm[2])
    if not 1 <= n <= m - 1:
        raise ValueError(f"granularity {given!r}: N:M needs 1 <= N <= M-1 (N weights kept of every M), "
                         f"got N={n}, M={m}")
    return NM(n, m)


register("nm", _parse)
