"""Pruning after training by reconstruction: prune one layer and re-fit the weights that stay.

The procedures of ThiNet (Luo, Wu & Lin 2017), channel pruning by LASSO (He, Zhang & Sun
2017) and layer-wise Optimal Brain Surgeon (Hassibi & Stork 1993; OBC, Frantar & Alistarh
2022). Each modifies the model in place (the weights it re-fits, and the masks it applies
with :func:`prunekit.apply_masks`) and returns exactly the masks now applied to the weights it
pruned. Their scores (``"thinet"``, ``"lasso_channel"``, ``"obs"``), the Gram matrices and the
greedy / LASSO selections are in :mod:`prunekit.criteria.reconstruction`, whose docstring
describes the methods and their simplifications.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import torch
from torch import nn

from ...allocation import check_sparsity
from ...core.masks import apply_masks, get_masks
from ...core.targets import Target
from ...criteria._common import check_batches, check_choice, preserved
from ...criteria.reconstruction import (_check_damp, _collect, _gram_from_q, _layer_arguments, _obs_layer_ok,
                                        _prepare, lasso_select, thinet_order, thinet_scaling)

__all__ = ["thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer"]

_MODES = ("row", "matrix")


def _mode(mode: object, deprecated: dict, caller: str) -> str:
    """``mode``, or the old keyword ``scope`` (``"row"`` | ``"layer"``) with a ``DeprecationWarning``."""
    if "scope" in deprecated:
        scope = deprecated.pop("scope")
        warnings.warn(f"{caller}(scope=...) is now {caller}(mode='row' | 'matrix') ('layer' is 'matrix'); "
                      "scope= is kept for one release", DeprecationWarning, stacklevel=3)
        mode = {"layer": "matrix"}.get(scope, scope) if isinstance(scope, str) else scope
    if deprecated:
        raise TypeError(f"{caller}() got an unexpected keyword argument {next(iter(deprecated))!r}")
    return check_choice("mode", mode, _MODES)


def _apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply ``masks``; the masks now on those weights (earlier masks stay: apply never un-prunes)."""
    apply_masks(model, masks)
    now = get_masks(model)
    return {name: now[name] for name in masks}


def _n_remove(sparsity: float, c: int) -> int:
    return min(round(sparsity * c), c - 1)  # as make_masks (channel granularity, one channel kept)


def _masks_for(t: Target, consumer: str, module: nn.Module, keep: list[int]) -> dict[str, torch.Tensor]:
    c = t.shape[0]
    kept = torch.zeros(c, dtype=torch.bool)
    kept[keep] = True
    own = kept.reshape((c,) + (1,) * (len(t.shape) - 1)).expand(t.shape).clone()
    w = module.weight_orig if hasattr(module, "weight_mask") else module.weight
    cols = kept.reshape(1, c, 1).expand(w.shape[0], c, w[0].numel() // c).reshape(w.shape).clone()
    dev = t.parameter.device
    return {t.name: own.to(dev), consumer + ".weight": cols.to(w.device)}


def _write_consumer(module: nn.Module, new_w3: torch.Tensor) -> None:
    w = module.weight_orig if hasattr(module, "weight_mask") else module.weight
    with torch.no_grad():
        w.copy_(new_w3.reshape(w.shape).to(w.dtype))


def thinet_prune(model: nn.Module, layer: str, sparsity: float, data: Iterable, *, batches: int | None = None,
                 locations: int | None = None, seed: int = 0, rescale: bool = True) -> dict[str, torch.Tensor]:
    """ThiNet on one layer, in place: remove ``round(sparsity * C)`` output channels of ``layer``
    (a weight name such as ``"features.0.weight"``) by Algorithm 1 on ``data``, then (``rescale``)
    scale the kept channels' weights in layer *i+1* by the least-squares ``ŵ`` of Eq. 6.

    Masks layer *i*'s removed filters and layer *i+1*'s matching input slices (so the removed
    channels contribute nothing, exactly as in the paper) with :func:`prunekit.apply_masks`, and
    returns the masks now applied to those two weights ``{name: bool tensor}`` (masks they had
    before stay: :func:`prunekit.apply_masks` never un-prunes). Raises ``ValueError`` (model untouched) for a
    sparsity outside [0, 1), an unknown layer, missing data or a layer without a next layer.
    """
    t, sparsity, consumer, module, q, w3 = _prepare(model, layer, sparsity, data, batches, locations, seed)
    gram = _gram_from_q(w3, q)
    c = t.shape[0]
    removed = thinet_order(gram, _n_remove(sparsity, c))
    keep = [i for i in range(c) if i not in removed]
    masks = _masks_for(t, consumer, module, keep)
    new = w3.clone()
    new[:, removed] = 0
    if rescale and keep:
        scale = thinet_scaling(gram, keep)
        new[:, keep] = new[:, keep] * scale.to(new.device).reshape(1, -1, 1)
    _write_consumer(module, new)
    return _apply(model, masks)


def lasso_channel_prune(model: nn.Module, layer: str, sparsity: float, data: Iterable, *,
                        batches: int | None = None, locations: int | None = None, seed: int = 0,
                        reconstruct: bool = True) -> dict[str, torch.Tensor]:
    """He et al. 2017 on one layer, in place: keep ``C - round(sparsity * C)`` channels of ``layer``
    chosen by the LASSO on ``β`` (bisection on ``λ``, :func:`lasso_select`), then (``reconstruct``)
    re-fit layer *i+1*'s weights on the kept channels by least squares,
    ``W' = argmin ||Y - X_S W'ᵀ||²_F`` with ``Y`` the original output (bias excluded).

    The LASSO has no intercept, as the paper's Eq. 3; the authors' released code uses
    scikit-learn's default ``fit_intercept=True``, which can select other channels.
    Masks and returns masks as :func:`thinet_prune` does; same errors.
    """
    t, sparsity, consumer, module, q, w3 = _prepare(model, layer, sparsity, data, batches, locations, seed)
    gram = _gram_from_q(w3, q)
    c = t.shape[0]
    keep, _, _ = lasso_select(gram, c - _n_remove(sparsity, c))
    removed = [i for i in range(c) if i not in keep]
    masks = _masks_for(t, consumer, module, keep)
    new = w3.clone()
    new[:, removed] = 0
    if reconstruct and keep:
        new[:, keep] = _least_squares(q, w3, keep)
    _write_consumer(module, new)
    return _apply(model, masks)


def _least_squares(q: torch.Tensor, w3: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """``argmin_W' ||P Wᵀ - P_S W'ᵀ||²`` from ``Q = PᵀP``: ``Q_SS W'ᵀ = Q_S: Wᵀ``; returns ``[out, |S|, K]``."""
    o, c, k = w3.shape
    idx = torch.tensor([ch * k + j for ch in keep for j in range(k)], dtype=torch.long)
    q, wf = q.detach().to("cpu", torch.float64), w3.detach().to("cpu", torch.float64).reshape(o, c * k)
    a = q[idx][:, idx]
    b = q[idx] @ wf.T
    sol = torch.linalg.lstsq(a, b, driver="gelsd").solution  # [|S| k, out]
    return sol.T.reshape(o, len(keep), k).to(w3.device)


def obs_prune_layer(weight: torch.Tensor, inputs: torch.Tensor, sparsity: float, *, damp: float = 0.01,
                    mode: str = "row", **deprecated) -> tuple[torch.Tensor, torch.Tensor]:
    """OBS on one layer: prune ``weight`` (``[out, in]``, or ``[out, ...]`` flattened to ``in``) one
    weight at a time, given the layer's ``inputs`` ``[rows, in]`` (a conv's im2col patches).

    ``H = 2 XᵀX + damp * mean(diag) * I``; each step removes the remaining weight with the least
    ``w_q² / (2 [H⁻¹]_qq)`` (per row with ``mode="row"``: ``round(sparsity * in)`` per row; over
    the whole weight matrix with ``mode="matrix"``: ``round(sparsity * numel)``; the old
    keyword ``scope="row" | "layer"`` still works, with a ``DeprecationWarning``), updates its row by
    ``δw = -w_q / [H⁻¹]_qq · H⁻¹[:, q]`` and downdates that row's ``H⁻¹``. Returns
    ``(new_weight, mask)`` (bool, True = kept), ``weight``'s shape and dtype; inputs untouched.
    With ``damp=0`` and a full-rank ``X`` the kept weights of each row are the exact
    least-squares fit of the original row's output (each OBS step is).

    >>> w = torch.tensor([[1.0, 0.1, -2.0]])
    >>> x = torch.eye(3)
    >>> obs_prune_layer(w, x, 1 / 3, damp=0)[1].tolist()
    [[True, False, True]]
    """
    mode = _mode(mode, deprecated, "obs_prune_layer")
    sparsity = check_sparsity(sparsity)
    damp = _check_damp(damp)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise ValueError("weight must be a tensor [out, in] (or [out, ...] flattened to in)")
    w = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1).clone()
    o, n = w.shape
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.shape[1] != n:
        raise ValueError(f"inputs must be a tensor [rows, {n}] (the layer's input rows), got "
                         f"{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__}")
    x = inputs.detach().to("cpu", torch.float64)
    h = 2 * x.T @ x
    d = float(torch.diagonal(h).mean())
    h = h + (damp * d if d > 0 else damp) * torch.eye(n, dtype=torch.float64)
    hinv0 = torch.linalg.inv(h) if damp > 0 else torch.linalg.pinv(h, hermitian=True)
    hinv = hinv0.unsqueeze(0).repeat(o, 1, 1)  # one H⁻¹ per row (rows lose different weights)
    mask = torch.ones(o, n, dtype=torch.bool)

    def remove(r: int, qi: int) -> None:
        hi = hinv[r]
        hqq = hi[qi, qi]
        w[r] -= w[r, qi] / hqq * hi[:, qi]
        w[r, qi] = 0.0
        hinv[r] = hi - torch.outer(hi[:, qi], hi[qi, :]) / hqq
        mask[r, qi] = False

    def saliency(r: int) -> torch.Tensor:
        dg = torch.diagonal(hinv[r]).clamp(min=torch.finfo(torch.float64).tiny)
        s = w[r].pow(2) / (2 * dg)
        s[~mask[r]] = math.inf
        return s

    if mode == "row":
        k = min(round(sparsity * n), n)
        for r in range(o):
            for _ in range(k):
                remove(r, int(torch.argmin(saliency(r))))
    else:
        k = round(sparsity * o * n)
        sal = torch.stack([saliency(r) for r in range(o)])
        for _ in range(k):
            flat = int(torch.argmin(sal))
            r, qi = divmod(flat, n)
            remove(r, qi)
            sal[r] = saliency(r)
    return w.reshape(weight.shape).to(weight.device, weight.dtype), mask.reshape(weight.shape).to(weight.device)


def obs_prune(model: nn.Module, layer: str, sparsity: float, data: Iterable, *, batches: int | None = None,
              damp: float = 0.01, mode: str = "row", **deprecated) -> dict[str, torch.Tensor]:
    """:func:`obs_prune_layer` on the layer whose weight is ``layer``, in place, with its inputs
    collected on ``data``: the weight is replaced by the OBS-updated one and masked; returns
    ``{layer: mask}``, the mask now applied (an earlier mask of the layer stays applied).
    ``mode`` as in :func:`obs_prune_layer`. For the layer's inputs only ``XᵀX`` is needed, so ``inputs`` here is a
    square root of it (same ``H``). Errors as :func:`thinet_prune`."""
    mode = _mode(mode, deprecated, "obs_prune")
    t, sparsity = _layer_arguments(model, layer, sparsity, data)
    batches, damp = check_batches(batches), _check_damp(damp)
    _obs_layer_ok(t)
    with preserved(model):
        model.eval()
        stats = _collect(model, data, batches, {"x": (t.module, "inputs")})
    q = stats["x"]["stat"] / max(stats["x"]["n"], 1)
    e, u = torch.linalg.eigh((q + q.T) / 2)
    root = torch.sqrt(e.clamp(min=0)).unsqueeze(1) * u.T  # rootᵀ root = Q
    new, mask = obs_prune_layer(t.tensor.detach(), root, sparsity, damp=damp, mode=mode)
    with torch.no_grad():
        t.parameter.copy_(new.to(t.parameter.dtype))
    return _apply(model, {t.name: mask.to(t.parameter.device)})
