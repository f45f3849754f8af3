"""Low-rank factorisation of fully connected layers by truncated SVD.

Denton et al., "Exploiting linear structure within convolutional networks for efficient
evaluation", NeurIPS 2014, and Jaderberg et al. 2014 factorise trained layers; for a matrix, the
truncated SVD is the best rank-``r`` approximation in Frobenius and spectral norm (Eckart &
Young, "The approximation of one matrix by another of lower rank", Psychometrika 1936), with
squared Frobenius error equal to the sum of the discarded squared singular values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_int

__all__ = ["low_rank", "low_rank_params"]


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
