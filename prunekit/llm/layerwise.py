"""One-shot, layer-wise pruning of one ``nn.Linear`` from calibration inputs: magnitude, Wanda, SparseGPT.

Post-training pruning of large language models works one linear layer at a time: the
weights ``W`` (``[out, in]``) are pruned so that the layer's output on a few calibration
inputs ``X`` (``[tokens, in]``) changes little, ``||W X^T - Ŵ X^T||²`` small.

* :func:`magnitude_prune_layer` -- the baseline of both papers: ``|W_ij|``, one threshold per
  layer (no data).
* :func:`wanda_prune_layer` -- Sun, Liu, Bair & Kolter, *A Simple and Effective Pruning
  Approach for Large Language Models* (ICLR 2024; code: github.com/locuslab/wanda):
  ``S_ij = |W_ij| · ||X_j||_2``, compared *within each output row*; no weight update.
* :func:`sparsegpt_prune_layer` -- Frantar & Alistarh, *SparseGPT: Massive Language Models
  Can Be Accurately Pruned in One-Shot* (ICML 2023; code: github.com/IST-DASLab/sparsegpt):
  the OBS update of the remaining weights with the Hessian ``H = 2 XᵀX / N`` of the layer's
  squared error, made fast by sharing one Cholesky factor of ``H⁻¹`` across all rows and by
  processing columns left to right in blocks with lazy batch updates.

Every function modifies ``layer.weight`` in place (the bias is left as it is) and returns the
bool mask of the weight's shape, ``True`` where a weight is kept. N:M is written as in
:func:`prunekit.make_masks` (``"2:4"``): ``prunen`` weights are *kept* of every ``prunem``
consecutive inputs of a row (the reference codes' ``prune_n`` counts the *pruned* ones; for
2:4 and 4:8 the numbers coincide). Bad arguments raise ``TypeError``/``ValueError`` naming
the argument before the layer is touched.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> layer, x = nn.Linear(8, 4, bias=False), torch.randn(64, 8)
>>> keep = wanda_prune_layer(layer, x, 0.5)
>>> keep.sum(dim=1).tolist(), int((layer.weight == 0).sum())
([4, 4, 4, 4], 16)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_int, check_nonneg, check_sparsity
from ..granularity.nm import nm_mask

__all__ = ["magnitude_prune_layer", "wanda_prune_layer", "sparsegpt_prune_layer"]

_TOL = 1e-9


# --- argument checks (all run before anything is modified) ----------------------------------

def check_linear(layer: Any, arg: str = "layer") -> nn.Linear:
    """``layer`` itself if it is a materialised ``nn.Linear``; ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{arg} must be a torch.nn.Linear, got {type(layer).__name__}")
    w = layer.weight
    if nn.parameter.is_lazy(w) or w.is_meta:
        raise ValueError(f"{arg} has no weight values yet (lazy or on the meta device): materialise it first")
    if not w.is_floating_point():
        raise TypeError(f"{arg}.weight must be a floating-point tensor, got {w.dtype}")
    return layer


def check_pattern(sparsity: Any, prunen: Any, prunem: Any, in_features: int) -> tuple[float, int, int]:
    """``(sparsity, n, m)`` validated: unstructured (``n = m = 0``) or N:M (``1 <= n < m``, ``m | in``).

    With N:M, ``sparsity`` must be ``None`` or ``1 - n/m`` and the fixed value is returned.
    """
    n = check_int("prunen", prunen, minimum=0)
    m = check_int("prunem", prunem, minimum=0)
    if (n == 0) != (m == 0):
        raise ValueError(f"prunen and prunem must both be 0 (unstructured) or both > 0 (N:M, prunen kept of every "
                         f"prunem), got prunen={n}, prunem={m}")
    if m == 0:
        if sparsity is None:
            raise ValueError("sparsity must be a number in [0, 1) for unstructured pruning (prunen=prunem=0), "
                             "got None")
        return check_sparsity(sparsity), 0, 0
    if n >= m:
        raise ValueError(f"prunen must be < prunem (N:M keeps prunen of every prunem weights, 1 <= N <= M-1), "
                         f"got prunen={n}, prunem={m}")
    if in_features % m:
        raise ValueError(f"prunem={m} must divide the layer's in_features={in_features} (N:M groups run along "
                         f"the input dimension)")
    fixed = 1 - n / m
    if sparsity is not None and abs(check_sparsity(sparsity) - fixed) > _TOL:
        raise ValueError(f"N:M {n}:{m} fixes the sparsity at 1 - N/M = {fixed:g}, but sparsity={sparsity!r}; "
                         f"pass sparsity=None or {fixed:g}")
    return fixed, n, m


def check_inputs(inputs: Any, in_features: int, arg: str = "inputs") -> torch.Tensor:
    """``inputs`` (``[..., in_features]``, at least one token, finite) flattened to ``[tokens, in_features]``."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor of shape [tokens, in_features], got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{arg} must be a floating-point tensor, got {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[-1] != in_features:
        raise ValueError(f"{arg} must have shape [tokens, in_features={in_features}] (or [..., {in_features}]), "
                         f"got {list(inputs.shape)}")
    x = inputs.detach().reshape(-1, in_features)
    if x.shape[0] == 0:
        raise ValueError(f"{arg} must hold at least one token, got shape {list(inputs.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{arg} contains NaN or infinite values")
    return x


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    """float64 for a float64 layer, float32 otherwise (the reference codes compute in float32)."""
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` lowest entries of ``score`` (flattened; ties: the lower index first)."""
    out = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        out[torch.argsort(score.flatten(), stable=True)[:k]] = True
    return out.view(score.shape)


@torch.no_grad()
def _write(layer: nn.Linear, keep: torch.Tensor, new_weight: torch.Tensor | None = None) -> torch.Tensor:
    w = layer.weight
    if new_weight is not None:
        w.copy_(new_weight.to(w.dtype))
    w.masked_fill_(~keep, 0)
    return keep


# --- magnitude -----------------------------------------------------------------------------

def magnitude_prune_layer(layer: nn.Linear, sparsity: float | None, *, prunen: int = 0, prunem: int = 0) -> torch.Tensor:
    """Zero the smallest ``|W_ij|`` of ``layer``: ``int(numel · sparsity)`` of them, one threshold per layer.

    The baseline of SparseGPT's and Wanda's papers (their ``prune_magnitude``/``--gmp``:
    layer-wide, no data). With N:M (``prunen`` > 0), the ``prunen`` largest of every
    ``prunem`` consecutive weights of a row are kept and ``sparsity`` must be ``None`` or
    ``1 - prunen/prunem``. Ties are broken towards the lower flat index.

    Returns:
        the bool mask (``True`` = kept), of ``layer.weight``'s shape; the layer is pruned in place.
    """
    check_linear(layer)
    s, n, m = check_pattern(sparsity, prunen, prunem, layer.in_features)
    score = layer.weight.detach().abs()
    keep = nm_mask(score, n, m) if m else ~_lowest(score, int(score.numel() * s))
    return _write(layer, keep)


# --- Wanda ---------------------------------------------------------------------------------

def _wanda_from_norms(layer: nn.Linear, col_norms: torch.Tensor, s: float, n: int, m: int) -> torch.Tensor:
    """Wanda given ``||X_j||_2`` (any positive multiple of it gives the same mask)."""
    w = layer.weight.detach()
    score = w.abs().to(col_norms.dtype) * col_norms.to(w.device).reshape(1, -1)
    if m:
        keep = nm_mask(score, n, m)
    else:
        # per output row, as the reference's torch.sort(W_metric, dim=-1, stable=True)[1][:, :k]
        k = int(w.shape[1] * s)
        keep = torch.ones_like(score, dtype=torch.bool)
        if k:
            keep.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :k], False)
    return _write(layer, keep)


def wanda_prune_layer(layer: nn.Linear, inputs: torch.Tensor, sparsity: float | None, *, prunen: int = 0,
                      prunem: int = 0) -> torch.Tensor:
    """Wanda (Sun et al. 2024): prune by ``S_ij = |W_ij| · ||X_j||_2``, compared within each output row.

    Args:
        layer: the ``nn.Linear`` to prune (in place; no weight is updated, pruned ones are zeroed).
        inputs: calibration inputs of the layer, ``[tokens, in_features]`` (or ``[..., in_features]``,
            flattened); ``||X_j||_2`` is the norm of input feature ``j`` over all tokens.
        sparsity: fraction pruned; each row loses exactly ``int(in_features · sparsity)`` weights
            (the reference code's count). ``None`` or ``1 - prunen/prunem`` with N:M.
        prunen, prunem: N:M, ``prunen`` kept of every ``prunem`` consecutive inputs of a row.

    Returns:
        the bool mask (``True`` = kept) of ``layer.weight``'s shape. Ties are broken towards the
        lower column, as a stable sort does.
    """
    check_linear(layer)
    s, n, m = check_pattern(sparsity, prunen, prunem, layer.in_features)
    x = check_inputs(inputs, layer.in_features)
    norms = x.to(_work_dtype(layer.weight)).pow(2).sum(dim=0).sqrt()
    return _wanda_from_norms(layer, norms, s, n, m)


# --- SparseGPT -----------------------------------------------------------------------------

def check_sparsegpt_args(blocksize: Any, percdamp: Any, m: int) -> tuple[int, float]:
    bs = check_int("blocksize", blocksize, minimum=1)
    pd = check_nonneg("percdamp", percdamp)
    if m and bs % m:
        raise ValueError(f"blocksize={bs} must be a multiple of prunem={m}, so that no N:M group straddles two blocks")
    return bs, pd


def hessian(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``H = 2 XᵀX / N`` for inputs ``x`` of shape ``[N, in]`` (the Hessian of ``||W Xᵀ - Ŵ Xᵀ||²/N``)."""
    x = x.to(dtype)
    return 2.0 * (x.T @ x) / x.shape[0]


@torch.no_grad()
def _sparsegpt_from_hessian(layer: nn.Linear, H: torch.Tensor, s: float, n: int, m: int, blocksize: int,
                            percdamp: float) -> torch.Tensor:
    """SparseGPT given the layer's Hessian ``H`` (``[in, in]``); arguments already validated."""
    w0 = layer.weight.detach()
    rows, cols = w0.shape
    if not m and s == 0.0:                                       # nothing to prune: nothing changes
        return torch.ones_like(w0, dtype=torch.bool)
    dt = _work_dtype(w0)
    W = w0.clone().to(dt)
    H = H.clone().to(device=W.device, dtype=dt)
    dead = torch.diag(H) == 0                                    # inputs that are always 0: no information,
    H[dead, dead] = 1                                            # so (as the reference) H_jj = 1 and W_:j = 0
    W[:, dead] = 0
    idx = torch.arange(cols, device=W.device)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))          # dampening λ = percdamp · mean diag
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except torch.linalg.LinAlgError as e:
        raise ValueError(f"the Hessian of the calibration inputs is not positive definite with percdamp={percdamp:g}; "
                         f"use a larger percdamp (the reference uses 0.01) or more calibration tokens") from e
    pruned = torch.zeros(rows, cols, dtype=torch.bool, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        if m:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:                                                   # adaptive: one threshold over rows × block
            mask1 = _lowest(W1 ** 2 / d1.reshape(1, -1) ** 2, int(W1.numel() * s))
        for i in range(i2 - i1):
            if m and i % m == 0:                                 # joint N:M: choose the group when it is reached
                group = W1[:, i:i + m] ** 2 / d1[i:i + m].reshape(1, -1) ** 2
                mask1[:, i:i + m] = ~nm_mask(group, n, m)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)   # OBS update of the block's later columns
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]                     # lazy batch update of the columns right of the block
        pruned[:, i1:i2] = mask1
    return _write(layer, ~pruned, W)


def sparsegpt_prune_layer(layer: nn.Linear, inputs: torch.Tensor, sparsity: float | None, *, prunen: int = 0,
                          prunem: int = 0, blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """SparseGPT (Frantar & Alistarh 2023): prune and update ``layer`` to keep ``W Xᵀ`` on ``inputs``.

    ``H = 2 XᵀX / N + λI`` with ``λ = percdamp · mean(diag H)``; input features that are
    always zero get ``H_jj = 1`` and their weights set to 0 (as the reference code does). The
    upper Cholesky factor ``U`` of ``H⁻¹`` gives, column by column, the OBS update of the
    weights to the right. Columns are processed in blocks of ``blocksize``: in each block the
    mask is chosen adaptively, the ``int(rows · block · sparsity)`` weights of lowest
    ``w² / U_qq²`` over the whole ``rows × block`` slab (the reference code's one threshold per
    block, counted exactly: its ``<=`` also prunes one more, and so at sparsity 0 something);
    with N:M, every ``prunem`` columns the ``prunen`` weights of highest ``w² / U_qq²`` in each
    row's group are kept, judged on the weights already updated. Updates inside a block are
    applied column by column, those of the columns to its right once per block (lazy batch).

    Args:
        layer: the ``nn.Linear`` to prune and update in place (the bias is not changed).
        inputs: its calibration inputs, ``[tokens, in_features]`` (or ``[..., in_features]``).
        sparsity: fraction pruned; ``0`` prunes nothing and leaves the layer exactly as it was;
            ``None`` or ``1 - prunen/prunem`` with N:M.
        prunen, prunem: N:M, ``prunen`` kept of every ``prunem``; ``blocksize`` must be a multiple
            of ``prunem``.
        blocksize: columns per block (mask selection and lazy updates); 128 as the reference.
        percdamp: dampening, as a fraction of the mean diagonal of ``H``; 0.01 as the reference.

    Returns:
        the bool mask (``True`` = kept) of ``layer.weight``'s shape; pruned weights are exactly 0.
    """
    check_linear(layer)
    s, n, m = check_pattern(sparsity, prunen, prunem, layer.in_features)
    bs, pd = check_sparsegpt_args(blocksize, percdamp, m)
    x = check_inputs(inputs, layer.in_features)
    H = hessian(x.to(layer.weight.device), _work_dtype(layer.weight))
    return _sparsegpt_from_hessian(layer, H, s, n, m, bs, pd)
