"""Data-free vs. data-driven pruning criteria: does looking at data pick better weights?

**Question.** When a trained network is pruned, do importance scores computed from training
data choose better weights to remove than scores computed from the weights alone?

**Survey's framing** (Cheng, Zhang & Shi, "A Survey on Deep Neural Network Pruning", arXiv
2308.06767, the data-free/data-driven pair). Data-free criteria need no data: weight magnitude
(Han et al. 2015), filter norms (Li et al. 2017), SynFlow's synaptic flow on an all-ones input
(Tanaka et al. 2020). Data-driven criteria score on training or calibration batches:
connection sensitivity SNIP (Lee et al. 2019), first-order Taylor (Molchanov et al. 2019),
Optimal Brain Damage's second-order saliency (LeCun et al. 1990). The survey's reading: most
methods are data-driven and they usually do better, because importance depends on the task;
data-free criteria matter when data are private or unavailable (post-training, at
initialisation), where SynFlow stays competitive.

**What is measured.** Per seed, the zoo's digits CNN trained from that seed
(:func:`.common.pretrained`); for each sparsity of :data:`GRID` plus 0.95, unstructured
*global* pruning of the conv and linear weights with

* data-free: ``magnitude`` (|w|) and ``synflow`` (Tanaka et al.'s Algorithm 1, iterative
  scoring and masking on the exponential schedule, :func:`prunekit.methods.prune_synflow`,
  with 25 rounds instead of the paper's 100 to keep the run short; the input's shape is the
  only thing it takes from the data);
* data-driven: ``snip`` (|g·w|), ``taylor`` ((g·w)² summed over batches) and ``obd``
  (½·h·w², diagonal Fisher as the Hessian), all scored on the *same* ``score_batches``
  training batches of 64 images, drawn by the seed.

Metrics: ``accuracy_oneshot`` (test accuracy right after pruning: where the criterion alone
decides) and ``accuracy`` (after the same ``finetune_steps`` Adam steps for every criterion),
plus ``dense_accuracy``; each row also carries ``layer_sparsity`` (the masked fraction of
each pruned tensor, not summarised), which shows where a global criterion takes its weights
from. A channel-level variant prunes the same fraction of output channels
in every convolution (the classifier stays dense) at the sparsities of :data:`GRID`, with the
data-free L1 filter norm (Li et al. 2017) and BatchNorm scale |γ| (Liu et al. 2017, Network
Slimming) against the data-driven first-order Taylor channel score (Molchanov et al. 2019)
and APoZ (Hu et al. 2016), scored on the same batches. Only the conv filters are masked:
the BatchNorm after a pruned filter still adds its shift, a per-channel constant that the next
layer sees as a bias (a network compacted for speed would fold it there). Toy-scale simplifications: SNIP's paper scores one batch at
initialisation; here every data-driven criterion gets the same few batches and scores the
*trained* network (post-training pruning); SynFlow, too, was designed for initialisation.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable

import torch
from torch import nn

import prunekit as pk
from prunekit import train
from prunekit.methods import prune_synflow

from .. import runner
from .common import GRID, accuracy, digits_loaders, fine_tune, pretrained, row

__all__ = ["CONFIG", "DATA_DRIVEN", "DATA_FREE", "EXPERIMENT", "QUICK", "SIDES", "SIDE_OF", "layer_sparsity", "prune_with",
           "score_batches", "trial"]

#: The unstructured criteria of each side (names of :func:`prunekit.criteria.available`).
DATA_FREE = ("magnitude", "synflow")
DATA_DRIVEN = ("snip", "taylor", "obd")
#: Channel-level settings: label -> (criterion, side). Per conv layer, the same fraction of
#: channels; the classifier stays dense.
CHANNEL: dict[str, tuple[str, str]] = {
    "channel: L1": ("l1_filter", "data-free"),
    "channel: BN scale": ("bn_scale", "data-free"),
    "channel: Taylor": ("taylor_channel", "data-driven"),
    "channel: APoZ": ("apoz", "data-driven"),
}
#: What channel pruning leaves alone: the classifier (its output units are the classes), so
#: the pruned parameters are the three convolutions' weights.
CHANNEL_EXCLUDE = "classifier.*"

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": [*GRID, 0.95],
    "criteria": [*DATA_FREE, *DATA_DRIVEN],
    "channel_sparsities": list(GRID),
    "channel_criteria": list(CHANNEL),
    "score_batches": 4,          # training batches of 64 for the data-driven scores
    "synflow_iterations": 25,    # Tanaka et al. use 100 rounds; 25 keep the toy run short
    "finetune_steps": 80,
}
QUICK: dict[str, Any] = {"sparsities": list(GRID), "criteria": ["magnitude", "synflow", "snip", "taylor"],
                         "channel_criteria": ["channel: L1", "channel: Taylor"], "channel_sparsities": [0.5],
                         "synflow_iterations": 3, "finetune_steps": 3, "score_batches": 1}

SIDES = ("data-free", "data-driven")
SIDE_OF: dict[str, str] = {**{c: "data-free" for c in DATA_FREE}, **{c: "data-driven" for c in DATA_DRIVEN},
                           **{label: side for label, (_, side) in CHANNEL.items()}}


def score_batches(seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` training batches (64 images) in the order seeded by ``seed``: the one set
    of batches every data-driven criterion of a trial is scored on."""
    loader = digits_loaders()[0]
    train.set_seed(seed, loader)
    return list(itertools.islice(iter(loader), n))


def prune_with(model: nn.Module, setting: str, sparsity: float, data: Iterable, *,
               example_inputs: torch.Tensor, synflow_iterations: int = 100) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``sparsity`` with the criterion of ``setting``; returns the masks.

    An unstructured setting (a criterion name) prunes the conv and linear weights globally; a
    ``"channel: ..."`` setting masks the same fraction of output channels (whole filters) in
    every conv layer (the classifier, :data:`CHANNEL_EXCLUDE`, stays dense). A data-free criterion is never
    handed ``data`` (``synflow`` gets only ``example_inputs``, for the input's shape, and runs
    :func:`prunekit.methods.prune_synflow`); a data-driven one is scored on ``data``."""
    if setting not in SIDE_OF:
        raise ValueError(f"setting must be one of {sorted(SIDE_OF)}, got {setting!r}")
    given = data if SIDE_OF[setting] == "data-driven" else None
    if setting in CHANNEL:
        return pk.prune(model, sparsity, CHANNEL[setting][0], "channel", "layer", data=given,
                        exclude=CHANNEL_EXCLUDE)
    if setting == "synflow":
        return prune_synflow(model, sparsity, synflow_iterations, example_inputs=example_inputs)
    return pk.prune(model, sparsity, setting, data=given)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """The fraction of each pruned tensor's entries that are masked, by parameter name."""
    return {n: round(1.0 - float(m.float().mean()), 6) for n, m in pk.get_masks(model).items()}


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: every setting (unstructured criteria, then channel criteria) at its sparsities,
    from this seed's pretrained network."""
    dense = pretrained(seed)
    dense_acc = accuracy(dense)
    batches = score_batches(seed, cfg["score_batches"])
    shape_only = torch.zeros_like(batches[0][0][:1])   # SynFlow needs the input's shape, not its values
    rows = []
    runs = [(s, c) for s in cfg["sparsities"] for c in cfg["criteria"]]
    runs += [(s, c) for s in cfg["channel_sparsities"] for c in cfg["channel_criteria"]]
    for s, setting in runs:
        model = copy.deepcopy(dense)
        train.set_seed(seed)
        prune_with(model, setting, s, batches, example_inputs=shape_only,
                   synflow_iterations=cfg["synflow_iterations"])
        one = accuracy(model)
        fine_tune(model, cfg["finetune_steps"], seed)
        rows.append(row(setting, s, accuracy=accuracy(model), accuracy_oneshot=one, dense_accuracy=dense_acc,
                        layer_sparsity=layer_sparsity(model)))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="datafree-vs-datadriven",
    title="Data-free vs. data-driven pruning criteria on the digits CNN, one-shot and after fine-tuning",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy", "accuracy_oneshot", "dense_accuracy")))
