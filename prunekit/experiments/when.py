"""The experiments behind the book's chapter "When to prune", seeded and cached.

Everything runs on scikit-learn's 8x8 digits (:func:`prunekit.data.digits`) with the book's
small models, on a CPU, in about a minute:

* ``collapse`` -- before training (PBT): per-layer kept weights of a 5-layer MLP at
  initialisation for magnitude, SNIP, GraSP, random ERK, one-shot and iterative SynFlow and
  FORCE over a sweep of compressions (Tanaka et al. 2020, fig. 1), the test accuracy of
  each mask after training, and the sanity checks of Frankle et al. (2021): each mask
  shuffled within its layers, re-initialised, and inverted;
* ``during`` -- during training (PDT): dense, static random ERK, gradual magnitude pruning on
  the AGP schedule (Zhu & Gupta 2018), SET and RigL (Mocanu et al. 2018; Evci et al. 2020) at
  one density and one number of steps; ``soft_filter`` -- soft filter pruning (He et al.
  2018) of the book's CNN against hard channel pruning at the same rate and epochs;
  ``movement`` -- gradual pruning of the zoo's MLP during fine-tuning, movement (Sanh et al.
  2020, the library's one-step score) against magnitude on the same AGP schedule;
* ``after`` -- after training (PAT): one-shot magnitude + fine-tune against iterative
  magnitude pruning with the same fine-tuning steps; lottery tickets (rewind to init,
  Frankle & Carbin 2019) against the same masks with a fresh random initialisation;
* ``runtime`` -- dynamic pruning: FBS channel gating (Gao et al. 2019) against static channel
  pruning of the same convolutions, fine-tuned for the same steps;
* ``tokens`` -- EViT token pruning (Liang et al. 2022) in a TinyViT: MACs and accuracy per
  keep rate, as is and fine-tuned.

``python -m prunekit.experiments.when`` recomputes all of it and writes
``prunekit/experiments/results/when.json`` (the file the book loads); ``--quick`` runs a tiny
configuration (a smoke test, not the numbers of record). Each function takes the
configuration and returns plain JSON-able numbers, so a notebook can recompute one case
live and compare it with the cached value.
"""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import prunekit as pk
from prunekit import data, models, train, zoo
from prunekit.methods import (
    DynamicSparsity,
    GradualPruner,
    SoftFilterPruning,
    evit,
    evit_macs,
    executed_macs,
    gate_model,
    imp,
    prune_force,
    prune_random,
    prune_synflow,
)
from prunekit.methods.runtime.gating import saliency_l1
from prunekit.schedules import iterative

from . import cli, load_results
from .fusion import l1_channels

__all__ = [
    "CONFIG",
    "DURING",
    "QUICK",
    "RESULTS",
    "after_oneshot_vs_imp",
    "collapse",
    "collapse_masks",
    "collapse_model",
    "dense_mlp",
    "during",
    "during_extra",
    "fbs_gated",
    "load",
    "lottery",
    "main",
    "movement",
    "run",
    "runtime",
    "soft_filter",
    "static_channels",
    "tokens",
    "train_sparse",
]

RESULTS: Path = Path(__file__).resolve().parent / "results" / "when.json"

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2, 3, 4],
    "lr": 3e-3,
    # before training: a 5-layer MLP, biases initialised at zero (see collapse_masks)
    "collapse_hidden": [128, 128, 128, 128],
    "collapse_compressions": [round(10 ** (k / 4), 2) for k in range(15)],
    "collapse_methods": ["magnitude", "snip", "grasp", "random ERK", "SynFlow (one-shot)",
                         "iterative SNIP", "FORCE", "SynFlow (iterative)"],
    "collapse_trained": [10.0, 100.0, 1000.0],
    "sanity_compressions": [10.0, 31.62],
    "sanity_methods": ["snip", "grasp", "SynFlow (iterative)", "FORCE"],
    "synflow_iterations": 100,
    "force_iterations": 20,
    "data_batches": 4,
    # during training: the book's MLP 64-128-64-10
    "density": 0.05,
    "steps": 600,
    "agp": {"begin_step": 60, "end_step": 420, "frequency": 20},
    "dst": {"update_every": 20, "end_step": 450, "drop_fraction": 0.3},
    "sfp": {"sparsity": 0.5, "epochs": 8},    # soft filter pruning of SmallCNN
    "movement": {"sparsity": 0.9, "steps": 300, "begin_step": 0, "end_step": 200,
                 "frequency": 20, "batches": 4},
    # after training
    "pat_sparsity": 0.95,
    "pat_rounds": 3,
    "pat_finetune_steps": 300,
    "ticket_steps": 300,
    "ticket_levels": 7,            # sparsity 1 - 0.5**k, k = 1..levels
    # run time
    "gate_keep": 0.5,
    "gate_steps": 200,
    "gate_threshold": [0.75, 0.5],   # keep, threshold of the input-dependent gate
    "gate_lasso": 0.01,              # FBS's l1 penalty on the saliencies
    "vit": {"patch_size": 2, "depth": 4},   # 16 tokens of 2x2 pixels, 4 blocks
    "evit_keep": [1.0, 0.7, 0.5, 0.3],
    "evit_steps": 100,
}

QUICK: dict[str, Any] = {**CONFIG, "seeds": [0], "collapse_compressions": [1.0, 10.0, 100.0],
                         "sanity_methods": ["snip"],
                         "collapse_trained": [10.0], "synflow_iterations": 5,
                         "force_iterations": 3, "steps": 60,
                         "agp": {"begin_step": 10, "end_step": 40, "frequency": 10},
                         "dst": {"update_every": 10, "end_step": 45, "drop_fraction": 0.3},
                         "pat_finetune_steps": 30, "ticket_steps": 30, "ticket_levels": 2,
                         "gate_steps": 20, "evit_keep": [1.0, 0.5], "evit_steps": 10,
                         "sfp": {"sparsity": 0.5, "epochs": 2},
                         "movement": {"sparsity": 0.9, "steps": 30, "begin_step": 0,
                                      "end_step": 20, "frequency": 10, "batches": 2}}


# ----------------------------------------------------------------------------- before
def collapse_model(cfg: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The MLP of the layer-collapse experiment at initialisation, biases set to zero."""
    train.set_seed(seed)
    net = models.MLP(hidden=tuple(cfg["collapse_hidden"]))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return net


def collapse_masks(net: torch.nn.Module, method: str, compression: float, batches: list,
                   cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Prune ``net`` (in place) at initialisation to ``1 - 1/compression``; return its masks."""
    s = 1.0 - 1.0 / compression
    x1 = batches[0][0][:1]
    if s == 0.0:
        return {n: m for n, m in pk.prune(net, 0.0, "magnitude").items()}
    if method == "magnitude":
        return pk.prune(net, s, "magnitude")
    if method in ("snip", "grasp"):
        return pk.prune(net, s, method, data=batches)
    if method == "random ERK":
        return prune_random(net, 1.0 / compression, seed=0)
    if method == "SynFlow (one-shot)":
        return pk.prune(net, s, "synflow", example_inputs=x1)
    if method == "SynFlow (iterative)":
        return prune_synflow(net, s, iterations=cfg["synflow_iterations"], example_inputs=x1)
    if method in ("FORCE", "iterative SNIP"):
        return prune_force(net, batches, s, iterations=cfg["force_iterations"],
                           revive=method == "FORCE")
    raise ValueError(f"unknown method {method!r}")


def collapse(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Kept weights per layer vs compression, the largest compression before a layer is
    emptied, and test accuracy after training at ``collapse_trained`` compressions."""
    train_loader, test_loader = data.digits(flatten=True)
    batches = list(itertools.islice(train_loader, cfg["data_batches"]))
    m0 = collapse_model(cfg)
    layers = [n for n, _ in m0.named_parameters() if n.endswith("weight")]
    kept: dict[str, list[list[int]]] = {}
    runs = [(m, c) for m in cfg["collapse_methods"] for c in cfg["collapse_compressions"]]
    for method, c in tqdm(runs, desc="layer collapse", disable=not progress):
        net = copy.deepcopy(m0)
        masks = collapse_masks(net, method, c, batches, cfg)
        kept.setdefault(method, []).append([int(masks[n].sum()) for n in layers])
    max_comp = {}
    for method, rows in kept.items():
        alive = [c for c, row in zip(cfg["collapse_compressions"], rows) if min(row) > 0]
        first_dead = next((c for c, row in zip(cfg["collapse_compressions"], rows)
                           if min(row) == 0), None)
        max_comp[method] = max(c for c in alive if first_dead is None or c < first_dead)
    acc: dict[str, dict[str, list[float]]] = {}
    runs = [(m, c, s) for m in cfg["collapse_methods"] for c in cfg["collapse_trained"]
            for s in cfg["seeds"][:3]]
    for method, c, seed in tqdm(runs, desc="train PBT masks", disable=not progress):
        net = collapse_model(cfg, seed)
        collapse_masks(net, method, c, batches, cfg)
        train.train(net, train_loader, steps=cfg["steps"], lr=cfg["lr"], seed=seed,
                    lr_schedule="cosine", progress=False)
        acc.setdefault(method, {}).setdefault(str(c), []).append(
            train.evaluate(net, test_loader))
    sanity_acc: dict[str, dict[str, list[float]]] = {}
    runs = [(m, c, v, s) for m in cfg["sanity_methods"] for c in cfg["sanity_compressions"]
            for v in SANITY for s in cfg["seeds"][:3]]
    for method, c, variant, seed in tqdm(runs, desc="sanity checks", disable=not progress):
        net = sanity_model(method, variant, seed, batches, cfg, c)
        if net is None:
            continue
        train.train(net, train_loader, steps=cfg["steps"], lr=cfg["lr"], seed=seed,
                    lr_schedule="cosine", progress=False)
        sanity_acc.setdefault(method, {}).setdefault(str(c), {}).setdefault(
            variant, []).append(train.evaluate(net, test_loader))
    return {"layers": layers, "sizes": [p.numel() for n, p in m0.named_parameters()
                                        if n.endswith("weight")],
            "compressions": cfg["collapse_compressions"], "kept": kept,
            "max_compression": max_comp, "accuracy": acc, "sanity": sanity_acc}


SANITY = ["mask", "shuffled", "reinit", "inverted"]


def sanity_model(method: str, variant: str, seed: int, batches: list,
                 cfg: dict[str, Any], compression: float) -> torch.nn.Module | None:
    """The sanity checks of Frankle et al. (2021) at ``compression``: the seed's
    initial MLP with ``method``'s mask (``"mask"``), that mask shuffled within each layer
    (``"shuffled"``), the mask on another initialisation (``"reinit"``, seed + 1000), or the
    mask of the *lowest* scores (``"inverted"``; one-shot scores only, else ``None``)."""
    c = compression
    net = collapse_model(cfg, seed)
    if variant == "inverted":
        if method not in ("magnitude", "snip", "grasp"):
            return None
        kwargs = {} if method == "magnitude" else {"data": batches}
        scores = pk.score(net, method, **kwargs)
        pk.apply_masks(net, pk.make_masks({k: -v for k, v in scores.items()}, 1.0 - 1.0 / c))
        return net
    masks = collapse_masks(copy.deepcopy(net), method, c, batches, cfg)
    if variant == "shuffled":
        g = torch.Generator().manual_seed(seed)
        masks = {k: m.flatten()[torch.randperm(m.numel(), generator=g)].view_as(m)
                 for k, m in masks.items()}
    elif variant == "reinit":
        net = collapse_model(cfg, seed + 1000)
    elif variant != "mask":
        raise ValueError(f"unknown variant {variant!r}")
    pk.apply_masks(net, masks)
    return net


# ----------------------------------------------------------------------------- during
def train_sparse(method: str, seed: int, cfg: dict[str, Any], *,
                 record: str | None = None) -> dict[str, Any]:
    """Train the book's MLP for ``steps`` steps with ``method`` at density ``density``.

    ``method``: ``"dense"``, ``"static ERK"`` (a random ERK mask, fixed), ``"AGP"`` (global
    magnitude pruning on the cubic schedule, dense at first), ``"SET"`` or ``"RigL"`` (both from
    the same random ERK mask). Returns the test accuracy, the kept weights per layer at the end
    and, for SET/RigL, the kept counts after every update step; ``record`` names a layer whose
    mask is stored (as a list of bool rows) at every update step.
    """
    train_loader, test_loader = data.digits(flatten=True)
    train.set_seed(seed)
    net = models.MLP()
    density, steps = cfg["density"], cfg["steps"]
    callback, frames, counts = None, [], []
    if method == "static ERK":
        prune_random(net, density, seed=seed)
    elif method == "AGP":
        callback = GradualPruner(net, final_sparsity=1.0 - density, **cfg["agp"])
    elif method in ("SET", "RigL"):
        dst = DynamicSparsity(net, density, method=method.lower(), seed=seed, **cfg["dst"])

        def callback(info):
            if dst.update(info.step, info.optimizer):
                masks = pk.get_masks(net)
                counts.append([int(m.sum()) for m in masks.values()])
                if record is not None:
                    frames.append(masks[record].clone())
    elif method != "dense":
        raise ValueError(f"unknown method {method!r}")
    if record is not None and method in ("SET", "RigL"):
        frames.append(pk.get_masks(net)[record].clone())
    train.train(net, train_loader, steps=steps, lr=cfg["lr"], seed=seed, lr_schedule="cosine",
                progress=False, callback=callback)
    masks = pk.get_masks(net)
    out = {"accuracy": train.evaluate(net, test_loader),
           "kept": {n: int(m.sum()) for n, m in masks.items()}, "counts": counts}
    if record is not None:
        out["frames"] = frames
        out["model"] = net
    return out


DURING = ["dense", "static ERK", "AGP", "SET", "RigL"]


def during(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Test accuracy of every method of :data:`DURING` for every seed; RigL's kept counts."""
    acc: dict[str, list[float]] = {}
    kept: dict[str, dict[str, int]] = {}
    constant = True
    runs = [(m, s) for m in DURING for s in cfg["seeds"]]
    for method, seed in tqdm(runs, desc="sparse training", disable=not progress):
        r = train_sparse(method, seed, cfg)
        acc.setdefault(method, []).append(r["accuracy"])
        kept.setdefault(method, r["kept"])
        if r["counts"]:
            constant &= all(row == r["counts"][0] for row in r["counts"])
            constant &= r["counts"][0] == list(r["kept"].values())
    return {"accuracy": acc, "kept": kept, "dst_counts_constant": constant}


def soft_filter(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Soft filter pruning (He et al. 2018) of a SmallCNN trained from scratch on the digits,
    against hard channel pruning with the same rule, rate and training budget.

    Both train ``sfp["epochs"]`` epochs (Adam, cosine schedule). SFP zeroes the
    ``sfp["sparsity"]`` fraction of lowest-l2 filters of every conv after every epoch and lets
    them recover (BatchNorm statistics recomputed on the training set after each update), then
    :meth:`~prunekit.methods.SoftFilterPruning.finalize` masks them for good. Hard pruning masks
    the same number of lowest-l2 filters once, after the first epoch (when SFP first prunes),
    and trains on with them fixed at zero. Each network is then compacted
    (:func:`prunekit.compact`). Returns, per method, ``accuracy`` (compacted), ``macs`` and
    ``filters`` (kept per conv); for SFP also ``masked`` (after finalize, before compact) and
    ``history`` (filters zeroed per conv at each update)."""
    train_loader, test_loader = data.digits()
    x1 = next(iter(test_loader))[0][:1]
    rate, epochs = cfg["sfp"]["sparsity"], cfg["sfp"]["epochs"]
    out: dict[str, Any] = {}
    for method in ("SFP", "hard"):
        train.set_seed(seed)
        net = models.SmallCNN(1, 10, [16, 32, 64], 64)
        if method == "SFP":
            sfp = SoftFilterPruning(net, rate, steps_per_epoch=len(train_loader), bn_data=train_loader)
            callback = sfp
        else:
            sfp = SoftFilterPruning(net, rate)

            def callback(info, _sfp=sfp):
                if info.step == len(train_loader):
                    _sfp.finalize()          # hard masks on the l2 filter norms, once
        train.train(net, train_loader, epochs=epochs, lr=cfg["lr"], seed=seed, lr_schedule="cosine",
                    progress=False, callback=callback)
        r: dict[str, Any] = {}
        if method == "SFP":
            sfp.finalize()
            r["masked"] = train.evaluate(net, test_loader)
            r["history"] = [list(counts.values()) for _, counts in sfp.history]
        small = pk.compact(net, x1)
        r.update(accuracy=train.evaluate(small, test_loader), macs=pk.count_macs(small, x1)[0],
                 filters=[m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)])
        out[method] = r
    return out


def movement(seed: int, cfg: dict[str, Any]) -> dict[str, float]:
    """The zoo's trained MLP pruned during fine-tuning to ``movement["sparsity"]`` (global,
    unstructured) on the AGP schedule, with :class:`~prunekit.methods.GradualPruner` and the
    ``"movement"`` criterion (scored at every update on the first ``batches`` training batches:
    ``-sum_b g_b * w`` at the current weights, Sanh et al. 2020's score over one step) or
    ``"magnitude"``; the same steps, learning rate (1e-3) and data order. Returns the test
    accuracy of each, and of the dense model."""
    train_loader, test_loader = data.digits(flatten=True)
    mv = cfg["movement"]
    train.set_seed(seed)                # the scoring batches: the loader shuffles
    batches = list(itertools.islice(train_loader, mv["batches"]))
    out = {"dense": train.evaluate(zoo.load("mlp-digits"), test_loader)}
    for criterion in ("movement", "magnitude"):
        net = zoo.load("mlp-digits")
        extra = {"data": batches} if criterion == "movement" else {}
        pruner = GradualPruner(net, final_sparsity=mv["sparsity"], begin_step=mv["begin_step"],
                               end_step=mv["end_step"], frequency=mv["frequency"],
                               criterion=criterion, **extra)
        train.fine_tune(net, train_loader, steps=mv["steps"], lr=1e-3, seed=seed, callback=pruner)
        out[criterion] = train.evaluate(net, test_loader)
    return out



# ----------------------------------------------------------------------------- after
def dense_mlp(seed: int, cfg: dict[str, Any]) -> torch.nn.Module:
    """The book's MLP trained densely for ``steps`` steps from seed ``seed``."""
    train_loader, _ = data.digits(flatten=True)
    train.set_seed(seed)
    net = models.MLP()
    train.train(net, train_loader, steps=cfg["steps"], lr=cfg["lr"], seed=seed,
                lr_schedule="cosine", progress=False)
    return net


def after_oneshot_vs_imp(seed: int, cfg: dict[str, Any]) -> dict[str, float]:
    """One-shot global magnitude + ``pat_finetune_steps`` steps of fine-tuning, against
    ``pat_rounds`` rounds of prune -> fine-tune (``iterative`` schedule) with the same steps."""
    train_loader, test_loader = data.digits(flatten=True)
    dense = dense_mlp(seed, cfg)
    s, rounds, steps = cfg["pat_sparsity"], cfg["pat_rounds"], cfg["pat_finetune_steps"]
    one = copy.deepcopy(dense)
    pk.prune(one, s, "magnitude")
    no_ft = train.evaluate(one, test_loader)
    train.fine_tune(one, train_loader, steps=steps, seed=seed)
    it = copy.deepcopy(dense)
    for k, s_k in enumerate(iterative(s, rounds)):
        pk.prune(it, s_k, "magnitude")
        train.fine_tune(it, train_loader, steps=steps // rounds, seed=seed + k)
    return {"dense": train.evaluate(dense, test_loader), "one-shot, no fine-tuning": no_ft,
            "one-shot + fine-tune": train.evaluate(one, test_loader),
            "iterative + fine-tune": train.evaluate(it, test_loader)}


def lottery(seed: int, cfg: dict[str, Any], *, keep_models: bool = False) -> dict[str, Any]:
    """Lottery tickets by IMP with rewinding to init, 50% of the remaining weights per round.

    Level k (sparsity ``1 - 0.5**k``) is one :func:`prunekit.methods.imp` round applied to the
    ticket of level k-1; the ticket (its mask, the original initial weights) and the same mask
    on a fresh initialisation (seed ``seed + 1000``) are trained for ``ticket_steps`` steps.
    """
    train_loader, test_loader = data.digits(flatten=True)
    train.set_seed(seed)
    net = models.MLP()
    init = copy.deepcopy(net.state_dict())
    steps = cfg["ticket_steps"]
    sparsities = [1.0 - 0.5 ** k for k in range(1, cfg["ticket_levels"] + 1)]
    trained: list[float] = []

    def train_fn(m):
        train.train(m, train_loader, steps=steps, lr=cfg["lr"], seed=seed,
                    lr_schedule="cosine", progress=False)
        trained.append(train.evaluate(m, test_loader))

    reinit, tickets = [], []
    for s in sparsities:
        masks = imp(net, train_fn, final_sparsity=s, rounds=1, rewind=init)
        if keep_models:
            tickets.append(copy.deepcopy(net))
        train.set_seed(seed + 1000)
        fresh = models.MLP()
        pk.apply_masks(fresh, masks)
        train_fn(fresh)
        reinit.append(trained.pop())
    train_fn(net)                      # the last ticket (the others were trained by imp)
    out = {"sparsity": sparsities, "dense": trained[0], "ticket": trained[1:],
           "reinit": reinit}
    if keep_models:
        out["models"], out["init"] = tickets, init
    return out


# ----------------------------------------------------------------------------- run time
def fbs_gated(model: torch.nn.Module, keep: float, train_loader: Any, steps: int, seed: int,
              lasso: float, threshold: float | None = None) -> torch.nn.Module:
    """A copy of ``model`` with FBS gates at ``keep`` on every conv (:func:`gate_model`),
    trained ``steps`` Adam steps (lr 1e-3) with FBS's lasso ``lasso`` on the saliencies."""
    gated = gate_model(model, keep, threshold=threshold)
    train.train(gated, train_loader, steps=steps, lr=1e-3, seed=seed, progress=False,
                regularizer=lambda m: lasso * saliency_l1(m))
    return gated


def static_channels(model: torch.nn.Module, keep: float, train_loader: Any, steps: int, seed: int,
                    example: torch.Tensor) -> torch.nn.Module:
    """A copy of ``model`` with ``1 - keep`` of every conv's filters removed by L1 norm
    (per layer), compacted (``example``: one input), fine-tuned ``steps`` steps."""
    static = l1_channels(model, 1.0 - keep, example)
    train.fine_tune(static, train_loader, steps=steps, seed=seed)
    return static


def runtime(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """FBS gating at ``gate_keep`` of every conv of the zoo's CNN vs static channel pruning
    (L1 filter norm, the same fraction per conv, compacted), fine-tuned for the same steps;
    and a thresholded gate (``gate_threshold = [keep, threshold]``) whose cost varies per
    input. The gates train with FBS's lasso on the saliencies (``gate_lasso``)."""
    train_loader, test_loader = data.digits()
    model = zoo.load("cnn-digits")
    x_test = torch.cat([x for x, _ in test_loader])
    keep, steps = cfg["gate_keep"], cfg["gate_steps"]
    out: dict[str, Any] = {"dense": {"accuracy": train.evaluate(model, test_loader),
                                     "macs": pk.count_macs(model, x_test[:1])[0]}}
    lasso = cfg["gate_lasso"]
    gated = fbs_gated(model, keep, train_loader, steps, seed, lasso)
    out["FBS gating"] = {"accuracy": train.evaluate(gated, test_loader),
                         "macs": float(executed_macs(gated, x_test).float().mean())}
    static = static_channels(model, keep, train_loader, steps, seed, x_test[:1])
    out["static channels"] = {"accuracy": train.evaluate(static, test_loader),
                              "macs": pk.count_macs(static, x_test[:1])[0]}
    varied_keep, threshold = cfg["gate_threshold"]
    varied = fbs_gated(model, varied_keep, train_loader, steps, seed, lasso, threshold=threshold)
    per_input = executed_macs(varied, x_test)
    out["threshold gating"] = {"accuracy": train.evaluate(varied, test_loader),
                               "macs": float(per_input.float().mean()),
                               "macs_per_input": per_input.tolist()}
    return out


def tokens(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """EViT token pruning (Liang et al. 2022) in a TinyViT trained for ``steps`` steps: for
    every keep rate of ``evit_keep`` (tokens kept at every block but the first), the MACs per
    input, the accuracy as is and after ``evit_steps`` steps of fine-tuning."""
    train_loader, test_loader = data.digits()
    x1 = next(iter(test_loader))[0][:1]
    train.set_seed(seed)
    vit = models.TinyViT(**cfg["vit"])
    train.train(vit, train_loader, steps=cfg["steps"], lr=cfg["lr"], seed=seed,
                lr_schedule="cosine", progress=False)
    macs = evit_macs(vit, x1, cfg["evit_keep"])
    out: dict[str, Any] = {"keep": cfg["evit_keep"], "macs": [macs[k] for k in cfg["evit_keep"]],
                           "as is": [], "fine-tuned": []}
    for keep in cfg["evit_keep"]:
        pruned = evit(vit, keep)
        out["as is"].append(train.evaluate(pruned, test_loader))
        train.fine_tune(pruned, train_loader, steps=cfg["evit_steps"], seed=seed)
        out["fine-tuned"].append(train.evaluate(pruned, test_loader))
    return out


# ----------------------------------------------------------------------------- all
def _spread(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0,
            "min": float(t.min()), "max": float(t.max())}


def run(cfg: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Every experiment of the chapter; a JSON-able dict (see the module docstring).

    Runs on one CPU thread (the float sums of the cached results; the notebook sets the same)
    and restores torch's thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(CONFIG if cfg is None else cfg, progress)
    finally:
        torch.set_num_threads(threads)


def during_extra(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """``soft_filter`` and ``movement`` for the first three seeds, as the JSON stores them."""
    seeds = cfg["seeds"][:3]
    sf = [soft_filter(s, cfg) for s in tqdm(seeds, desc="soft filter pruning", disable=not progress)]
    mv = [movement(s, cfg) for s in tqdm(seeds, desc="movement pruning", disable=not progress)]
    return {"soft_filter": {m: {"accuracy": [r[m]["accuracy"] for r in sf], "macs": sf[0][m]["macs"],
                                "filters": sf[0][m]["filters"]} for m in sf[0]},
            "movement": {k: [r[k] for r in mv] for k in mv[0]}}


def _run(cfg: dict[str, Any], progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    out: dict[str, Any] = {"config": cfg, "collapse": collapse(cfg, progress)}
    out["during"] = during(cfg, progress)
    seeds = cfg["seeds"]
    out.update(during_extra(cfg, progress))
    pat = [after_oneshot_vs_imp(s, cfg) for s in tqdm(seeds, desc="one-shot vs IMP",
                                                       disable=not progress)]
    out["after"] = {k: [r[k] for r in pat] for k in pat[0]}
    tickets = [lottery(s, cfg) for s in tqdm(seeds, desc="lottery tickets",
                                             disable=not progress)]
    out["lottery"] = {"sparsity": tickets[0]["sparsity"],
                      "dense": [t["dense"] for t in tickets],
                      "ticket": [t["ticket"] for t in tickets],
                      "reinit": [t["reinit"] for t in tickets]}
    rt = [runtime(s, cfg) for s in tqdm(seeds[:3], desc="run-time gating",
                                        disable=not progress)]
    out["runtime"] = {k: {"accuracy": [r[k]["accuracy"] for r in rt], "macs": rt[0][k]["macs"]}
                      for k in rt[0]}
    out["runtime"]["threshold gating"]["macs_per_input"] = \
        rt[0]["threshold gating"]["macs_per_input"]
    vit = [tokens(s, cfg) for s in tqdm(seeds[:3], desc="EViT tokens", disable=not progress)]
    out["tokens"] = {"keep": vit[0]["keep"], "macs": vit[0]["macs"],
                     "as is": [v["as is"] for v in vit],
                     "fine-tuned": [v["fine-tuned"] for v in vit]}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def load(path: Path | str = RESULTS) -> dict[str, Any]:
    """The cached results (``python -m prunekit.experiments.when`` writes them)."""
    return load_results(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m prunekit.experiments.when [--quick] [--out PATH] [--no-progress]``."""
    return cli("prunekit.experiments.when", __doc__.splitlines()[0], run, CONFIG, QUICK, RESULTS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
