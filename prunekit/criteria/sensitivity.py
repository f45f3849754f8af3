"""Gradient- and Hessian-based saliency: Taylor, SNIP, GraSP, Optimal Brain Damage.

All take ``data`` (an iterable of ``(inputs, targets)`` batches), ``batches=`` (how many of
them to use; default all) and ``loss_fn=`` (default :func:`torch.nn.functional.cross_entropy`,
called as ``loss_fn(model(inputs), targets)`` and expected to average over the batch).
``g`` below is the gradient of the loss w.r.t. the *effective* weight (``weight_orig *
weight_mask`` for a masked model), ``w`` the effective weight. ``L_b`` is the loss of batch b.

* ``"taylor"`` — Molchanov et al. 2019, *Importance Estimation for Neural Network Pruning*
  (CVPR), first-order Taylor expansion of the loss change when a weight is removed:
  ``I = (g * w)**2`` per mini-batch, **summed** over batches (the paper averages over
  mini-batches; the ranking is the same).
* ``"taylor_channel"`` — the same paper's group version for an output channel S (a filter, or
  a Linear row): ``I_S = (sum_{s in S} g_s w_s)**2`` per batch, summed over batches. Only the
  layer's weight is in the group (its bias and a following BatchNorm are not; the paper's
  Taylor-FO-BN variant scores BN gates instead). Channel-level.
* ``"snip"`` — Lee et al. 2019, *SNIP: Single-shot Network Pruning based on Connection
  Sensitivity* (ICLR): ``|dL/dc| at c = 1`` for a multiplicative mask c, i.e. ``|g * w|``,
  with ``g`` the gradient of ``sum_b L_b``. The paper uses **one** mini-batch: pass
  ``batches=1`` for that; by default every batch of ``data`` is used (the gradients are
  summed). The paper's normalisation ``s / sum(s)`` is omitted: it does not change the ranking.
* ``"grasp"`` — Wang et al. 2020, *Picking Winning Tickets Before Training by Preserving
  Gradient Flow* (ICLR). With ``g = grad sum_b L_b`` (held fixed) and ``Hg`` the
  Hessian-vector product ``grad_w (g_f . stopgrad(g))`` summed over batches, the paper
  scores ``S(-w) = -w * (Hg)`` and **removes the weights with the largest S**:
  removing them reduces the gradient flow least, or even increases it (the authors' code
  computes ``-theta * Hg`` and masks its top fraction). prunekit's convention is the
  opposite (higher score = kept), so the returned score is ``w * (Hg) = -S``: pruning the
  lowest returned scores removes exactly the weights GraSP removes. Written as a "higher is
  kept" score, GraSP is therefore ``w * (Hg)``; keeping the highest ``-w * (Hg)`` instead
  would be the opposite of GraSP. First-order meaning: shrinking w_q by a factor
  (1 - eps) changes the gradient norm ``g.g`` by about ``-2 eps * score_q``, so the weights
  kept are those whose removal would reduce the gradient flow most. ``temperature=``
  divides the logits (the authors' code uses 200; default 1 = plain loss). On a masked
  model ``g`` is restricted to the unmasked weights (the gradient flow of the live
  network).
* ``"obd"`` — LeCun, Denker & Solla 1990, *Optimal Brain Damage* (NIPS 2): saliency
  ``s_q = 1/2 * h_qq * w_q**2`` with ``h_qq`` the diagonal of the Hessian of the average loss
  ``(1/B) sum_b L_b`` (the per-sample mean loss when batches have equal size).
  ``hessian=`` chooses how ``h_qq`` is obtained:

  - ``"fisher"`` (default): the empirical Fisher diagonal, the mean over samples of the
    squared per-sample gradient, ``mean_n g_n**2`` (one backward pass per sample). A
    positive Gauss-Newton-type approximation, in the spirit of the paper's own
    approximation (which drops the second derivatives of the nonlinearities). Each batch
    also goes through ``loss_fn`` whole once, so inputs and targets that do not pair up
    (2 inputs, 5 labels) raise as in every other criterion instead of being cut.
  - ``"exact"``: the exact diagonal with autograd, one extra backward pass per weight —
    only for tiny networks (a few thousand weights).
  - ``"hutchinson"``: ``E[z * (H z)]`` over ``probes=`` Rademacher vectors z per batch
    (Hessian-vector products; seeded by ``seed=``). Unbiased, noisy with few probes.

  With ``"exact"``/``"hutchinson"`` ``h_qq`` can be negative (the Hessian is not positive
  definite away from a minimum); such weights get negative saliency and go first.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .._validate import check_int
from ..core.targets import Target, find_targets
from .registry import register
from ._common import (
    batch_size, check_batches, check_choice, check_loss_fn, forward_loss, grads,
    iter_batches, model_device, per_channel, preserved, sample, summed_over_batches, weight_leaves,
)

__all__ = ["taylor", "taylor_channel", "snip", "grasp", "obd", "hessian_diagonal"]


def _check_common(batches, loss_fn):
    return check_batches(batches), check_loss_fn(loss_fn)


@register("taylor", description="first-order Taylor (g*w)^2, summed over batches (Molchanov et al. 2019)",
          needs_data=True, reference="molchanov2019importance")
def taylor(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
           loss_fn=None) -> dict[str, torch.Tensor]:
    batches, loss_fn = _check_common(batches, loss_fn)
    with weight_leaves(targets) as leaves:
        acc = summed_over_batches(model, leaves, data, batches, loss_fn, lambda g, w: (g * w).pow(2))
    return {t.name: a for t, a in zip(targets, acc)}


@register("taylor_channel", description="first-order Taylor of a channel, (sum over its weights of g*w)^2, "
          "summed over batches (Molchanov et al. 2019)", needs_data=True, level="channel",
          reference="molchanov2019importance")
def taylor_channel(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
                   loss_fn=None) -> dict[str, torch.Tensor]:
    batches, loss_fn = _check_common(batches, loss_fn)
    with weight_leaves(targets) as leaves:
        acc = summed_over_batches(model, leaves, data, batches, loss_fn,
                                  lambda g, w: per_channel(g * w).sum(1).pow(2))
    return {t.name: a for t, a in zip(targets, acc)}


def _summed_gradient(model, leaves, data, batches, loss_fn, temperature=1.0):
    return summed_over_batches(model, leaves, data, batches, loss_fn, lambda g, w: g, temperature)


@register("snip", description="SNIP connection sensitivity |g*w| (Lee et al. 2019; batches=1 as in the paper)",
          needs_data=True, reference="lee2019snip")
def snip(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
         loss_fn=None) -> dict[str, torch.Tensor]:
    batches, loss_fn = _check_common(batches, loss_fn)
    with weight_leaves(targets) as leaves:
        g = _summed_gradient(model, leaves, data, batches, loss_fn)
        return {t.name: (gi * w.detach()).abs() for t, gi, w in zip(targets, g, leaves)}


@register("grasp", description="GraSP w*(Hg), kept when high: the paper's score S = -w*(Hg) is "
          "removed when large (Wang et al. 2020)", needs_data=True, reference="wang2020grasp")
def grasp(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
          loss_fn=None, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    batches, loss_fn = _check_common(batches, loss_fn)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    data = list(iter_batches(data, batches, model_device(model)))  # two passes over the same batches
    with weight_leaves(targets) as leaves:
        g = _summed_gradient(model, leaves, data, None, loss_fn, temperature)
        for t, gi in zip(targets, g):
            if t.is_masked:
                gi.mul_(t.mask)
        hg = [torch.zeros_like(w) for w in leaves]
        for b, (x, y) in enumerate(data):
            gf = grads(forward_loss(model, x, y, loss_fn, temperature, batch=b), leaves, create_graph=True)
            z = sum((a * b).sum() for a, b in zip(gf, g))
            if z.requires_grad:
                for acc, h in zip(hg, grads(z, leaves)):
                    acc += h
        return {t.name: w.detach() * h for t, w, h in zip(targets, leaves, hg)}


def _hessian_diag_exact(model, leaves, data, loss_fn):
    diag = [torch.zeros_like(w) for w in leaves]
    n = 0
    for b, (x, y) in enumerate(data):
        n += 1
        gs = grads(forward_loss(model, x, y, loss_fn, batch=b), leaves, create_graph=True)
        for d, g, w in zip(diag, gs, leaves):
            if not g.requires_grad:
                continue
            flat_g, flat_d = g.reshape(-1), d.view(-1)
            for i in range(flat_g.numel()):
                (h,) = torch.autograd.grad(flat_g[i], w, retain_graph=True, allow_unused=True)
                if h is not None:
                    flat_d[i] += h.reshape(-1)[i]
    return [d / n for d in diag]


def _hessian_diag_hutchinson(model, leaves, data, loss_fn, probes, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    diag = [torch.zeros_like(w) for w in leaves]
    n = 0
    for b, (x, y) in enumerate(data):
        n += 1
        gs = grads(forward_loss(model, x, y, loss_fn, batch=b), leaves, create_graph=True)
        if not any(g.requires_grad for g in gs):
            continue
        for _ in range(probes):
            zs = [(torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).to(w) for w in leaves]
            gz = sum((g * z).sum() for g, z in zip(gs, zs))
            hz = torch.autograd.grad(gz, leaves, retain_graph=True, allow_unused=True)
            for d, z, h in zip(diag, zs, hz):
                if h is not None:
                    d += z * h
    return [d / (n * probes) for d in diag]


def _fisher_diag(model, leaves, data, loss_fn):
    diag = [torch.zeros_like(w) for w in leaves]
    n = 0
    for b, (x, y) in enumerate(data):
        with torch.no_grad():  # the whole batch through loss_fn once: it rejects inputs and targets
            forward_loss(model, x, y, loss_fn, batch=b)  # that do not pair up, as in every other criterion
        for i in range(batch_size(x)):
            n += 1
            gs = grads(forward_loss(model, sample(x, i), sample(y, i), loss_fn), leaves)
            for d, g in zip(diag, gs):
                d += g.pow(2)
    return [d / n for d in diag]


@register("obd", description="Optimal Brain Damage 1/2 h_qq w^2 (diagonal Hessian: fisher/exact/hutchinson; "
          "LeCun et al. 1990)", needs_data=True, reference="lecun1990obd")
def obd(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None, loss_fn=None,
        hessian: str = "fisher", probes: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    batches, loss_fn = _check_common(batches, loss_fn)
    check_choice("hessian", hessian, ("fisher", "exact", "hutchinson"))
    probes = check_int("probes", probes, minimum=1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    data = iter_batches(data, batches, model_device(model))
    with weight_leaves(targets) as leaves:
        if hessian == "exact":
            h = _hessian_diag_exact(model, leaves, data, loss_fn)
        elif hessian == "hutchinson":
            h = _hessian_diag_hutchinson(model, leaves, data, loss_fn, probes, seed)
        else:
            h = _fisher_diag(model, leaves, data, loss_fn)
        return {t.name: 0.5 * hd * w.detach().pow(2) for t, hd, w in zip(targets, h, leaves)}


def hessian_diagonal(model: nn.Module, data: Iterable, *, hessian: str = "exact", include=None, exclude=None,
                     batches: int | None = None, loss_fn=None, probes: int = 32,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """The diagonal ``h_qq`` that ``"obd"`` uses, by parameter name (for teaching and tests).

    Equals ``2 * obd / w**2`` wherever ``w != 0``, and is also defined where ``w == 0``.
    """

    batches, loss_fn = _check_common(batches, loss_fn)
    check_choice("hessian", hessian, ("fisher", "exact", "hutchinson"))
    targets = find_targets(model, include=include, exclude=exclude)
    with preserved(model), torch.enable_grad():
        model.eval()
        data_it = iter_batches(data, batches, model_device(model))
        with weight_leaves(targets) as leaves:
            if hessian == "exact":
                h = _hessian_diag_exact(model, leaves, data_it, loss_fn)
            elif hessian == "hutchinson":
                h = _hessian_diag_hutchinson(model, leaves, data_it, loss_fn, check_int("probes", probes, minimum=1), seed)
            else:
                h = _fisher_diag(model, leaves, data_it, loss_fn)
    return {t.name: d.detach() for t, d in zip(targets, h)}
