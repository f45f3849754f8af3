"""Accuracy of every registered pruning criterion on the pretrained digits CNN, one-shot and fine-tuned.

A book number of record (chapter 4, "How to prune (1): pruning criteria"), not a timing:
the tables are test accuracies, and the run time is printed only so that you know what a
rerun costs. The model is the zoo's pretrained ``cnn-digits`` (``zoo.load("cnn-digits")``,
dense test accuracy 98.9% on the 450 test images of ``data.digits()``).

Weights table (every criterion whose ``level`` is ``"weight"``): the model is scored once
(data-driven criteria on the first 4 training batches, 256 images; ``needs_inputs``
criteria on one training image), then for each sparsity s in 50/80/90% exactly
``round(s * n)`` of the ``n = 27,920`` weights of all five conv and linear layers are
removed, ranked *globally* (``pk.make_masks(scores, s)``: unstructured, one threshold for
the whole network), the masks are applied to a copy, the copy is evaluated (one-shot),
fine-tuned for ``--steps`` Adam steps (lr 1e-3, batch 64; the masks stay applied) and
evaluated again.

Channels table (every criterion whose ``level`` is ``"channel"``, plus ``random``,
``magnitude`` and ``taylor`` reduced to one score per output channel, the L2 norm of the
channel's weight scores): only the output channels of ``features.4`` (32) and
``features.8`` (64) are pruned, layer by layer (``granularity="channel", scope="layer"``):
exactly ``round(s * 32)`` and ``round(s * 64)`` channels go at each sparsity of
``--channel-sparsities`` (default 50/80/90%). ``pk.compact`` then builds a physically
smaller network (the filters, their BatchNorm entries and the next conv's input channels
are removed), which is evaluated, fine-tuned for ``--steps`` steps and evaluated again.
``--also-moderate`` adds a second channels table at 25/50/75% (the sparsities of the
chapter's own table).

Deterministic: one thread, the seed is reset (``train.set_seed(0)``) before every criterion
is scored, and every fine-tune is seeded with 0 (which also re-seeds the loader's
shuffling), so a row does not depend on which other criteria run (``--criteria``).

    python benchmarks/bench_criteria.py [--steps 60] [--also-moderate]
    python benchmarks/bench_criteria.py --criteria magnitude,random,l1_filter --channel-sparsities 0.5
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

import prunekit as pk
from prunekit import data, train, zoo

WEIGHT_SPARSITIES = (0.5, 0.8, 0.9)  # the issue's
MODERATE_CHANNEL_SPARSITIES = (0.25, 0.5, 0.75)  # the chapter's channel table
CONVS = ("features.4.weight", "features.8.weight")
REDUCED_TO_CHANNELS = ("random", "magnitude", "taylor")  # weight-level criteria also in the channels table

Results = dict[tuple[str, float], tuple[float, float]]  # (criterion, sparsity) -> (one-shot, fine-tuned)


def criterion_kwargs(name: str, batches: list, x1: torch.Tensor) -> dict:
    """What ``pk.score`` needs for ``name``: ``data=`` and/or ``example_inputs=``."""
    c = pk.criteria.get(name)
    kwargs: dict = {}
    if c.needs_data:
        kwargs["data"] = batches
    if c.needs_inputs:
        kwargs["example_inputs"] = x1
    return kwargs


def select(names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The weight-level and the channel-level lists of criteria to run, in registry order
    (the channels list starts with random, magnitude and taylor), restricted to ``names``."""
    registry = pk.criteria.available()
    if names is not None:
        wanted = {pk.criteria.get(n).name for n in names}  # ValueError on an unknown name
    else:
        wanted = set(registry)
    weight = [n for n, c in registry.items() if c.level == "weight" and n in wanted]
    channel = [n for n in REDUCED_TO_CHANNELS if n in wanted] + [
        n for n, c in registry.items() if c.level == "channel" and n in wanted]
    return weight, channel


def _score(model: nn.Module, name: str, batches: list, x1: torch.Tensor, **kw) -> dict[str, torch.Tensor]:
    train.set_seed(0)  # a criterion's scores do not depend on what ran before it
    return pk.score(model, name, **kw, **criterion_kwargs(name, batches, x1))


def run_weights(model, names, sparsities, steps, train_loader, test_loader, batches, x1, bar) -> Results:
    """Global unstructured masks from each criterion's scores; one-shot and fine-tuned accuracy."""
    out: Results = {}
    for name in names:
        scores = _score(model, name, batches, x1)
        n = sum(v.numel() for v in scores.values())
        for s in sparsities:
            bar.set_postfix_str(f"weights {name} {s:.0%}")
            masks = pk.make_masks(scores, s)  # global, unstructured
            removed = sum(int((~m).sum()) for m in masks.values())
            assert removed == round(s * n), (name, s, removed, n)
            net = copy.deepcopy(model)
            pk.apply_masks(net, masks)
            one_shot = train.evaluate(net, test_loader)
            train.fine_tune(net, train_loader, steps=steps, seed=0)  # the masks stay applied
            out[name, s] = (one_shot, train.evaluate(net, test_loader))
            bar.update()
    return out


def run_channels(model, names, sparsities, steps, train_loader, test_loader, batches, x1, bar,
                 macs: dict[float, float] | None = None) -> Results:
    """Per-layer channel masks on ``CONVS``, compacted; one-shot and fine-tuned accuracy.

    ``macs`` (if given) receives the fraction of the dense MACs each sparsity keeps.
    """
    out: Results = {}
    dense_macs = pk.count_macs(model, x1)[0]
    widths = {c: model.get_parameter(c).shape[0] for c in CONVS}
    for name in names:
        scores = _score(model, name, batches, x1, include=list(CONVS))
        for s in sparsities:
            bar.set_postfix_str(f"channels {name} {s:.0%}")
            masks = pk.make_masks(scores, s, granularity="channel", scope="layer", model=model)
            net = copy.deepcopy(model)
            pk.apply_masks(net, masks)
            small = pk.compact(net, x1)  # physically smaller
            for c, w in widths.items():
                kept = small.get_parameter(c).shape[0]
                assert kept == w - round(s * w), (name, s, c, kept, w)
            if macs is not None:
                macs[s] = pk.count_macs(small, x1)[0] / dense_macs
            one_shot = train.evaluate(small, test_loader)
            train.fine_tune(small, train_loader, steps=steps, seed=0)
            out[name, s] = (one_shot, train.evaluate(small, test_loader))
            bar.update()
    return out


def table(names: Sequence[str], sparsities: Sequence[float], results: Results, unit: str) -> str:
    """A Markdown table: one row per criterion, one-shot and fine-tuned accuracy per sparsity."""
    head = " | ".join(f"{s:.0%} one-shot | {s:.0%} fine-tuned" for s in sparsities)
    lines = [f"| criterion ({unit} removed) | {head} |", "|---|" + "---:|" * (2 * len(sparsities))]
    for name in names:
        cells = " | ".join(f"{results[name, s][0]:.1%} | {results[name, s][1]:.1%}" for s in sparsities)
        lines.append(f"| `{name}` | {cells} |")
    return "\n".join(lines)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from e
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sparsities must be in (0, 1), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the tables; return ``{"dense", "weights", "channels",
    "channels_moderate", "steps", "seconds"}`` (results keyed by ``(criterion, sparsity)``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps after pruning (default 60)")
    ap.add_argument("--criteria", type=lambda t: [n.strip() for n in t.split(",") if n.strip()], default=None,
                    help="comma-separated criteria to run (default: all registered)")
    ap.add_argument("--channel-sparsities", type=_fractions, default=WEIGHT_SPARSITIES,
                    help='channel sparsities (default "0.5,0.8,0.9")')
    ap.add_argument("--also-moderate", action="store_true",
                    help="also print a channels table at 0.25,0.5,0.75")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    weight_names, channel_names = select(args.criteria)

    t0 = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.set_seed(0)
        train_loader, test_loader = data.digits()
        model = zoo.load("cnn-digits").eval()
        dense = train.evaluate(model, test_loader)
        batches = list(itertools.islice(train_loader, 4))  # 256 training images for data-driven criteria
        x1 = batches[0][0][:1]  # one input, for criteria that run a forward pass and for compact
        moderate = MODERATE_CHANNEL_SPARSITIES if args.also_moderate else ()
        total = len(weight_names) * len(WEIGHT_SPARSITIES) + len(channel_names) * (
            len(args.channel_sparsities) + len(moderate))
        common = (args.steps, train_loader, test_loader, batches, x1)
        macs: dict[float, float] = {}
        with tqdm(total=total, desc="score, prune, evaluate, fine-tune") as bar:
            weights = run_weights(model, weight_names, WEIGHT_SPARSITIES, *common, bar)
            channels = run_channels(model, channel_names, args.channel_sparsities, *common, bar, macs)
            channels_moderate = (run_channels(model, channel_names, moderate, *common, bar, macs)
                                 if moderate else {})
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - t0

    print(f"\ncnn-digits (zoo), dense test accuracy {dense:.1%} on {len(test_loader.dataset)} test images; "
          f"fine-tuning: {args.steps} Adam steps (lr 1e-3, batch 64), seed 0; 1 thread\n")
    if weight_names:
        print("Weights: global unstructured masks over all conv and linear weights\n")
        print(table(weight_names, WEIGHT_SPARSITIES, weights, "weights"))
        print()
    for label, sp, res in (("", args.channel_sparsities, channels), (" (moderate)", moderate, channels_moderate)):
        if not channel_names or not sp:
            continue
        print(f"Channels{label}: output channels of {' and '.join(c[:-7] for c in CONVS)}, per layer, "
              f"compacted\n")
        print(table(channel_names, sp, res, "channels"))
        print("\nMACs of the compacted network: " + ", ".join(f"{macs[s]:.0%} at {s:.0%}" for s in sp)
              + " of dense\n")
    print(f"dense {dense:.1%}, {args.steps} fine-tuning steps, total run time {seconds:.0f} s")
    return {"dense": dense, "weights": weights, "channels": channels, "channels_moderate": channels_moderate,
            "steps": args.steps, "seconds": seconds}


if __name__ == "__main__":
    main()
