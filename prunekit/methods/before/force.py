"""FORCE and Iterative SNIP: connection sensitivity re-scored on the pruned network.

de Jorge, Sanyal, Behl, Torr, Rogez & Dokania, *Progressive Skeletonization: Trimming more
fat from a network at initialization* (ICLR 2021). SNIP (Lee et al. 2019) scores every
connection once, on the dense network, by ``|g * w|``; at extreme sparsity that score
describes a network that no longer exists. FORCE prunes in ``T`` steps and at each step
scores the connections by their *foresight connection sensitivity* on the network pruned so
far: with ``c`` the current mask and ``g = dL/dw_bar`` the gradient of the loss w.r.t. the
effective weight ``w_bar = w * c`` (defined at pruned positions too),

    S(w) = |w * g|   (w: the dense weight at initialisation)

and the kept count decays exponentially, ``k_t = N * d**(t/T)`` for the final density ``d``.
Pruned connections keep a score, so one pruned at step ``t`` may come back later (FORCE);
forbidding that (the masks are nested) is the paper's *Iterative SNIP* baseline. With
``T = 1`` both are SNIP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

from ..._validate import check_bool, check_int, check_materialised, check_scope, check_sparsity
from ...core.guards import preserved
from ...core.masks import apply_masks, check_maskable, get_masks
from ...core.targets import Target, find_targets, is_masked
from ...criteria.api import check_batches, check_loss_fn, iter_batches
from ...pipeline import make_masks

__all__ = ["prune_force"]


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")  # pragma: no cover - a model with targets has parameters


def _slot(use) -> str:
    """The ``named_parameters`` key that holds the trainable tensor of one use of a target."""
    attr = use.attr + "_orig" if is_masked(use.module, use.attr) else use.attr
    return use.name[: len(use.name) - len(use.attr)] + attr


def _gradients(model: nn.Module, targets: list[Target], dense: dict[str, torch.Tensor],
               keep: dict[str, torch.Tensor], batches: list[tuple], loss_fn: Callable) -> dict[str, torch.Tensor]:
    """``sum_b dL_b/dw_bar`` at ``w_bar = dense * keep`` for every target (the model itself is
    only read: the weights are substituted with :func:`torch.func.functional_call`)."""
    leaves = {t.name: (dense[t.name] * keep[t.name]).requires_grad_(True) for t in targets}
    swap = {_slot(u): leaves[t.name] for t in targets for u in t.uses}
    names = list(leaves)
    total: list[torch.Tensor] | None = None
    for i, (x, y) in enumerate(batches):
        try:
            out = functional_call(model, swap, (x,), strict=False)
        except Exception as exc:  # noqa: BLE001 - whatever the model raises on a bad batch
            raise ValueError(f"data: the model raised {type(exc).__name__} ({exc}) on batch {i}: "
                             "pass (inputs, targets) batches the model accepts") from exc
        try:
            loss = loss_fn(out, y)
        except Exception as exc:  # noqa: BLE001 - whatever the loss raises on bad targets
            raise ValueError(f"data / loss_fn: the loss raised {type(exc).__name__} ({exc}) on batch {i}: "
                             "the targets must fit the model's outputs and loss_fn") from exc
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        gs = torch.autograd.grad(loss.reshape(()), [leaves[n] for n in names], allow_unused=True)
        gs = [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, gs)]
        total = gs if total is None else [a + g for a, g in zip(total, gs)]
    return dict(zip(names, total))


def prune_force(
    model: nn.Module,
    data: Iterable,
    sparsity: float,
    *,
    iterations: int,
    revive: bool = True,
    scope: str = "global",
    batches: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """FORCE (or Iterative SNIP with ``revive=False``) at initialisation, in place; returns the masks.

    Step ``t = 1 .. iterations`` keeps the fraction ``density**(t/T)`` of the chosen weights
    (``density = 1 - sparsity``, ``T = iterations``): exactly ``round((1 - density**(t/T)) *
    N)`` weights are masked (:func:`prunekit.make_masks`, unstructured, ``scope``; global as
    in the paper), ranked by ``|w * g|`` where ``w`` is the dense weight and ``g`` the gradient
    of the loss at the network masked by step ``t - 1`` (step 1: by nothing, i.e. SNIP),
    summed over the batches of ``data`` (an iterable of ``(inputs, targets)``; ``batches``
    limits how many are used, the same ones at every step). With ``revive=True`` (FORCE) every
    weight is ranked at every step, so a pruned one may return; with ``revive=False``
    (Iterative SNIP) pruned weights rank lowest and the masks are nested. The masks are
    applied once, at the end, with :func:`prunekit.apply_masks`; weights masked before the
    call count as pruned and stay pruned. The final count is that of one-shot pruning at
    ``sparsity``, and ``iterations=1`` gives exactly SNIP's mask (``prunekit.prune(model,
    sparsity, "snip", data=data)``).

    The gradients are taken in eval mode with ``loss_fn`` (default cross-entropy), as the
    ``"snip"`` criterion does; the model's weights, buffers and modes are left as they were.
    ``data`` is read once and kept in memory for the ``iterations`` passes.

    The authors' code uses ``iterations=10`` and one batch (``batches=1``) by default.
    Named ``prune_force`` after its default, FORCE, and like the other procedures of
    :mod:`prunekit.methods.before` (``prune_synflow``, ``prune_random``).

    Raises:
        TypeError / ValueError naming the argument, before the model is touched.

    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0); net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> data = [(torch.randn(32, 8), torch.randint(0, 3, (32,)))]
    >>> masks = prune_force(net, data, 0.9, iterations=5)
    >>> sum(int((~m).sum()) for m in masks.values())   # round(0.9 * 176)
    158
    """
    check_materialised(model)
    s = check_sparsity(sparsity)
    steps = check_int("iterations", iterations, minimum=1)
    revive = check_bool("revive", revive)
    scope = check_scope(scope)
    batches = check_batches(batches)
    loss_fn = check_loss_fn(loss_fn)
    targets = find_targets(model, include=include, exclude=exclude)
    for t in targets:
        check_maskable(t)
    data = list(iter_batches(data, batches=batches, device=_device(model)))

    before = {t.name: (t.mask if t.is_masked else torch.ones(t.shape, dtype=torch.bool, device=t.parameter.device))
              for t in targets}
    keep = dict(before)
    if s > 0:
        density = 1.0 - s
        dense = {t.name: t.parameter.detach() for t in targets}
        with preserved(model), torch.enable_grad():
            model.eval()
            for step in range(1, steps + 1):
                g = _gradients(model, targets, dense, keep, data, loss_fn)
                scores = {}
                for t in targets:
                    sc = (g[t.name] * dense[t.name]).abs()
                    scores[t.name] = sc.masked_fill(~(keep[t.name] if not revive else before[t.name]), float("-inf"))
                s_t = 1.0 - density ** (step / steps)
                new = make_masks(scores, s_t, granularity="unstructured", scope=scope)
                keep = {n: new[n] & before[n] for n in new}
    apply_masks(model, keep)
    masks = get_masks(model)
    return {t.name: masks[t.name] for t in targets}
