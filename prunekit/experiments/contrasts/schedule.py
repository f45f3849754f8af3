"""One-shot vs. iterative pruning: reach the target sparsity in one cut, or in several?

**Question.** With the same fine-tuning budget, does it pay to approach a target sparsity in
several prune -> fine-tune rounds instead of one cut followed by fine-tuning?

**Survey's framing** (Cheng, Zhang & Shi, "A Survey on Deep Neural Network Pruning", arXiv
2308.06767, the one-shot/iterative pair). One-shot methods prune to the target in a single
step (one-shot magnitude, SNIP, SparseGPT, Wanda); iterative methods alternate pruning and
(re)training with a growing sparsity (Han et al. 2015, "Learning both weights and connections";
Frankle & Carbin 2019, iterative magnitude pruning for lottery tickets; Zhu & Gupta 2018, "To
prune, or not to prune", gradual pruning on a cubic schedule). The survey's reading: iterative
pruning is usually more accurate, above all at high sparsity, but costs more compute (IMP
retrains the network once per round); one-shot is enough at moderate sparsity and is the
choice when retraining is too expensive.

**What is measured.** Per seed, the zoo's digits CNN trained from that seed
(:func:`.common.pretrained`), then for each sparsity of :data:`GRID` plus 0.95 and 0.98:

* ``one-shot``: global magnitude pruning to the target, then ``finetune_steps`` (T) steps;
* ``iterative (k rounds)``: k rounds of global magnitude pruning on the geometric schedule of
  :func:`prunekit.schedules.iterative` (each round removes the same fraction of the weights
  that remain; the last round lands exactly on the target), each followed by T/k steps --
  IMP without rewinding, the surviving weights keep their trained values, as in Han et al.;
* ``gradual (AGP)``: :class:`prunekit.methods.GradualPruner`, the cubic schedule of Zhu & Gupta
  from 0 to the target over the first ``agp_end`` fraction of the T steps, masks updated
  every ``agp_frequency`` steps, the rest of the T steps recovering.

The budget is made equal by counting optimiser steps: every setting gets exactly T Adam steps
(lr 1e-3, batch 64) after pruning starts, so "iterative costs more" shows up only as the number
of mask updates (a metric), not as more training. That is the toy-scale simplification: the
papers' iterative runs retrain far longer than the one-shot ones; here the question is what
the *same* training buys when it is spread over several cuts. The same approach, on an MLP and
one sparsity, is chapter 3's :func:`prunekit.experiments.when.after_oneshot_vs_imp`.

Metrics per row: ``accuracy`` (test, after the T steps), ``final_sparsity`` (measured fraction
of pruned weights in the conv and linear layers; equals the target), ``mask_updates`` (how
many times the mask was recomputed: 1 for one-shot), ``dense_accuracy`` (the seed's network
before pruning).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from torch import nn

import prunekit as pk
from prunekit import train
from prunekit.methods import GradualPruner
from prunekit.schedules import iterative

from .. import runner
from .common import GRID, accuracy, digits_loaders, pretrained, row

__all__ = ["CONFIG", "EXPERIMENT", "QUICK", "SIDES", "SIDE_OF", "gradual", "iterative_prune", "one_shot",
           "pruned_fraction", "round_steps", "trial"]

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": [*GRID, 0.95, 0.98],
    "finetune_steps": 150,     # T: every setting trains exactly this many steps
    "rounds": [3, 5],          # iterative settings
    "agp": True,               # also the gradual (AGP) setting
    "agp_end": 0.5,            # the cubic schedule ends at this fraction of T
    "agp_frequency": 10,       # steps between mask updates (Zhu & Gupta's Δt)
    "lr": 1e-3,
}
QUICK: dict[str, Any] = {"sparsities": list(GRID), "finetune_steps": 6, "rounds": [3], "agp_frequency": 1}

SIDES = ("one-shot", "iterative")

Callback = Callable[[train.StepInfo], None] | None


def _settings(cfg: dict[str, Any]) -> list[str]:
    out = ["one-shot"] + [f"iterative ({k} rounds)" for k in cfg["rounds"]]
    return out + (["gradual (AGP)"] if cfg["agp"] else [])


SIDE_OF: dict[str, str] = {s: ("one-shot" if s == "one-shot" else "iterative")
                           for s in _settings(CONFIG)}


def _tune(model: nn.Module, steps: int, seed: int, lr: float, callback: Callback = None) -> None:
    if steps > 0:
        train.fine_tune(model, digits_loaders()[0], steps=steps, lr=lr, seed=seed, callback=callback)


def round_steps(total: int, rounds: int) -> list[int]:
    """``total`` steps split over ``rounds`` rounds as evenly as possible (earlier rounds get
    the remainder), so that they sum to ``total`` exactly."""
    return [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]


def pruned_fraction(model: nn.Module) -> float:
    """The fraction of masked weights over the pruned parameters (conv and linear weights)."""
    return float(pk.masks.sparsity_of(pk.get_masks(model)))


def one_shot(model: nn.Module, sparsity: float, steps: int, seed: int, lr: float = 1e-3,
             callback: Callback = None) -> int:
    """Global magnitude pruning to ``sparsity``, then ``steps`` fine-tuning steps; returns the
    number of mask updates (1)."""
    pk.prune(model, sparsity, "magnitude")
    _tune(model, steps, seed, lr, callback)
    return 1


def iterative_prune(model: nn.Module, sparsity: float, rounds: int, steps: int, seed: int,
                    lr: float = 1e-3, callback: Callback = None) -> int:
    """``rounds`` rounds of global magnitude pruning to the cumulative sparsities of
    :func:`prunekit.schedules.iterative` (the same fraction of the remaining weights each
    round), each followed by its share of ``steps`` (:func:`round_steps`); returns ``rounds``."""
    for k, (s_k, n_k) in enumerate(zip(iterative(sparsity, rounds), round_steps(steps, rounds))):
        pk.prune(model, s_k, "magnitude")
        _tune(model, n_k, seed + 1000 * k, lr, callback)   # fresh batches each round
    return rounds


def gradual(model: nn.Module, sparsity: float, steps: int, seed: int, *, end: float = 0.5,
            frequency: int = 10, lr: float = 1e-3, callback: Callback = None) -> int:
    """AGP (Zhu & Gupta 2018) inside ``steps`` steps: global magnitude masks updated every
    ``frequency`` steps on the cubic schedule from 0 at step 0 to ``sparsity`` at step
    ``round(end * steps)``, training on to ``steps``; returns the number of mask updates."""
    end_step = max(1, round(end * steps))
    pruner = GradualPruner(model, final_sparsity=sparsity, begin_step=0, end_step=end_step,
                           frequency=min(frequency, end_step))

    def both(info: train.StepInfo) -> None:
        pruner(info)
        if callback is not None:
            callback(info)

    _tune(model, steps, seed, lr, both)
    if pruner.sparsity < sparsity:  # only when steps < end_step; never with end <= 1
        pruner.update(end_step)
    return len(pruner.history)


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: every setting at every sparsity, from this seed's pretrained network."""
    dense = pretrained(seed)
    dense_acc = accuracy(dense)
    steps, lr = cfg["finetune_steps"], cfg["lr"]
    rows = []
    for s in cfg["sparsities"]:
        for setting in _settings(cfg):
            model = copy.deepcopy(dense)
            train.set_seed(seed)
            if setting == "one-shot":
                updates = one_shot(model, s, steps, seed, lr)
            elif setting == "gradual (AGP)":
                updates = gradual(model, s, steps, seed, end=cfg["agp_end"], frequency=cfg["agp_frequency"], lr=lr)
            else:
                k = int(setting.split("(")[1].split()[0])
                updates = iterative_prune(model, s, k, steps, seed, lr)
            rows.append(row(setting, s, accuracy=accuracy(model), final_sparsity=round(pruned_fraction(model), 6),
                            mask_updates=updates, dense_accuracy=dense_acc))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="oneshot-vs-iterative",
    title="One-shot vs. iterative magnitude pruning of the digits CNN, same fine-tuning steps",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy", "final_sparsity", "mask_updates", "dense_accuracy")))
