"""Reconstruction-based "loss change" criteria: ThiNet, LASSO channel selection, layer-wise OBS.

These methods do not look at the network loss at all: they prune a layer so that a *layer
output* on a little data changes as little as possible, and then re-fit the remaining weights
by least squares (the survey, Cheng et al. 2024, files them under "loss change", next to
SparseGPT's layer-wise ``||WX - ŴX||²``).

Channels (ThiNet, He et al.) — to prune the output channels of layer *i*, look at the layer
*i+1* that consumes them. For a sampled entry ``y`` of layer *i+1*'s output (an output channel
``o`` at one location), each input channel ``c`` contributes

    x̂_c = sum over the kernel of W[o, c, :] * patch_c   (a Linear: sum over c's input features),

so that ``y = sum_c x̂_c + bias``. Removing channel ``c`` of layer *i* removes ``x̂_c`` from every
entry. Both methods only need the Gram matrix ``G[c, c'] = sum over entries of x̂_c x̂_c'``,
which is computed from the (sampled) input patches ``P`` of layer *i+1*:
``G = sum_o W_o Q W_oᵀ`` with ``Q = Pᵀ P`` (accumulated batch by batch; nothing is stored).

* ``"thinet"`` — Luo, Wu & Lin 2017, *ThiNet: A Filter Level Pruning Method for Deep Neural
  Network Compression* (ICCV). The removed set ``T`` minimises ``sum over entries of
  (sum_{c in T} x̂_c)²`` subject to ``|T| = C (1 - r)`` (their Eq. 5); Algorithm 1 grows ``T``
  greedily, each time adding the channel that keeps this value smallest. Since the greedy order
  is prefix-consistent (the first ``k`` channels it removes are exactly Algorithm 1's answer for
  a target of ``k``), the score is the removal order: the channel removed ``k``-th (from 0) of
  ``C`` scores ``(k + 1) / C`` (removed first = lowest), so ``scope="layer"`` and
  ``scope="global"`` both remove about the same fraction of every layer. :func:`~prunekit.methods.after.reconstruction.thinet_prune`
  then applies Eq. 6: a least-squares scaling ``ŵ = argmin_w sum (ŷ - wᵀ x̂)²`` of the kept
  channels' weights in layer *i+1*.
* ``"lasso_channel"`` — He, Zhang & Sun 2017, *Channel Pruning for Accelerating Very Deep
  Neural Networks* (ICCV). With ``Z_c = X_c W_cᵀ`` (channel ``c``'s contribution to all outputs)
  the channel selection is ``min_β 1/(2N) ||Y - sum_c β_c Z_c||²_F + λ ||β||_1`` s.t.
  ``||β||_0 <= c'`` (their Eq. 2; with ``W`` fixed this is the LASSO of Eq. 3), and ``W`` is
  re-fitted on the kept channels by least squares (Eq. 4, ``β`` fixed). The criterion ranks
  channels by the exact LASSO path (LARS): a channel that stays non-zero up to a larger ``λ`` is
  more important; score ``(k + 1) / C`` for the ``k``-th channel to leave the path as ``λ``
  grows. :func:`~prunekit.methods.after.reconstruction.lasso_channel_prune` finds the ``λ`` that keeps ``c'`` channels by bisection and
  re-fits ``W``.
* ``"obs"`` (weight-level) — Optimal Brain Surgeon (Hassibi & Stork 1993) on one layer, the
  layer-wise form of OBC/SparseGPT (Frantar & Alistarh 2022, *Optimal Brain Compression*,
  NeurIPS): for the layer's inputs ``X`` (rows = samples; a conv's im2col patches),
  ``H = 2 XᵀX`` (+ damping) is the Hessian of the squared output error of every output row,
  and the saliency of weight ``q`` of a row is ``L_q = w_q² / (2 [H⁻¹]_qq)`` (Hassibi & Stork's
  Eq. 5). The criterion is this one-shot saliency; :func:`~prunekit.methods.after.reconstruction.obs_prune_layer` prunes one weight at
  a time, updating the rest of its row by Eq. 5's ``δw = -w_q / [H⁻¹]_qq · H⁻¹[:, q]`` and
  removing ``q`` from that row's ``H⁻¹`` by OBC's Lemma 1 (row and column removal):
  ``H⁻¹ ← H⁻¹ - H⁻¹[:, q] H⁻¹[q, :] / [H⁻¹]_qq``. ``H⁻¹`` is kept per row, as in OBC.

Where layer *i+1* is found (channel criteria): the model is traced with
:func:`torch.fx.symbolic_trace` and, from layer *i*, the chain of single users is followed
through per-channel operations only (BatchNorm, element-wise activations, dropout, identity;
for a conv also pooling and a ``flatten`` from dim 1) to a ``Linear`` or an ungrouped
``Conv2d``. That is layer *i+1*: ``conv -> bn -> relu -> pool -> conv`` in VGG-style nets, a
ResNet block's ``conv1 -> bn1 -> relu1 -> conv2``, ``conv -> ... -> flatten -> Linear`` and
``Linear -> ReLU -> Linear`` in MLPs. A layer whose output branches, enters a residual
addition or a concatenation, or is the network's output has no such layer *i+1*. With
``missing="self"`` (default) it is scored against its *own* output, i.e. as if followed by the
identity: the channels' contributions are then disjoint and the order is ascending
``sum y_c²``; ``missing="skip"`` leaves it out of the scores; ``missing="error"`` raises.
The models are traced once; an untraceable model makes every layer "missing".

Simplifications (said plainly):

* The paper samples one random entry (image, location, filter) at a time (ThiNet) or 10
  locations per image (He et al.). Here every output channel at every location is used by
  default (``locations=None``); ``locations=k`` samples ``k`` positions per image
  (seeded by ``seed``), as the papers do to save memory.
* Removing channel ``c`` of layer *i* means removing it from layer *i+1*'s input, as in the
  papers (the filter goes, the next layer's slice goes). A mask on layer *i*'s weight alone
  leaves a following BatchNorm's shift in place; so :func:`~prunekit.methods.after.reconstruction.thinet_prune` and
  :func:`~prunekit.methods.after.reconstruction.lasso_channel_prune` mask both layer *i*'s filters and layer *i+1*'s input slices.
* He et al.: the paper starts from ``λ = 0``, increases ``λ`` gradually and, for each ``λ``,
  alternates the β-step (Eq. 3) and the W-step (Eq. 4) until ``||β||_0`` is stable, with
  ``||W_i||_F = 1``. Here ``W`` stays at the trained weights during the selection (no
  alternation, no normalisation), ``λ`` is found by bisection (as in public
  re-implementations), and ``W`` is solved once by least squares for the selected channels.
  Each LASSO is solved by scikit-learn's coordinate descent on an exact ``C x C`` square root
  of the problem (``AᵀA = G``, ``Aᵀy = G·1``), which has the same minimiser as the
  ``N·n x C`` design; the path order uses scikit-learn's ``lars_path_gram`` on ``G`` itself.
* He et al., intercept: the LASSO here has **no intercept**, as in the paper's Eq. 3
  (``Y ≈ sum_c β_c Z_c``). The authors' released code calls scikit-learn's ``Lasso`` with
  its default ``fit_intercept=True``, which centres every channel's contribution ``Z_c``
  and the target ``Y`` before the fit, and can therefore select different channels than
  the paper's equation. prunekit follows the equation.
* OBS: ``H`` is averaged over the examples (``2/N sum XᵀX``, a conv summing over locations),
  damped by ``damp * mean(diag H)`` as in SparseGPT; the criterion ignores masks already on
  the layer (masked weights score 0 since ``w = 0``).
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_model
from ..allocation import check_sparsity
from ..core.graph.queries import _conv_ok, next_layers
from ..core.targets import Target, effective, find_targets
from .registry import register
from ._common import check_batches, check_choice, check_optional_count, forward_with_hooks, preserved

__all__ = ["thinet", "lasso_channel", "obs", "contribution_gram", "thinet_order", "thinet_scaling", "lasso_order",
           "lasso_select", "next_layers"]

#: procedures that moved to :mod:`prunekit.methods.after.reconstruction` (they modify the model)
_MOVED = ("thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer")



# ------------------------------------------------------------------------- arguments

def _check_locations(locations: object) -> int | None:
    return check_optional_count("locations", locations, "positions sampled per image", "all")


def _check_damp(damp: object) -> float:
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(float(damp)) or damp < 0:
        raise ValueError(f"damp must be a finite number >= 0 (relative to mean(diag H)), got {damp!r}")
    return float(damp)


def _target_by_name(model: nn.Module, layer: object, arg: str = "layer") -> Target:
    if not isinstance(layer, str):
        raise TypeError(f"{arg} must be a weight's parameter name such as 'features.0.weight', got {layer!r}")
    targets = find_targets(model)
    for t in targets:
        if t.name == layer:
            return t
    raise ValueError(f"{arg} {layer!r} is not the weight of a Linear or Conv layer of the model; "
                     f"choose one of {[t.name for t in targets]}")


# --------------------------------------------------------------- the consumer of a layer

# --------------------------------------------------------------- statistics from data

def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    return (0, 0) if isinstance(m.padding, str) else tuple(m.padding)  # "valid" only (checked)


def _rows(module: nn.Module, x: torch.Tensor, locations: int | None, gen: torch.Generator | None) -> torch.Tensor:
    """The rows ``[rows, in_features]`` that multiply the (flattened) weight of ``module``:
    im2col patches of a Conv2d (channel-major, as ``weight.reshape(out, -1)``), or the inputs
    of a Linear with its leading dimensions flattened. ``locations`` samples positions per image."""
    if isinstance(module, nn.Conv2d):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        p = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=_conv_padding(module),
                     stride=module.stride)  # [N, C*kh*kw, L]
        n, f, L = p.shape
        if locations is not None and locations < L:
            idx = torch.stack([torch.randperm(L, generator=gen)[:locations] for _ in range(n)]).to(p.device)
            p = torch.gather(p, 2, idx.unsqueeze(1).expand(n, f, locations))
        return p.transpose(1, 2).reshape(-1, f)
    return x.reshape(-1, x.shape[-1])  # a Linear: every row (``locations`` applies to convs)


def _examples(x: torch.Tensor, module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return x.shape[0] if x.dim() == 4 else 1
    return x.shape[0] if x.dim() > 1 else 1


def _collect(model: nn.Module, data: Iterable, batches: int | None, watch: dict[str, tuple[nn.Module, str]],
             locations: int | None = None, seed: int = 0) -> dict[str, dict]:
    """One pass over ``data``; for each key of ``watch`` = (module, what) accumulate in float64:
    ``what="inputs"``: ``Q = sum rowsᵀ rows`` of the module's input rows and the example count;
    ``what="energy"``: ``sum y_c²`` per output channel of the module's output."""
    acc: dict[str, dict] = {k: {"n": 0, "stat": None} for k in watch}
    gen = torch.Generator().manual_seed(seed)

    def input_hook(key, module):
        def hook(mod, args):
            x = args[0]
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"reconstruction criteria need a tensor input to {key!r}")
            r = _rows(mod, x.detach(), locations, gen).to(torch.float64)
            q = r.T @ r
            a = acc[key]
            a["stat"] = q if a["stat"] is None else a["stat"] + q
            a["n"] += _examples(x, mod)
        return hook

    def output_hook(key, module):
        def hook(mod, args, y):
            y = y.detach().to(torch.float64)
            y = y.movedim(-1, 0) if isinstance(mod, nn.Linear) else (y.movedim(1, 0) if y.dim() > 1 else y.unsqueeze(1))
            e = y.reshape(y.shape[0], -1).pow(2).sum(1)
            a = acc[key]
            a["stat"] = e if a["stat"] is None else a["stat"] + e
            a["n"] += 1
        return hook

    forward_with_hooks(model, data, batches, [
        (module, input_hook(key, module), True) if what == "inputs" else (module, output_hook(key, module), False)
        for key, (module, what) in watch.items()])
    missing = [k for k, a in acc.items() if a["stat"] is None]
    if missing:
        raise ValueError(f"the layers {missing} were not called in the forward pass")
    return acc


def _weight3(module: nn.Module, channels: int) -> torch.Tensor:
    """Layer i+1's effective weight as ``[out, C, K]`` (K = kernel area, or features per channel)."""
    w = effective(module, "weight").detach().to(torch.float64)
    return w.reshape(w.shape[0], channels, -1)


def _gram_from_q(w3: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``G[c, c'] = sum_o W[o, c] Q[c, c'] W[o, c']ᵀ`` — the Gram matrix of the per-channel contributions."""
    o, c, k = w3.shape
    q4 = q.reshape(c, k, c, k)
    t = torch.einsum("oak,akbl->oabl", w3, q4)
    return torch.einsum("oabl,obl->ab", t, w3)


def _channel_grams(model: nn.Module, targets: list[Target], data, batches, locations, seed,
                   missing: str, criterion: str) -> dict[str, tuple[torch.Tensor, str | None]]:
    """``{target: (G, consumer or None)}``; G diagonal (own output energy) where no consumer."""
    missing = check_choice("missing", missing, ("self", "skip", "error"))
    consumers = next_layers(model, targets)
    absent = [n for n, c in consumers.items() if c is None]
    if absent and missing == "error":
        raise ValueError(f"criterion {criterion!r} needs a single following Linear/Conv2d (layer i+1) for each layer; "
                         f"none found for {absent}. Pass missing='self' (score those against their own output) "
                         "or missing='skip', or restrict the targets with include=/exclude=")
    modules = dict(model.named_modules())
    watch: dict[str, tuple[nn.Module, str]] = {}
    for t in targets:
        c = consumers[t.name]
        if c is not None:
            watch["in:" + c] = (modules[c], "inputs")
        elif missing == "self":
            watch["out:" + t.name] = (t.module, "energy")
    stats = _collect(model, data, batches, watch, locations, seed) if watch else {}
    out = {}
    for t in targets:
        c = consumers[t.name]
        if c is not None:
            q = stats["in:" + c]["stat"]
            out[t.name] = (_gram_from_q(_weight3(modules[c], t.shape[0]), q), c)
        elif missing == "self":
            out[t.name] = (torch.diag(stats["out:" + t.name]["stat"]), None)
    return out


def _order_to_scores(order: list[int], t: Target) -> torch.Tensor:
    c = len(order)
    s = torch.empty(c, dtype=torch.float64)
    for k, ch in enumerate(order):
        s[ch] = (k + 1) / c
    dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
    return s.to(dtype=dtype, device=t.parameter.device)


# ------------------------------------------------------------------------------ ThiNet

def thinet_order(gram: torch.Tensor, n_remove: int | None = None) -> list[int]:
    """ThiNet's Algorithm 1 on the Gram matrix ``G`` of the channel contributions: the channels in
    the order the greedy moves them to the removed set ``T`` (each step the channel ``i`` that
    minimises ``||sum_{j in T ∪ {i}} x̂_j||² = value(T) + 2 sum_{j in T} G[i, j] + G[i, i]``).
    Ties go to the lower index. ``n_remove`` stops early (default: order all channels).

    >>> g = torch.tensor([[1., 0., -1.], [0., 1.5, 0.], [-1., 0., 1.]])  # x̂_2 = -x̂_0
    >>> thinet_order(g)
    [0, 2, 1]
    """
    g = gram.detach().to("cpu", torch.float64)
    c = g.shape[0]
    n = c if n_remove is None else n_remove
    removed: list[int] = []
    cross = torch.zeros(c, dtype=torch.float64)  # sum_{j in T} G[:, j]
    value = 0.0
    diag = torch.diagonal(g)
    taken = torch.zeros(c, dtype=torch.bool)
    for _ in range(n):
        cand = value + 2 * cross + diag
        cand[taken] = math.inf
        i = int(torch.argmin(cand))
        removed.append(i)
        taken[i] = True
        value = float(cand[i])
        cross += g[:, i]
    return removed


def thinet_scaling(gram: torch.Tensor, keep: Iterable[int]) -> torch.Tensor:
    """ThiNet's Eq. 6: the per-channel scaling ``ŵ = argmin_w sum_i (ŷ_i - wᵀ x̂_i)²`` of the kept
    channels, where ``ŷ = sum over all channels of x̂`` is the original output (bias excluded).
    From the Gram matrix: ``G_SS ŵ = G_S,: 1`` (least-squares solution, minimum norm if singular).

    >>> g = torch.tensor([[2., 1.], [1., 2.]])
    >>> thinet_scaling(g, [0]).tolist()  # keep channel 0: w = (2 + 1) / 2
    [1.5]
    """
    g = gram.detach().to("cpu", torch.float64)
    keep = torch.as_tensor(list(keep), dtype=torch.long)
    a = g[keep][:, keep]
    b = g[keep].sum(1, keepdim=True)
    return torch.linalg.lstsq(a, b, driver="gelsd").solution.reshape(-1)


@register("thinet", description="ThiNet: greedy removal order minimising the next layer's reconstruction error "
          "(Luo et al. 2017, Algorithm 1)", needs_data=True, level="channel", reference="luo2017thinet")
def thinet(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
           locations: int | None = None, seed: int = 0, missing: str = "self") -> dict[str, torch.Tensor]:
    return _ordered_channels(model, targets, data, batches, locations, seed, missing, "thinet", thinet_order)


def _ordered_channels(model, targets, data, batches, locations, seed, missing, criterion, order) -> dict:
    """Channel scores from a removal ``order`` (``thinet_order`` / ``lasso_order``) of each Gram matrix."""
    batches, locations = check_batches(batches), _check_locations(locations)
    grams = _channel_grams(model, targets, data, batches, locations, seed, missing, criterion)
    return {t.name: _order_to_scores(order(grams[t.name][0]), t) for t in targets if t.name in grams}


# --------------------------------------------------------------------- He et al. 2017

def _lasso_problem(gram: torch.Tensor):
    """A square design ``A`` (``AᵀA = G``) and target ``y`` (``Aᵀy = G·1``, ``yᵀy = 1ᵀG1``), scaled
    so that ``max diag G = 1``; the LASSO in β has the same minimiser as on the full design."""
    import numpy as np

    g = gram.detach().to("cpu", torch.float64)
    scale = float(torch.diagonal(g).max()) if g.numel() else 0.0
    if scale > 0:
        g = g / scale
    e, u = torch.linalg.eigh((g + g.T) / 2)
    a = (torch.sqrt(e.clamp(min=0)).unsqueeze(1) * u.T)  # A = diag(sqrt e) Uᵀ
    y = a.sum(1)  # A · 1
    alpha_max = float((a.T @ y).abs().max()) / a.shape[0] if g.numel() else 0.0
    return np.ascontiguousarray(a.numpy()), np.ascontiguousarray(y.numpy()), alpha_max


def _lasso_solver():
    from sklearn.linear_model import Lasso

    return Lasso(fit_intercept=False, max_iter=100_000, tol=1e-10, warm_start=True, selection="cyclic")


def _fit(solver, a, y, alpha: float):
    from sklearn.exceptions import ConvergenceWarning

    solver.alpha = alpha
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        solver.fit(a, y)
    return torch.as_tensor(solver.coef_.copy(), dtype=torch.float64)


def lasso_order(gram: torch.Tensor) -> list[int]:
    """Channels in the order they leave the LASSO path as ``λ`` grows (He et al. 2017's β-subproblem
    with ``W`` fixed): the exact path is computed from the Gram matrix by LARS in its LASSO variant
    (:func:`sklearn.linear_model.lars_path_gram`, Efron et al. 2004); a channel's key is the largest
    ``λ`` at which ``β_c != 0`` (where it first enters coming down from ``λ_max``), ties broken by
    ``|β_c|`` at the end of the path, then by index. Channels that never enter come first.

    >>> lasso_order(torch.diag(torch.tensor([4., 1., 9.])))  # disjoint contributions: by energy
    [1, 0, 2]
    """
    from sklearn.linear_model import lars_path_gram

    g = gram.detach().to("cpu", torch.float64)
    c = g.shape[0]
    scale = float(torch.diagonal(g).max()) if c else 0.0
    if scale <= 0:
        return list(range(c))
    g = (g + g.T) / (2 * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, coefs = lars_path_gram(g.sum(1).numpy(), g.numpy(), n_samples=1, method="lasso", max_iter=10 * c + 10)
    coefs = torch.as_tensor(coefs, dtype=torch.float64)  # [C, breakpoints], λ decreasing
    nonzero = coefs != 0
    steps = coefs.shape[1]
    first = torch.where(nonzero.any(1), nonzero.float().argmax(1), torch.full((c,), steps))
    final = coefs[:, -1].abs()
    return sorted(range(c), key=lambda i: (-int(first[i]), float(final[i]), i))


def lasso_select(gram: torch.Tensor, n_keep: int, iters: int = 60) -> tuple[list[int], float, torch.Tensor]:
    """He et al. 2017's selection: the ``λ`` (as a fraction ``t`` of ``λ_max``) at which the LASSO keeps
    ``n_keep`` non-zero ``β``, found by bisection; returns ``(kept channels, t, β)``. Where no ``λ``
    gives exactly ``n_keep`` (two channels leave at once), the ``n_keep`` largest ``|β|`` at the
    largest ``λ`` that keeps more are taken.

    >>> keep, t, beta = lasso_select(torch.diag(torch.tensor([4., 1., 9.])), 2)
    >>> keep
    [0, 2]
    """
    c = gram.shape[0]
    a, y, alpha_max = _lasso_problem(gram)
    if n_keep >= c:
        return list(range(c)), 0.0, torch.ones(c, dtype=torch.float64)
    if alpha_max <= 0:
        return list(range(n_keep)), 0.0, torch.zeros(c, dtype=torch.float64)
    solver = _lasso_solver()
    lo, hi = 0.0, 1.0
    beta_lo = _fit(solver, a, y, 1e-12 * alpha_max)
    found = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        beta = _fit(solver, a, y, mid * alpha_max)
        k = int((beta != 0).sum())
        if k == n_keep:
            found = (mid, beta)
            break
        if k > n_keep:
            lo, beta_lo = mid, beta
        else:
            hi = mid
    if found is None:
        mid, beta = lo, beta_lo
        keep = sorted(torch.argsort(beta.abs(), descending=True, stable=True)[:n_keep].tolist())
    else:
        mid, beta = found
        keep = torch.nonzero(beta).reshape(-1).tolist()
    return keep, mid, beta


@register("lasso_channel", description="He et al. 2017 channel pruning: order in which channels leave the LASSO "
          "path of the next layer's reconstruction", needs_data=True, level="channel", reference="he2017channel")
def lasso_channel(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
                  locations: int | None = None, seed: int = 0, missing: str = "self") -> dict[str, torch.Tensor]:
    """Channels ranked by the order in which they leave the LASSO path of He et al. 2017's
    Eq. 3 (no intercept, as in the paper; the authors' code fits one, see the module notes)."""
    return _ordered_channels(model, targets, data, batches, locations, seed, missing, "lasso_channel", lasso_order)


# ------------------------------------------------------- pruning one layer's channels

def _layer_arguments(model, layer, sparsity, data) -> tuple[Target, float]:
    """The checks every one-layer prune function starts with: the layer's target and the sparsity."""
    check_model(model)
    t = _target_by_name(model, layer)
    sparsity = check_sparsity(sparsity)
    if data is None:
        raise ValueError("data is required: pass data=an iterable of (inputs, targets) batches")
    return t, sparsity


def _prepare(model, layer, sparsity, data, batches, locations, seed):
    """Validate, find layer i+1 and collect its input statistics (the model is not modified)."""
    t, sparsity = _layer_arguments(model, layer, sparsity, data)
    batches, locations = check_batches(batches), _check_locations(locations)
    consumer = next_layers(model, [t])[t.name]
    if consumer is None:
        raise ValueError(f"layer {layer!r} has no single following Linear/Conv2d (its output branches, is added, "
                         "concatenated or is the network's output), so there is no next layer to reconstruct")
    module = dict(model.named_modules())[consumer]
    with preserved(model):
        model.eval()
        stats = _collect(model, data, batches, {"q": (module, "inputs")}, locations, seed)
    q = stats["q"]["stat"]
    w3 = _weight3(module, t.shape[0])
    return t, sparsity, consumer, module, q, w3


def contribution_gram(model: nn.Module, layer: str, data: Iterable, *, batches: int | None = None,
                      locations: int | None = None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``(G, name of layer i+1)`` for the weight ``layer``: ``G[c, c'] = sum x̂_c x̂_c'`` over every
    (sampled) entry of layer *i+1*'s output, float64 ``[C, C]``; what ThiNet and the LASSO work on.
    The model is not modified; errors as :func:`~prunekit.methods.after.reconstruction.thinet_prune` (without ``sparsity``)."""
    _, _, consumer, _, q, w3 = _prepare(model, layer, 0.0, data, batches, locations, seed)
    return _gram_from_q(w3, q), consumer


# --------------------------------------------------------------------------------- OBS

def _hessian(q: torch.Tensor, n: int, damp: float) -> torch.Tensor:
    h = 2 * q / max(n, 1)
    d = float(torch.diagonal(h).mean()) if h.numel() else 0.0
    return h + (damp * d if d > 0 else damp) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)


def _obs_layer_ok(t: Target) -> None:
    m = t.module
    if t.attr != "weight" or not (isinstance(m, nn.Linear) or _conv_ok(m)):
        raise ValueError(f"criterion 'obs' handles the weights of Linear and ungrouped zero-padded Conv2d layers; "
                         f"{t.name!r} is not one (exclude it with exclude=[{t.name!r}])")


@register("obs", description="Optimal Brain Surgeon saliency w²/(2[H⁻¹]_qq) of the layer-wise reconstruction, "
          "H = 2XᵀX (Hassibi & Stork 1993; OBC, Frantar & Alistarh 2022)", needs_data=True,
          reference="hassibi1993obs")
def obs(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
        damp: float = 0.01) -> dict[str, torch.Tensor]:
    batches, damp = check_batches(batches), _check_damp(damp)
    for t in targets:
        _obs_layer_ok(t)
    watch = {t.name: (t.module, "inputs") for t in targets}
    stats = _collect(model, data, batches, watch)
    out = {}
    for t in targets:
        h = _hessian(stats[t.name]["stat"], stats[t.name]["n"], damp)
        hinv_diag = torch.diagonal(torch.linalg.pinv(h, hermitian=True))
        w = t.tensor.detach().to(h.device, torch.float64).reshape(t.shape[0], -1)
        s = w.pow(2) / (2 * hinv_diag.clamp(min=torch.finfo(torch.float64).tiny))
        dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
        out[t.name] = s.reshape(t.shape).to(dtype=dtype, device=t.parameter.device)
    return out


def __getattr__(name: str):
    """The procedures moved to :mod:`prunekit.methods.after.reconstruction` (kept here one release)."""
    if name in _MOVED:
        warnings.warn(f"prunekit.criteria.reconstruction.{name} has moved to prunekit.methods.after.reconstruction "
                      "(a procedure that modifies the model, not a criterion); the old path is kept for one release",
                      DeprecationWarning, stacklevel=2)
        # a deprecation shim, outside the layers (the layering test does not see importlib)
        return getattr(importlib.import_module("prunekit.methods.after.reconstruction"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
