"""Training the pruned network from scratch vs fine-tuning its inherited weights.

**Question.** Once pruning has fixed the smaller network, are its inherited (pre-trained,
pruned) weights worth keeping, or does the same architecture trained from a fresh random
initialisation do as well?

**The survey's framing** (Cheng et al. 2024): there is no universal winner. Liu et al.
(2019, "Rethinking the value of network pruning") found that for structured pruning with a
*predefined* target architecture (e.g. the same fraction of filters removed in every layer,
as with the L1-norm filter pruning of Li et al. 2017), training the small network from
scratch matches fine-tuning, given the same number of epochs as the large network
("Scratch-E") or the same computation ("Scratch-B"). Fine-tuning tends to win for
unstructured pruning at high sparsity, with small training budgets, and for large
pre-trained models; for unstructured masks this is where Liu et al. and the lottery ticket
hypothesis (Frankle & Carbin 2019: the mask needs its original initialisation) disagree.

**What is measured.** The recipe's pre-trained digits SmallCNN of each seed
(:func:`pretrained`; 15 epochs = 330 steps of Adam at 3e-3 on a cosine decay) is pruned
structurally as Li et al. do: in each of the three convs and the hidden linear layer the
filters (output channels, rows) of smallest L1 norm are removed, the same kept fraction
``r`` in every layer (a predefined architecture), and the network is compacted
(:func:`prunekit.compact`). ``r`` is chosen so that the fraction of conv and linear
weights removed is as close as possible to each sparsity of :data:`GRID` (rows keep the
target as ``sparsity`` and store the achieved one, the widths and the MACs). Then:

* ``structured: fine-tune`` -- the inherited weights trained ``finetune_steps`` steps
  (5 epochs) with a small constant learning rate (Adam, ``finetune_lr`` = 3e-4, a tenth of
  the recipe's; Liu et al. fine-tune with the last, smallest rate of the schedule);
* ``structured: scratch-E`` -- the compacted architecture re-initialised (a new SmallCNN
  with the compacted widths, seeded ``seed + 1000``; seed ``seed`` would be the pre-trained
  network's own initialisation) and trained with the recipe for its 330 steps;
* ``structured: scratch-B`` -- the same, for ``330 x dense MACs / pruned MACs`` steps,
  capped at twice the recipe's steps as Liu et al. do ("if the pruned model saves more than
  2x FLOPs, we just double the number of epochs"): at these sparsities the cap always
  applies, so scratch-B trains 660 steps.
* the unstructured counterpart -- global magnitude pruning of the same pre-trained network
  to the achieved structured sparsity (so it keeps as many weights), then either
  ``unstructured: fine-tune`` (as above) or ``unstructured: scratch-E`` (the same mask on
  a fresh ``seed + 1000`` initialisation, trained 330 steps with the recipe; dense hardware
  runs it at the dense network's cost, so scratch-B would equal scratch-E).

``train_steps`` (a metric) counts, with a training callback, the steps spent *after*
pruning; the fine-tuned rows also inherit the 330 pre-training steps, which is the cost Liu
et al. point out that training from scratch avoids.

**Toy-scale simplifications.** One small CNN on 8x8 digits; 5 fine-tuning epochs instead
of Liu et al.'s 40; Adam instead of SGD with step decays.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit import models, train, zoo

from .. import runner
from .common import GRID, MODEL, accuracy, digits_loaders, pretrained, row
from .weights import StepCounter, train_counted

__all__ = ["CONFIG", "EXPERIMENT", "LAYERS", "QUICK", "SETTINGS", "SIDES", "SIDE_OF",
           "channel_ratio", "example_input", "prunable_weights", "reinit", "structured_prune",
           "trial"]

SIDES = ("fine-tune", "from scratch")
#: The settings, in table order.
SETTINGS = ("structured: fine-tune", "structured: scratch-E", "structured: scratch-B",
            "unstructured: fine-tune", "unstructured: scratch-E")
SIDE_OF = {s: ("fine-tune" if s.endswith("fine-tune") else "from scratch") for s in SETTINGS}

#: The layers whose output channels are pruned (the classifier's last Linear is kept).
LAYERS = ("features.0", "features.4", "features.8", "classifier.2")

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": list(GRID),
    "finetune_steps": 110,      # 5 epochs of 22 batches
    "finetune_lr": 3e-4,        # a tenth of the recipe's 3e-3, constant
    "scratch_steps": None,      # scratch-E's steps; None: the recipe's 15 epochs x 22 batches
    "scratch_b_cap": 2.0,       # scratch-B trains at most this many times scratch-E's steps
    "unstructured": True,
}
QUICK: dict[str, Any] = {"finetune_steps": 4, "scratch_steps": 6}

_RECIPE = zoo.RECIPES[MODEL]


def example_input() -> torch.Tensor:
    """One test image (for tracing, compacting and counting MACs)."""
    return next(iter(digits_loaders()[1]))[0][:1]


def prunable_weights(model: nn.Module) -> int:
    """The number of conv and linear weights (what ``sparsity`` counts)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _widths(ratio: float) -> tuple[list[int], int]:
    kw = _RECIPE["model_kwargs"]
    return ([max(1, round(ratio * w)) for w in kw["widths"]], max(1, round(ratio * kw["hidden"])))


def _small(widths: list[int], hidden: int) -> nn.Module:
    kw = _RECIPE["model_kwargs"]
    return models.SmallCNN(kw["in_channels"], kw["num_classes"], widths, hidden)


def channel_ratio(sparsity: float) -> float:
    """The kept channel fraction ``r`` (a multiple of 1/64) whose pruned SmallCNN removes the
    fraction of conv and linear weights closest to ``sparsity``."""
    kw = _RECIPE["model_kwargs"]
    dense = prunable_weights(models.SmallCNN(**kw))

    def gap(r: float) -> float:
        return abs(1.0 - prunable_weights(_small(*_widths(r))) / dense - sparsity)

    return min((k / 64 for k in range(1, 65)), key=gap)


def structured_prune(model: nn.Module, ratio: float, x: torch.Tensor) -> nn.Module:
    """Li et al.'s L1-norm filter pruning of ``model``'s :data:`LAYERS`, keeping the same
    fraction ``ratio`` of channels in each (rounded), then compacted; ``model`` is untouched."""
    net = copy.deepcopy(model)
    mods = dict(net.named_modules())
    sparsity = {}
    for name in LAYERS:
        m = mods[name]
        c = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        sparsity[name + ".weight"] = 1.0 - max(1, round(ratio * c)) / c
    # a VGG-style network couples no channels across layers: each layer is pruned on its own
    pk.prune(net, sparsity, "l1_filter", granularity="channel", scope="layer",
             include=list(sparsity))
    return pk.compact(net, x)


def reinit(small: nn.Module, seed: int) -> nn.Module:
    """A freshly initialised SmallCNN (seeded ``seed``) with ``small``'s widths."""
    convs = [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)]
    hidden = small.classifier[2].out_features
    train.set_seed(seed)
    return _small(convs, hidden)


def _fine_tune(net: nn.Module, cfg: dict[str, Any], seed: int) -> int:
    counter = StepCounter()
    train.fine_tune(net, digits_loaders()[0], steps=cfg["finetune_steps"], lr=cfg["finetune_lr"],
                    optimizer=_RECIPE["recipe"]["optimizer"], seed=seed, callback=counter)
    return counter.steps


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: every setting at every sparsity (see the module docstring)."""
    x = example_input()
    scratch_e = cfg["scratch_steps"] or _RECIPE["recipe"]["epochs"] * len(digits_loaders()[0])
    base = pretrained(seed)
    dense_weights = prunable_weights(base)
    dense_macs = pk.count_macs(base, x)[0]
    rows = []
    for s in cfg["sparsities"]:
        ratio = channel_ratio(s)
        small = structured_prune(base, ratio, x)
        achieved = round(1.0 - prunable_weights(small) / dense_weights, 4)
        macs = pk.count_macs(small, x)[0]
        info = {"achieved_sparsity": achieved, "channel_ratio": round(ratio, 4), "macs": macs,
                "widths": [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)]
                + [small.classifier[2].out_features]}
        pruned_acc = accuracy(small)
        steps = _fine_tune(small, cfg, seed)
        rows.append(row("structured: fine-tune", s, accuracy=accuracy(small), train_steps=steps,
                        accuracy_pruned=pruned_acc, **info))
        scratch_b = round(scratch_e * min(cfg["scratch_b_cap"], dense_macs / macs))
        for setting, budget in (("structured: scratch-E", scratch_e),
                                ("structured: scratch-B", scratch_b)):
            net = reinit(small, seed + 1000)
            steps = train_counted(net, budget, seed)
            rows.append(row(setting, s, accuracy=accuracy(net), train_steps=steps, **info))
        if cfg["unstructured"]:
            net = copy.deepcopy(base)
            masks = pk.prune(net, achieved, "magnitude")
            u_info = {"achieved_sparsity": achieved, "macs": dense_macs}
            pruned_acc = accuracy(net)
            steps = _fine_tune(net, cfg, seed)
            rows.append(row("unstructured: fine-tune", s, accuracy=accuracy(net),
                            train_steps=steps, accuracy_pruned=pruned_acc, **u_info))
            train.set_seed(seed + 1000)
            net = models.SmallCNN(**_RECIPE["model_kwargs"])
            pk.apply_masks(net, masks)
            steps = train_counted(net, scratch_e, seed)
            rows.append(row("unstructured: scratch-E", s, accuracy=accuracy(net),
                            train_steps=steps, **u_info))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="scratch-vs-finetune",
    title="Training the pruned network from scratch vs fine-tuning it (Liu et al. 2019; SmallCNN, digits)",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy", "train_steps")))
