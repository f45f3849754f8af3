"""Unstructured vs structured pruning at the same parameter count: accuracy against latency.

**Question.** Remove the same number of weights from the same trained network, once as
individual weights and once as whole channels: what does each buy? Unstructured pruning keeps
the weights that matter wherever they are; structured pruning removes whole filters, so the
network that is left is a smaller *dense* network.

**The survey's framing** (Cheng, Zhang & Shi 2024, "A Survey on Deep Neural Network Pruning",
"specific vs universal speedup"): at the same sparsity unstructured pruning keeps more
accuracy, but its speedup needs sparse kernels or special hardware ("specific" speedup);
structured pruning loses more accuracy but runs faster on any hardware ("universal" speedup).

**Methods.**

* *structured*: filter pruning with the L1-norm criterion of Li, Kadav, Durdanovic, Samet &
  Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017 (PFEC): in each pruned layer the
  filters (output channels) with the smallest sum of absolute kernel weights go, with their
  BatchNorm entries and the matching input channels of the next layer; the three convolutions
  and the hidden Linear (whose neurons are its "filters", scored the same way) lose channels;
  the 10 outputs stay. The masked model is rebuilt as a smaller network with
  :func:`prunekit.compact`, which checks that it computes what the masked model computes.
* *unstructured*: global magnitude pruning (Han, Pool, Tran & Dally, NeurIPS 2015: the
  smallest ``|w|`` over all prunable tensors go), removing **exactly as many weights as the
  structured model removed**.

**Budget made equal.** The prunable parameters are the weights of the Conv and Linear layers
(27,920 of the CNN's 28,218 parameters). For a target sparsity ``s`` of the grid, the kept
channel counts of the four pruned layers are chosen so that the compacted model's prunable
weights come as close to ``(1 - s)`` of the dense count as whole channels allow
(:func:`channel_widths`: the uniform keep fraction that meets the target with fractional
channels, then the best combination of the neighbouring whole channel counts); the achieved
sparsity is reported (``achieved_sparsity``) and the unstructured side prunes exactly that many
weights. Both sides are then fine-tuned for the same ``finetune_steps`` Adam steps on the same
batches (:func:`prunekit.experiments.contrasts.common.fine_tune`).

**Metrics** per setting and sparsity: ``accuracy`` (after fine-tuning), ``accuracy_pruned``
(before), ``achieved_sparsity``, ``params`` (non-zero prunable weights: equal on both sides by
construction), ``macs`` (the multiply-accumulates the physical model executes for one image:
the compacted network's for structured, the *dense* count for unstructured, since dense
kernels multiply the zeros too), ``macs_effective`` (the MACs that involve a non-zero weight:
what an ideal sparse kernel would execute), ``latency_ms`` (median time of a forward pass of a
fixed batch of ``latency_batch`` test images on one thread, by :func:`prunekit.metrics.compare_latency`
in ``latency_rounds`` interleaved rounds, the median over the rounds) and ``speedup`` (the
dense network's latency divided by the model's in the same round, the median over the
rounds). The two timing metrics are noisy: they are not
part of a trial's identity.

**Toy-scale simplifications.** PFEC chooses each layer's ratio from a per-layer sensitivity
analysis and leaves sensitive layers alone; here every pruned layer keeps about the same
fraction of its channels (the fraction is fixed by the parameter budget, not by accuracy).
The network is tiny (its forward pass takes a fraction of a millisecond), so fixed per-layer
overheads weigh more in the latency than on a large network.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from typing import Any, Mapping, Sequence

import torch
from torch import nn

import prunekit as pk
from prunekit import metrics, train

from .. import runner
from .common import GRID, accuracy, digits_loaders, fine_tune, pretrained, row

__all__ = ["CONFIG", "QUICK", "SIDES", "SIDE_OF", "EXPERIMENT", "trial", "channel_widths",
           "chain_params", "prunable", "structured", "unstructured"]

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": [*GRID, 0.95],
    "finetune_steps": 300,
    # layers that lose output channels (the last Linear keeps its 10 outputs)
    "pruned": ["features.0.weight", "features.4.weight", "features.8.weight",
               "classifier.2.weight"],
    "latency_batch": 256,
    "latency_rounds": 7,
    "latency_min_run_time": 0.04,
}

QUICK: dict[str, Any] = {"sparsities": list(GRID), "finetune_steps": 5, "latency_batch": 64,
                         "latency_rounds": 1, "latency_min_run_time": 0.01}

SIDES = ("unstructured", "structured")
SIDE_OF = {"unstructured": "unstructured", "structured": "structured"}


# ----------------------------------------------------------------------------- budget
def prunable(model: nn.Module) -> dict[str, torch.Size]:
    """``{name: shape}`` of the prunable weights (Conv and Linear), in the model's order."""
    return {n: s.shape for n, s in pk.score(model, "magnitude").items()}


def chain_params(shapes: Mapping[str, Sequence[int]], widths: Mapping[str, int]) -> int:
    """Prunable weights of a *chain* of layers (each layer's input channels are the previous
    layer's outputs, as in SmallCNN) after layer ``name`` keeps ``widths[name]`` outputs
    (layers not in ``widths`` keep all)."""
    total, prev = 0, None
    for name, shape in shapes.items():
        out = widths.get(name, shape[0])
        inp = shape[1] if prev is None else prev
        total += out * inp * math.prod(shape[2:])
        prev = out
    return total


def channel_widths(shapes: Mapping[str, Sequence[int]], pruned: Sequence[str],
                   sparsity: float) -> dict[str, int]:
    """Kept output channels of each layer in ``pruned`` whose chain (:func:`chain_params`)
    comes closest to ``(1 - sparsity)`` of the dense prunable weights.

    First the uniform keep fraction ``k`` that meets the target with fractional channels
    (bisection), then every combination of whole channel counts within one channel of
    ``k * C`` (at least 1, at most ``C``) is tried; the closest count wins, ties going to the
    most uniform combination (then to the first found)."""
    shapes = {n: tuple(s) for n, s in shapes.items()}
    dense = chain_params(shapes, {})
    target = (1.0 - sparsity) * dense

    def frac(k: float) -> float:
        total, prev = 0.0, None
        for name, shape in shapes.items():
            out = k * shape[0] if name in pruned else shape[0]
            inp = shape[1] if prev is None else prev
            total += out * inp * math.prod(shape[2:])
            prev = out
        return total

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(mid) < target else (lo, mid)
    k = (lo + hi) / 2
    options = []
    for name in pruned:
        c = shapes[name][0]
        base = k * c
        options.append(sorted({min(c, max(1, v)) for v in range(math.floor(base) - 1, math.ceil(base) + 2)}))
    best, best_key = None, None
    for combo in itertools.product(*options):
        widths = dict(zip(pruned, combo))
        gap = abs(chain_params(shapes, widths) - target)
        spread = sum((w / shapes[n][0] - k) ** 2 for n, w in widths.items())
        key = (round(gap, 9), spread)
        if best_key is None or key < best_key:
            best, best_key = widths, key
    return best


# ----------------------------------------------------------------------------- the two sides
def structured(model: nn.Module, widths: Mapping[str, int], example: torch.Tensor) -> nn.Module:
    """A compacted copy of ``model`` in which layer ``name`` keeps its ``widths[name]``
    filters of largest L1 norm (Li et al. 2017); the input is untouched."""
    m = copy.deepcopy(model)
    names = list(widths)
    scores = pk.score(m, "l1_filter", include=names)
    shapes = prunable(m)
    sparsity = {n: (shapes[n][0] - widths[n]) / shapes[n][0] for n in names}
    masks = pk.make_masks(scores, sparsity, granularity="channel", scope="layer", model=m)
    pk.apply_masks(m, masks)
    return pk.compact(m, example)     # raises if it differs from the masked model


def unstructured(model: nn.Module, remove: int) -> nn.Module:
    """A copy of ``model`` with exactly ``remove`` prunable weights masked by global
    magnitude (Han et al. 2015); masks stay applied."""
    m = copy.deepcopy(model)
    total = sum(math.prod(s) for s in prunable(m).values())
    pk.prune(m, remove / total, "magnitude", scope="global")
    return m


def _prunable_nonzeros(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(w)) for w in _weights(model).values())


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Effective Conv/Linear weights (mask applied)."""
    return {n: m.weight.detach() for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


# ----------------------------------------------------------------------------- trial
def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: both sides at every sparsity of ``cfg["sparsities"]`` (see the module docstring)."""
    train.set_seed(seed)
    dense = pretrained(seed)
    test = digits_loaders()[1]
    batch = torch.cat([x for x, _ in test])[: cfg["latency_batch"]]
    one = batch[:1]
    shapes = prunable(dense)
    n_dense = sum(math.prod(s) for s in shapes.values())
    dense_acc = accuracy(dense)
    dense_macs = pk.count_macs(dense, one)[0]

    models: dict[str, nn.Module] = {"dense": dense}
    rows: list[dict[str, Any]] = []
    for s in cfg["sparsities"]:
        widths = channel_widths(shapes, cfg["pruned"], s)
        small = structured(dense, widths, one)
        kept = _prunable_nonzeros(small)
        assert kept == chain_params(shapes, widths), "compact kept another shape than planned"
        sparse = unstructured(dense, n_dense - kept)
        achieved = round(1 - kept / n_dense, 6)
        for setting, m in (("unstructured", sparse), ("structured", small)):
            before = accuracy(m)
            fine_tune(m, cfg["finetune_steps"], seed)
            if setting == "unstructured":
                pk.remove_masks(m)       # a plain dense model with zeros, as it would be deployed
            summ = pk.summary(m, one)
            rows.append(row(setting, s, accuracy=accuracy(m), accuracy_pruned=before,
                            achieved_sparsity=achieved, params=_prunable_nonzeros(m),
                            macs=int(summ.macs), macs_effective=int(summ.effective_macs),
                            latency_ms=0.0, speedup=0.0,
                            widths=({n.rsplit(".", 1)[0]: w for n, w in widths.items()}
                                    if setting == "structured" else None),
                            dense_accuracy=dense_acc, dense_macs=int(dense_macs)))
            models[f"{setting} {s}"] = m
    for m in models.values():
        m.eval()
    # interleaved rounds: every model once per round; a burst of load from another process
    # slows one round, so each model's latency and its ratio to the dense network's latency
    # in the same round are summarised by their median over the rounds
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(cfg["latency_rounds"]):
        got = metrics.compare_latency(models, batch, rounds=1, threads=1,
                                      min_run_time=cfg["latency_min_run_time"])
        for k, t in got.items():
            times[k].append(t.median)
    for r in rows:
        mine = times[f"{r['setting']} {r['sparsity']}"]
        r["latency_ms"] = round(statistics.median(mine) * 1e3, 5)
        r["speedup"] = round(statistics.median(d / t for d, t in zip(times["dense"], mine)), 4)
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="unstructured-vs-structured",
    title="Unstructured vs structured: global magnitude vs L1 filter pruning at the same parameter count",
    trial=trial,
    config=CONFIG,
    quick=QUICK,
    keys=("setting", "sparsity"),
    metrics=("accuracy", "accuracy_pruned", "achieved_sparsity", "params", "macs",
             "macs_effective", "latency_ms", "speedup"),
    noisy=("latency_ms", "speedup"),
))
