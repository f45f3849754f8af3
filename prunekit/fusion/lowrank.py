"""Low-rank factorisation of fully connected layers by truncated SVD.

Denton et al., "Exploiting linear structure within convolutional networks for efficient
evaluation", NeurIPS 2014, and Jaderberg et al. 2014 factorise trained layers; for a matrix, the
truncated SVD is the best rank-``r`` approximation in Frobenius and spectral norm (Eckart &
Young, "The approximation of one matrix by another of lower rank", Psychometrika 1936), with
squared Frobenius error equal to the sum of the discarded squared singular values.

Convolutions: :func:`tucker2` (Kim et al., "Compression of deep convolutional neural networks
for fast and low power mobile applications", ICLR 2016), a Tucker-2 decomposition of the
kernel along its output and input channels, computed with torch's SVD (HOSVD, then HOOI
iterations; De Lathauwer et al. 2000). ``tensorly`` is not used: the two modes need a few lines
of SVD, and the library keeps its dependencies to torch.

Low rank plus sparse: :func:`low_rank_plus_sparse`, the initialisation of LoSparse (Li et al.,
"LoSparse: structured compression of large language models based on low-rank and sparse
approximation", ICML 2023): ``W = B A + S`` with ``B A`` the truncated SVD and ``S`` the pruned
residual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_choice, check_fraction, check_int, check_number

__all__ = ["low_rank", "low_rank_params", "tucker2", "rank_for_budget", "low_rank_plus_sparse", "LowRankPlusSparse"]


def _check_linear(linear: Any) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    if nn.parameter.is_lazy(linear.weight):
        raise ValueError("linear is an uninitialised nn.LazyLinear: run one forward pass first, so that its shape "
                         "is known")
    if linear.weight.is_meta:
        raise ValueError("linear's weight is on the meta device (a shape without values): materialise it first")
    return linear


def low_rank(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Replace ``linear`` (``y = W x + b``) by two Linears of rank ``rank``: ``y = B (A x) + b``.

    ``W = U S V^T`` (SVD, computed in float64); ``A = sqrt(S_r) V_r^T`` (``rank x in``, no bias)
    and ``B = U_r sqrt(S_r)`` (``out x rank``, with ``linear``'s bias if it has one), splitting
    the singular values evenly between the factors. ``B @ A`` is the best rank-``rank``
    approximation of ``W`` (Eckart--Young); at full rank ``min(out, in)`` it reproduces the layer
    up to floating-point error. The new layers have ``linear``'s dtype and device and
    ``requires_grad=True``; ``linear`` is not modified. The factorisation has
    ``rank * (in + out)`` weights (see :func:`low_rank_params`), fewer than ``in * out`` only
    when ``rank < in * out / (in + out)``.

    Args:
        linear: the layer to factorise.
        rank: ``1 <= rank <= min(in_features, out_features)``.

    Returns:
        ``nn.Sequential(first, second)``.
    """
    lin = _check_linear(linear)
    out_f, in_f = lin.weight.shape
    r = check_int("rank", rank, minimum=1, maximum=min(out_f, in_f))
    w = lin.weight.detach()
    U, S, Vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)
    root = S[:r].sqrt()
    first = nn.Linear(in_f, r, bias=False, device=w.device, dtype=w.dtype)
    second = nn.Linear(r, out_f, bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * Vh[:r]).to(w.dtype))
        second.weight.copy_((U[:, :r] * root[None, :]).to(w.dtype))
        if lin.bias is not None:
            second.bias.copy_(lin.bias.detach())
    return nn.Sequential(first, second)


def low_rank_params(linear: nn.Linear, rank: int) -> int:
    """Parameters of :func:`low_rank` ``(linear, rank)``: ``rank * (in + out)`` plus the bias."""
    lin = _check_linear(linear)
    out_f, in_f = lin.weight.shape
    r = check_int("rank", rank, minimum=1, maximum=min(out_f, in_f))
    return r * (in_f + out_f) + (out_f if lin.bias is not None else 0)


def _top_left(m: torch.Tensor, r: int) -> torch.Tensor:
    """The ``r`` leading left singular vectors of ``m`` (columns)."""
    u, _, _ = torch.linalg.svd(m, full_matrices=False)
    return u[:, :r]


def tucker2(conv: nn.Conv2d, out_rank: int, in_rank: int, *, iterations: int = 10) -> nn.Sequential:
    """Replace ``conv`` by 1x1 conv -> k x k core conv -> 1x1 conv (Tucker-2, Kim et al. 2016).

    The kernel ``W`` (``out x in x kh x kw``) is approximated as ``C x_0 U_out x_1 U_in`` with
    orthonormal ``U_out`` (``out x out_rank``) and ``U_in`` (``in x in_rank``), and the core
    ``C = W x_0 U_out^T x_1 U_in^T``. The factors start from the truncated SVDs of the two
    unfoldings (HOSVD) and are refined by ``iterations`` rounds of HOOI (higher-order orthogonal
    iteration), each of which does not increase the error ``||W||^2 - ||C||^2``. The layers are:
    ``Conv2d(in, in_rank, 1)`` with ``U_in^T``; ``Conv2d(in_rank, out_rank, (kh, kw))`` with ``C``
    and ``conv``'s stride, padding, dilation and padding mode; ``Conv2d(out_rank, out, 1)`` with
    ``U_out`` and ``conv``'s bias. At full ranks ``(out, in)`` it reproduces ``conv`` up to
    floating-point error. ``conv`` is not modified.

    Args:
        conv: an ``nn.Conv2d`` with ``groups=1``.
        out_rank: ``1..out_channels``.
        in_rank: ``1..in_channels``.
        iterations: HOOI rounds after HOSVD (``0`` = plain HOSVD).
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
    if nn.parameter.is_lazy(conv.weight) or conv.weight.is_meta:
        raise ValueError("conv has no weight values yet (lazy or on the meta device): materialise it first")
    if conv.groups != 1:
        raise ValueError(f"conv must have groups=1 (a grouped or depthwise convolution is already factorised), "
                         f"got groups={conv.groups}")
    w = conv.weight.detach()
    O, I, kh, kw = w.shape
    ro = check_int("out_rank", out_rank, minimum=1, maximum=O)
    ri = check_int("in_rank", in_rank, minimum=1, maximum=I)
    n_iter = check_int("iterations", iterations, minimum=0)
    W = w.to(torch.float64)
    u_out = _top_left(W.reshape(O, -1), ro)
    u_in = _top_left(W.transpose(0, 1).reshape(I, -1), ri)
    for _ in range(n_iter):
        u_out = _top_left(torch.einsum("oikl,is->oskl", W, u_in).reshape(O, -1), ro)
        u_in = _top_left(torch.einsum("oikl,or->irkl", W, u_out).reshape(I, -1), ri)
    core = torch.einsum("oikl,or,is->rskl", W, u_out, u_in)
    kw_args = dict(device=w.device, dtype=w.dtype)
    first = nn.Conv2d(I, ri, 1, bias=False, **kw_args)
    middle = nn.Conv2d(ri, ro, (kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                       bias=False, padding_mode=conv.padding_mode, **kw_args)
    last = nn.Conv2d(ro, O, 1, bias=conv.bias is not None, **kw_args)
    with torch.no_grad():
        first.weight.copy_(u_in.T.reshape(ri, I, 1, 1).to(w.dtype))
        middle.weight.copy_(core.to(w.dtype))
        last.weight.copy_(u_out.reshape(O, ro, 1, 1).to(w.dtype))
        if conv.bias is not None:
            last.bias.copy_(conv.bias.detach())
    return nn.Sequential(first, middle, last)


def rank_for_budget(in_features: int, out_features: int, fraction: float) -> int:
    """The largest rank whose two factors have at most ``fraction * in * out`` weights (at least 1).

    ``rank * (in + out) <= fraction * in * out``: the rank that matches a pruned layer keeping
    ``fraction`` of its weights (biases aside), for comparisons at equal parameter count.
    """
    i = check_int("in_features", in_features, minimum=1)
    o = check_int("out_features", out_features, minimum=1)
    f = check_number("fraction", fraction, low=0.0, high=1.0, low_open=True)
    return max(1, min(min(i, o), int(f * i * o // (i + o))))


class LowRankPlusSparse(nn.Module):
    """``y = low(x) + sparse(x)``: a low-rank ``nn.Sequential`` (see :func:`low_rank`) plus a
    bias-free ``nn.Linear`` holding the sparse residual. Prune ``sparse.weight`` with
    :func:`prunekit.apply_masks` to keep its zeros during fine-tuning."""

    def __init__(self, low: nn.Sequential, sparse: nn.Linear) -> None:
        super().__init__()
        self.low = low
        self.sparse = sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low(x) + self.sparse(x)


def low_rank_plus_sparse(linear: nn.Linear, rank: int, sparsity: float, *,
                         granularity: str = "element") -> LowRankPlusSparse:
    """``linear`` as low rank plus a pruned residual, as LoSparse initialises it (Li et al. 2023).

    ``B A`` = :func:`low_rank` ``(linear, rank)``; the residual ``S = W - B A`` is pruned by
    magnitude: ``round(sparsity * n)`` of its ``n`` entries (``granularity="element"``) or of its
    input columns by L2 norm (``"column"``, LoSparse's structured variant) are set to zero (among
    equal scores the lower index goes first). ``sparsity=0`` reproduces ``linear``; ``sparsity=1`` is
    :func:`low_rank`. (LoSparse then fine-tunes, pruning ``S`` iteratively with sensitivity
    scores; this function is only its starting point.)
    """
    low = low_rank(linear, rank)
    sp = check_fraction("sparsity", sparsity, include_one=True)
    gran = check_choice("granularity", granularity, ("element", "column"))
    w = linear.weight.detach()
    residual = w.to(torch.float64) - low[1].weight.detach().to(torch.float64) @ low[0].weight.detach().to(torch.float64)
    if gran == "element":
        score = residual.abs().reshape(-1)
    else:
        score = residual.norm(dim=0)
    drop = round(sp * score.numel())
    keep = torch.ones(score.numel(), dtype=torch.bool, device=w.device)
    if drop:
        order = torch.sort(score, stable=True).indices
        keep[order[:drop]] = False
    mask = keep.reshape(w.shape) if gran == "element" else keep[None, :].expand_as(w)
    sparse = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        sparse.weight.copy_((residual * mask).to(w.dtype))
    return LowRankPlusSparse(low, sparse)
