"""Static vs. dynamic pruning: one pruned network for every input, or a choice of channels per input?

**The question.** A *static* pruned network removes the same channels for every input: it is
smaller, and any framework runs it faster. A *dynamic* (run-time) pruned network keeps all its
weights and decides, for each input, which channels to compute. At the same *average*
computation, which keeps more accuracy?

**The survey's framing** (Cheng et al. 2024, "static vs. dynamic pruning"): static pruning
(before, during or after training) fixes one mask; dynamic pruning adapts it per input, can
reach a better accuracy-computation trade-off and keeps the network's full capacity, but needs
extra gating modules, saves no storage, and its savings are hard to turn into wall-clock speed
on general hardware and in batched execution. The method here is Feature Boosting and
Suppression (FBS; Gao et al. 2019, ICLR): a small predictor per conv computes channel
saliencies from the layer's input, only the ``k`` most salient output channels are computed
and they are scaled by their saliency; the static side is L1-norm filter pruning
(Li et al. 2017, ICLR) of the same convs, compacted into a smaller dense network.

**What is measured.** The zoo's SmallCNN on 8x8 digits, pretrained from each seed
(:func:`~prunekit.experiments.contrasts.common.pretrained`). For every target ``s`` in
:data:`GRID` -- the fraction of the convolutions' multiply-accumulates (MACs) removed -- one
keep rate ``keep`` (the same fraction of output channels in every conv) is chosen so that both
sides compute the same channel counts per conv and the conv MACs removed are as close to ``s``
as the integer channel counts allow (within 0.02 here). Then

* ``"static channels"``: the lowest-L1 ``1 - keep`` of every conv's filters are removed, the
  network is compacted and fine-tuned ``steps`` steps
  (:func:`prunekit.experiments.when.static_channels`);
* ``"dynamic gating"``: FBS gates at ``keep`` on every conv, trained with the network for the
  same ``steps`` steps (Adam, lr 1e-3, the same batches) with FBS's l1 penalty on the saliencies
  (:func:`prunekit.experiments.when.fbs_gated`, the functions of the chapter "When to prune").

Both sides thus execute the same conv MACs per input (FBS computes exactly ``k`` channels per
input); the dynamic side pays for its predictors (counted in ``macs``). Metrics: ``accuracy``
(test, 450 images), ``macs`` (MACs executed per image, averaged over the test set, every conv
and linear layer including the gates' predictors, :func:`prunekit.methods.executed_macs`) and
``macs_fraction`` (``macs`` over the dense network's). Extra fields: ``keep`` and
``conv_fraction`` (executed conv MACs over the dense network's conv MACs).

**Toy-scale simplifications.** FBS gates every conv of a 3-conv network trained on 8x8 digits,
fine-tuned for a few hundred steps; the paper gates ResNets/VGG on ImageNet/CIFAR with longer
training. As in chapter "When to prune", skipped channels are multiplied by zero (PyTorch has no
per-input sparse convolution): executed MACs are counted, not timed -- which is exactly the
survey's caveat about dynamic pruning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit import train
from prunekit.methods import executed_macs
from prunekit.methods.runtime.gating import gated_channels, kept_count

from .. import runner
from ..when import fbs_gated, static_channels
from .common import GRID, accuracy, digits_loaders, pretrained, row

__all__ = ["CONFIG", "EXPERIMENT", "QUICK", "SIDES", "SIDE_OF", "choose_keep", "conv_macs",
           "dynamic_conv_macs", "trial"]

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": list(GRID),   # fraction of conv MACs removed
    "steps": 150,               # fine-tuning steps of either side
    "lasso": 0.01,              # FBS's l1 weight on the saliencies (as in "When to prune")
    "tolerance": 0.02,          # the keep rate must reach the target conv MACs within this
}

QUICK: dict[str, Any] = {"steps": 10}

SIDES = ("static", "dynamic")
SIDE_OF = {"static channels": "static", "dynamic gating": "dynamic"}


def _conv_geometry(model: nn.Module, x1: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(in_channels, out_channels, kernel * output pixels)`` of every conv, in order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    geo: dict[nn.Module, tuple[int, int, int]] = {}
    hooks = [c.register_forward_hook(lambda m, a, out: geo.__setitem__(
        m, (m.in_channels, m.out_channels, m.weight[0, 0].numel() * out[0, 0].numel())))
        for c in convs]
    try:
        with torch.no_grad():
            model.eval()(x1)
    finally:
        for h in hooks:
            h.remove()
    return [geo[c] for c in convs]


def conv_macs(geometry: list[tuple[int, int, int]], kept: list[int] | None = None) -> int:
    """Conv MACs of a chain of convs (each reads the previous one's outputs) computing
    ``kept[i]`` output channels of conv ``i`` (default: all)."""
    total, c_in = 0, geometry[0][0]
    for i, (_, c_out, per_out) in enumerate(geometry):
        k = c_out if kept is None else kept[i]
        total += c_in * k * per_out
        c_in = k
    return total


def choose_keep(geometry: list[tuple[int, int, int]], sparsity: float) -> tuple[float, float]:
    """``(keep, conv_fraction)``: the keep rate (a multiple of 0.005) whose channel counts are
    the same for FBS (``round(keep * C)``) and static L1 pruning (``C - round((1 - keep) * C)``)
    and whose conv MACs are closest to ``1 - sparsity`` of the dense ones."""
    dense = conv_macs(geometry)
    best = None
    for i in range(1, 201):
        keep = i / 200
        gate = [kept_count(keep, c) for _, c, _ in geometry]
        static = [max(1, c - round((1.0 - keep) * c)) for _, c, _ in geometry]
        if gate != static:
            continue
        frac = conv_macs(geometry, gate) / dense
        if best is None or abs(frac - (1.0 - sparsity)) < abs(best[1] - (1.0 - sparsity)):
            best = (keep, frac)
    return best


@torch.no_grad()
def dynamic_conv_macs(gated: nn.Module, geometry: list[tuple[int, int, int]],
                      x: torch.Tensor) -> torch.Tensor:
    """Conv MACs each input of ``x`` executes in ``gated`` (a gated chain of convs): conv ``i``
    computes the channels its gate picked, reading those the previous gate picked. ``[batch]``."""
    gated.eval()(x)
    masks = list(gated_channels(gated).values())
    c_in = torch.full((x.shape[0],), float(geometry[0][0]))
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for (_, _, per_out), m in zip(geometry, masks):
        k = m.sum(dim=1).double()
        total += c_in * k * per_out
        c_in = k
    return total


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: the pretrained CNN, then both sides at every target of ``sparsities``."""
    train_loader, test_loader = digits_loaders()
    x_test = torch.cat([x for x, _ in test_loader])
    x1 = x_test[:1]
    model = pretrained(seed)
    geometry = _conv_geometry(model, x1)
    dense_conv = conv_macs(geometry)
    dense_macs = pk.count_macs(model, x1)[0]
    rows = []
    for s in cfg["sparsities"]:
        keep, frac = choose_keep(geometry, s)
        if abs(1.0 - frac - s) > cfg["tolerance"]:
            raise ValueError(f"no keep rate reaches conv sparsity {s} within {cfg['tolerance']}")
        static = static_channels(model, keep, train_loader, cfg["steps"], seed, x1)
        macs = pk.count_macs(static, x1)[0]
        kept = [m.out_channels for m in static.modules() if isinstance(m, nn.Conv2d)]
        rows.append(row("static channels", s, accuracy=accuracy(static, test_loader),
                        macs=float(macs), macs_fraction=round(macs / dense_macs, 6), keep=keep,
                        conv_fraction=round(conv_macs(geometry, kept) / dense_conv, 6),
                        channels=kept))
        train.set_seed(seed)           # the predictors' initial weights
        gated = fbs_gated(model, keep, train_loader, cfg["steps"], seed, cfg["lasso"])
        macs = float(executed_macs(gated, x_test).double().mean())
        conv = float(dynamic_conv_macs(gated, geometry, x_test).mean())
        rows.append(row("dynamic gating", s, accuracy=accuracy(gated, test_loader),
                        macs=round(macs, 3), macs_fraction=round(macs / dense_macs, 6), keep=keep,
                        conv_fraction=round(conv / dense_conv, 6),
                        channels=[kept_count(keep, c) for _, c, _ in geometry]))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="static-vs-dynamic",
    title="Static L1 channel pruning vs. FBS dynamic channel gating at equal conv MACs",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy", "macs", "macs_fraction")))
