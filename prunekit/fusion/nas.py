"""Pruning as width search: EagleEye (Li et al. 2020) on the channel-ratio search space.

Li, Lin, Chen, Lin & Yan, "EagleEye: fast sub-net evaluation for efficient neural network
pruning", ECCV 2020: (1) sample per-layer pruning ratios at random, keeping the samples that
meet the MAC (FLOPs) constraint; (2) prune each candidate by filter L1 norm; (3) *adaptive
batch normalisation*: recompute every BatchNorm's running statistics on a few training batches
(forward passes only), because the statistics inherited from the dense network are wrong for
the pruned one and make the plain accuracy of a candidate a poor predictor of its accuracy
after fine-tuning; (4) rank candidates by their accuracy on a small held-out set and fine-tune
the best. The space (groups, round rule, L1 selection, exact MACs) is
:class:`prunekit.methods.learned.search_space.SearchSpace`, shared with AMC and MetaPruning, so
the three searches are compared at the same budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_int, check_model, check_number
from ..methods.learned.search_space import SearchResult, SearchSpace, check_budget
from ._inputs import input_batches

__all__ = ["adaptive_bn", "eagleeye_search"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def adaptive_bn(model: nn.Module, batches: Any) -> nn.Module:
    """Recompute the running statistics of every BatchNorm of ``model`` on ``batches`` (in place).

    EagleEye's adaptive BN (Li et al. 2020, section 3.2): statistics are reset and re-estimated
    as the plain average over the batches (``momentum=None``, PyTorch's cumulative moving
    average), by forward passes in train mode without gradients; weights are not changed.
    The model is returned in eval mode, each BatchNorm with its original momentum.

    Args:
        model: any model; without BatchNorm nothing changes.
        batches: a tensor of inputs or an iterable of batches (tensors or ``(inputs, targets)``),
            e.g. a few training batches.
    """
    check_model(model)
    xs = input_batches("batches", batches)
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    saved = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for x in xs:
                model(x)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return model


def eagleeye_search(model: nn.Module, example_inputs: Any, *, budget: float, calibration: Any,
                    validation: tuple[torch.Tensor, torch.Tensor], candidates: int = 50, max_ratio: float = 0.7,
                    tolerance: float = 0.05, seed: int = 0, max_tries: int | None = None) -> SearchResult:
    """EagleEye's search: random layer-wise ratios under a MAC budget, scored after adaptive BN.

    Ratios are drawn i.i.d. uniform in ``[0, max_ratio]`` per layer (a seeded generator) and
    kept when the pruned model's MAC fraction lies in ``[budget - tolerance, budget]``, until
    ``candidates`` are kept (``ValueError`` after ``max_tries`` draws, default ``200 *
    candidates``). Each candidate is compacted (:meth:`SearchSpace.compact`), recalibrated with
    :func:`adaptive_bn` on ``calibration`` and scored by top-1 accuracy on ``validation``.

    Args:
        model: the trained dense model (not modified).
        example_inputs: one example batch, to trace the model and count MACs.
        budget: the fraction of the dense MACs to keep, in ``(0, 1]``.
        calibration: training batches for adaptive BN (a tensor or an iterable of batches).
        validation: ``(inputs, targets)``, held-out data (not the test set).
        candidates: number of candidates to evaluate (EagleEye: 1000 on ImageNet).
        max_ratio: the largest per-layer ratio, in ``(0, 1)``.
        tolerance: width of the accepted MAC window below ``budget``, in ``(0, 1]``.
        seed: seeds the sampling; the search is deterministic given it.

    Returns:
        A :class:`SearchResult` (``method="eagleeye"``) whose ``history`` has, per candidate,
        ``"ratios"``, ``"mac_fraction"``, ``"reward"`` (accuracy after adaptive BN) and
        ``"vanilla"`` (accuracy with the inherited statistics). Build the winner with
        ``adaptive_bn(SearchSpace(model, example_inputs).compact(result.best_ratios), calibration)``,
        then fine-tune it.
    """
    check_model(model)
    b = check_budget(budget)
    n = check_int("candidates", candidates, minimum=1)
    mr = check_number("max_ratio", max_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
    tol = check_number("tolerance", tolerance, low=0.0, high=1.0, low_open=True)
    s = check_int("seed", seed, minimum=0)
    tries = 200 * n if max_tries is None else check_int("max_tries", max_tries, minimum=1)
    cal = input_batches("calibration", calibration)
    if (not isinstance(validation, (tuple, list)) or len(validation) != 2
            or not all(isinstance(t, torch.Tensor) for t in validation)):
        raise TypeError("validation must be an (inputs, targets) pair of tensors")
    space = SearchSpace(model, example_inputs)
    space.check_reachable(b, mr)

    g = torch.Generator().manual_seed(s)
    x_val, y_val = validation
    history: list[dict] = []
    drawn = 0
    while len(history) < n:
        if drawn >= tries:
            raise ValueError(f"only {len(history)} of {n} candidates fell in the MAC window "
                             f"[{b - tol:g}, {b:g}] after {tries} draws: widen tolerance, change max_ratio, "
                             f"or raise max_tries")
        drawn += 1
        ratios = (torch.rand(len(space), generator=g, dtype=torch.float64) * mr).tolist()
        frac = space.mac_fraction(ratios)
        if not (b - tol <= frac <= b):
            continue
        exact = [k / c for k, c in zip(space.removed(ratios), space.sizes)]
        vanilla = space.accuracy(exact, (x_val, y_val))
        net = adaptive_bn(space.compact(exact), cal)
        with torch.no_grad():
            acc = float((net(x_val).argmax(1) == y_val).float().mean())
        history.append({"ratios": exact, "mac_fraction": frac, "reward": acc, "vanilla": vanilla})
    best = max(range(len(history)), key=lambda i: (history[i]["reward"], -i))
    return SearchResult(method="eagleeye", names=space.names, budget=b, best_ratios=history[best]["ratios"],
                        best_reward=history[best]["reward"], best_mac_fraction=history[best]["mac_fraction"],
                        history=history, extra={"draws": drawn, "max_ratio": mr, "tolerance": tol, "seed": s})
