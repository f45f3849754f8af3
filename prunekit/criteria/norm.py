"""Data-free norm criteria: LAMP (weights), L1 filter norm and FPGM (channels).

* ``"lamp"`` — Lee et al. 2021, *Layer-adaptive Sparsity for the Magnitude-based Pruning*
  (ICLR). Sort a layer's weights ascending by |w| (u = 1..n); then
  ``score(u) = w_u**2 / sum_{v >= u} w_v**2`` (the denominator includes u itself, so the
  largest weight of every layer scores 1). Within a layer LAMP orders weights exactly as
  magnitude does; across layers it is comparable, so a *global* threshold on LAMP scores
  gives layer-adaptive sparsities (``pk.make_masks(scores, s, scope="global")``).
  Ties in |w| are broken by position (stable sort), as in the authors' code; all-zero
  tails (e.g. masked weights) score 0.
* ``"l1_filter"`` — Li et al. 2017, *Pruning Filters for Efficient ConvNets* (ICLR):
  ``s_j = sum |F_j|``, the L1 norm of output channel j's weights (a conv filter, or a row
  of a Linear weight). Channel-level.
* ``"fpgm"`` — He et al. 2019, *Filter Pruning via Geometric Median* (CVPR): filters near the
  geometric median of their layer are redundant (the others can represent them). The
  paper's motivation: "smaller norm, less important" needs the filter norms of a layer to
  be widely spread and the smallest to be close to zero, which trained networks often do
  not satisfy; FPGM does not rely on either.
  Default ``method="distance_sum"``, the paper's practical surrogate and what the authors'
  code computes: ``s_j = sum_k ||F_j - F_k||_2`` over the other filters of the layer; filters
  with the smallest sums are pruned, so the sum is already "higher = kept".
  ``method="median"`` computes the geometric median itself (Weiszfeld iterations) and scores
  ``||F_j - GM||_2``. Both rank the centre filter of a symmetric layer last. Channel-level.
  (The paper's soft-pruning schedule, SFP-style, belongs to the pruning loop, not here.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.targets import Target
from .registry import register
from .._validate import check_int
from ._common import check_choice, per_channel

__all__ = ["lamp", "l1_filter", "fpgm", "lamp_scores", "geometric_median"]


def lamp_scores(w: torch.Tensor) -> torch.Tensor:
    """LAMP scores of one tensor (see the module docstring), same shape as ``w``."""
    sq = w.detach().flatten().pow(2)
    sorted_sq, order = torch.sort(sq, stable=True)
    # tail[u] = sum_{v >= u} sorted_sq[v]
    tail = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    lamp_sorted = torch.where(tail > 0, sorted_sq / tail.clamp_min(torch.finfo(sq.dtype).tiny), torch.zeros_like(tail))
    out = torch.empty_like(sq)
    out[order] = lamp_sorted
    return out.reshape(w.shape)


@register("lamp", description="LAMP: w_u^2 / sum of w_v^2 over the weights at least as large (Lee et al. 2021)",
          reference="lee2021lamp")
def lamp(model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    return {t.name: lamp_scores(t.tensor.detach().float() if not t.tensor.is_floating_point() else t.tensor.detach())
            for t in targets}


@register("l1_filter", description="L1 norm of each output channel's weights (Li et al. 2017, PFEC)",
          level="channel", reference="li2017filters")
def l1_filter(model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    return {t.name: per_channel(t.tensor.detach()).abs().sum(1) for t in targets}


def geometric_median(points: torch.Tensor, iterations: int = 200, tol: float = 1e-9) -> torch.Tensor:
    """Geometric median of the rows of ``points`` by Weiszfeld's algorithm (float64)."""
    p = points.double()
    y = p.mean(0)
    for _ in range(iterations):
        d = torch.linalg.vector_norm(p - y, dim=1)
        if bool((d < 1e-12).any()):
            # y sits on a data point: Weiszfeld's update is undefined there; that point is the
            # median iff the pull of the others is at most 1 (Vardi & Zhang 2000).
            at = d < 1e-12
            others = ~at
            if not others.any():
                break
            pull = ((p[others] - y) / d[others, None]).sum(0)
            if torch.linalg.vector_norm(pull) <= at.sum():
                break
            d = d.clamp_min(1e-12)
        w = 1.0 / d
        y_new = (w[:, None] * p).sum(0) / w.sum()
        if torch.linalg.vector_norm(y_new - y) <= tol * (1 + torch.linalg.vector_norm(y)):
            y = y_new
            break
        y = y_new
    return y


@register("fpgm", description="FPGM: sum of distances to the layer's other filters; near the geometric median = pruned "
          "(He et al. 2019)", level="channel", reference="he2019fpgm")
def fpgm(model: nn.Module, targets: list[Target], method: str = "distance_sum",
         iterations: int = 200) -> dict[str, torch.Tensor]:
    check_choice("method", method, ("distance_sum", "median"))
    iterations = check_int("iterations", iterations, minimum=1)
    out = {}
    for t in targets:
        f = per_channel(t.tensor.detach()).double()
        if method == "distance_sum":
            s = torch.cdist(f, f).sum(1)
        else:
            gm = geometric_median(f, iterations)
            s = torch.linalg.vector_norm(f - gm, dim=1)
        out[t.name] = s.to(t.tensor.dtype if t.tensor.is_floating_point() else torch.float32)
    return out
