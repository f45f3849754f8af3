"""Pruning on initialised vs pre-trained weights, at an equal training budget.

**Question.** Should we choose the mask on the randomly initialised network and train only
the sparse network (pruning before training, PBT), or train first and prune the trained
weights (pruning after training, PAT)?

**The survey's framing** (Cheng et al. 2024, "initialized vs. pre-trained weights"): pruning
pre-trained weights generally reaches higher accuracy at the same sparsity, because the
trained weights carry information a score at initialisation cannot see; pruning at
initialisation saves the cost of training a dense network. Frankle et al. (2021, "Pruning
neural networks at initialization: why are we missing the mark?") found that the
at-initialisation methods mostly choose *layer-wise densities*: shuffling their masks within
each layer does not hurt.

**What is measured.** The digits SmallCNN of the zoo recipe ``cnn-digits`` (16-32-64 with
BatchNorm), initialised from ``seed`` exactly as the recipe does it (so the pre-trained
network of that seed grew from the same weights), pruned to each sparsity of
:data:`GRID` and 0.95 (the fraction of conv and linear weights removed). Every setting gets
the same number ``B`` of training steps (``budget``), with the recipe's optimizer and
learning rate (Adam, 3e-3), and each training phase follows its own cosine decay to zero:

* ``at init: SNIP`` -- Lee et al. (2019): the global mask of the largest
  ``|g * w|`` on 128 training examples (two loader batches), then ``B`` steps of sparse
  training;
* ``at init: random ERK`` -- a random mask with Erdos-Renyi-kernel layer densities
  (:func:`prunekit.methods.prune_random`), then ``B`` steps;
* ``after training: magnitude`` -- ``B/2`` dense steps, global magnitude pruning, ``B/2``
  steps of fine-tuning (the fine-tuning restarts the cosine schedule at the recipe's rate,
  i.e. learning-rate rewinding, Renda et al. 2020);
* ``after training (2x budget)`` (a reference outside the equal-budget comparison) -- the
  recipe's fully pre-trained network of the same seed (:func:`pretrained`, 15 epochs = 330
  steps), globally magnitude-pruned and fine-tuned the same way for ``2B - 330`` steps, so
  that it used twice the budget (with the default ``B = 220``: 330 + 110, the same ``B/2``
  fine-tuning steps as the equal-budget magnitude setting).

The ``train_steps`` metric is counted by a training callback (one per optimizer step), so
the budget of each row is measured, not assumed; the reference adds the recipe's 330
pre-training steps. Rows also carry ``layer_density`` (kept fraction per layer), not
summarised.

**Toy-scale simplifications.** One small CNN on 8x8 digits; ``B`` = 10 epochs instead of
the papers' full schedules; SNIP scores one 128-example sample, as Lee et al. use one
mini-batch.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit import models, train, zoo
from prunekit.methods import prune_random

from .. import runner
from .common import GRID, MODEL, accuracy, digits_loaders, pretrained, row

__all__ = ["CONFIG", "EXPERIMENT", "QUICK", "SETTINGS", "SIDES", "SIDE_OF", "StepCounter",
           "fresh", "layer_density", "mask_at_init", "train_counted", "trial"]

SIDES = ("initialized", "pre-trained")
#: The settings, in table order.
SETTINGS = ("at init: SNIP", "at init: random ERK", "after training: magnitude",
            "after training (2x budget)")
SIDE_OF = {"at init: SNIP": "initialized", "at init: random ERK": "initialized",
           "after training: magnitude": "pre-trained"}   # the 2x budget row is a reference

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": [*GRID, 0.95],
    "budget": 220,            # B: training steps of every setting (10 epochs of 22 batches)
    "snip_batches": 2,        # SNIP's sample: 2 x 64 training examples
    "reference": True,        # also the fully pre-trained network, pruned + B/2 steps
}
QUICK: dict[str, Any] = {"budget": 8, "reference": False, "sparsities": list(GRID)}

_RECIPE = zoo.RECIPES[MODEL]


class StepCounter:
    """A training callback that counts optimizer steps."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, info: train.StepInfo) -> None:
        self.steps += 1


def fresh(seed: int) -> nn.Module:
    """The recipe's SmallCNN initialised from ``seed`` as the zoo recipe initialises it."""
    train.set_seed(seed)
    return models.SmallCNN(**_RECIPE["model_kwargs"])


def train_counted(net: nn.Module, steps: int, seed: int) -> int:
    """Train ``net`` for ``steps`` steps with the recipe's optimizer and learning rate on a
    cosine decay over these steps (masks stay fixed); returns the steps a callback counted."""
    rec = _RECIPE["recipe"]
    counter = StepCounter()
    train.train(net, digits_loaders()[0], steps=steps, lr=rec["lr"], optimizer=rec["optimizer"],
                weight_decay=rec["weight_decay"], seed=seed, lr_schedule="cosine",
                progress=False, callback=counter)
    return counter.steps


def mask_at_init(net: nn.Module, method: str, sparsity: float, batches: list, seed: int) -> dict:
    """Prune the initialised ``net`` in place with ``"snip"`` or ``"random ERK"``; the masks."""
    if method == "snip":
        return pk.prune(net, sparsity, "snip", data=batches)
    if method == "random ERK":
        return prune_random(net, 1.0 - sparsity, seed=seed)
    raise ValueError(f"method must be 'snip' or 'random ERK', got {method!r}")


def layer_density(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """The kept fraction of every masked parameter."""
    return {n: round(float(m.float().mean()), 4) for n, m in masks.items()}


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: every setting at every sparsity (see the module docstring)."""
    budget = int(cfg["budget"])
    half = budget // 2
    loader = digits_loaders()[0]
    init = fresh(seed)
    train.set_seed(seed, loader)
    batches = list(itertools.islice(loader, cfg["snip_batches"]))
    dense = copy.deepcopy(init)
    dense_steps = train_counted(dense, half, seed)
    dense_acc = accuracy(dense)
    recipe_steps = _RECIPE["recipe"]["epochs"] * len(loader)
    if cfg["reference"] and 2 * budget <= recipe_steps:
        raise ValueError(f"reference: 2 x budget ({2 * budget}) must exceed the recipe's "
                         f"{recipe_steps} pre-training steps")
    rows = []
    for s in cfg["sparsities"]:
        for setting, method in (("at init: SNIP", "snip"), ("at init: random ERK", "random ERK")):
            net = copy.deepcopy(init)
            masks = mask_at_init(net, method, s, batches, seed)
            steps = train_counted(net, budget, seed)
            rows.append(row(setting, s, accuracy=accuracy(net), train_steps=steps,
                            layer_density=layer_density(masks)))
        net = copy.deepcopy(dense)
        masks = pk.prune(net, s, "magnitude")
        steps = dense_steps + train_counted(net, budget - half, seed)
        rows.append(row("after training: magnitude", s, accuracy=accuracy(net), train_steps=steps,
                        layer_density=layer_density(masks), dense_accuracy=dense_acc))
        if cfg["reference"]:
            net = pretrained(seed)
            masks = pk.prune(net, s, "magnitude")
            steps = recipe_steps + train_counted(net, 2 * budget - recipe_steps, seed)
            rows.append(row("after training (2x budget)", s, accuracy=accuracy(net),
                            train_steps=steps, layer_density=layer_density(masks)))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="init-vs-pretrained",
    title="Pruning initialised vs pre-trained weights at an equal training budget (SmallCNN, digits)",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy", "train_steps")))
