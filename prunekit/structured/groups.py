"""Group-aware channel pruning: one decision per group of coupled channels.

Layers whose outputs are added (residual connections), normalised by one BatchNorm or
fed to one depthwise conv share their channels: a channel can only be removed from all
of them at once. :func:`prunekit.compact` resolves masks that disagree inside such a group
by keeping the union of what the producers keep, so pruning every layer on its own
(``pk.prune(..., granularity="channel")``) removes far fewer channels than it asks for in
a residual network. Here the decision is taken per group, as in DepGraph (Fang et al.
2023, the algorithm of Torch-Pruning):

* the groups come from :func:`prunekit.core.graph.channels.plan_channels` (torch.fx trace);
* a group's score for channel ``c`` is the **sum over its producers** of their channel
  scores (the weight-level scores of a criterion reduced per output channel with
  ``reduction``, L2 by default; channel-level scores as they are);
* :func:`prunekit.allocation.allocate` removes exactly ``round(s * size)`` channels per group
  (``scope="layer"``) or over all groups (``scope="global"``), keeping at least one per group;
* every producer of a group gets the same channel mask.

A group that a **grouped conv** reads or writes (``g`` groups, see
:mod:`prunekit.core.graph`) is pruned part by part: its ``g`` equal consecutive parts each
keep ``round(kept / g)`` channels (at least one), their best, so the conv keeps its
group count and :func:`prunekit.compact` removes exactly what was chosen. With
``round_to=r`` every group keeps a multiple of ``r`` channels: the count removed is
rounded down (kept rounded up) to the next multiple, and a group smaller than ``r``
is kept whole; for a grouped-conv group the multiple is of ``lcm(r, g)``. (Groups tied
by a channel shuffle, below, are pruned by tie class and not rounded.)

Groups that a **channel shuffle** ties together (:mod:`prunekit.core.graph`: the channels
a shuffle interleaves are kept or removed together) are pruned as one unit whose
elements are the *tie classes*, each scored by the mean of its channels' scores (a sum
would favour the large classes); removing a class removes all its channels. The parts
of a ``chunk`` must then keep equal counts: a part that keeps fewer gets back its best
removed channels, with their classes, until all chunks hold -- so the masks are exactly
what :func:`prunekit.compact` removes. (In ShuffleNetV2 the stride-1 units tie the
passed-through half to the new branch and chunk it again, which couples the classes so
tightly that this keeps the shuffled channels: what goes there is the channels inside
the branches.)

Channels removed earlier score ``-inf``, so ``sparsity`` is cumulative as in
:func:`prunekit.prune`, and masks are composed with the existing ones (never un-pruned;
where that leaves fewer channels than a part or ``round_to`` asks for, fewer are kept).
Groups that cannot be pruned as a unit are left whole: the model's outputs, squeeze-and-
excitation gates (they follow the channels they gate), groups with a producer outside
``include``/``exclude`` or not scored, and groups whose producers' widths differ from the
group (concatenations).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import nn

from .._validate import check_materialised, check_scores, check_sparsity, mask_request
from ..allocation import allocate_units
from ..criteria import get as get_criterion
from ..criteria import score
from ..granularity import channel_mask, channel_scores, parse
from ..core.masks import apply_masks
from ..core.graph.channels import plan_channels
from ..pipeline import register_coupled
from ..core.targets import find_targets


def group_scores(model: nn.Module, scores: dict[str, torch.Tensor], example_inputs, *,
                 reduction: str | None = None, normalise: bool = False) -> tuple[dict, dict]:
    """Per prunable group: its channel scores and its producers' parameter names.

    Returns ``(scores, members)``, both keyed ``"group<i>"`` (``i`` indexes
    ``plan_channels(model, example_inputs).groups``). Groups that a channel shuffle ties
    to others are left out (:func:`prune_groups` scores them by tie class).
    """
    out, members, _, _ = _units(model, scores, example_inputs, reduction=parse("channel").reduction(reduction),
                                normalise=normalise)
    return ({k: v for k, v in out.items() if k.startswith("group")},
            {k: v for k, v in members.items() if k.startswith("group")})


class _Linked:
    """Channels that a channel shuffle ties across groups (see :mod:`prunekit.core.graph`): the
    tie classes, the groups they connect, and the chunk constraints between them."""

    def __init__(self, plan, prunable: dict[int, torch.Tensor]):
        self.parent: dict = {}
        for tie in plan.ties:
            for a in tie[1:]:
                self.parent[self.find(a)] = self.find(tie[0])
        classes: dict = {}
        for node in list(self.parent):
            classes.setdefault(self.find(node), []).append(node)
        self.classes = classes                       # root -> its (group, channel) members
        pinned = {self.find(p) if p in self.parent else p for p in plan.pins}
        self.removable = {r for r, ms in classes.items()
                          if r not in pinned and all(g in prunable for g, _ in ms)}
        self.chunks = plan.chunks
        self.pins = plan.pins

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def members(self, node) -> list:
        root = self.parent.get(node)
        return self.classes[self.find(node)] if root is not None else [node]


def _units(model: nn.Module, scores: dict[str, torch.Tensor], example_inputs, *,
           reduction: str, normalise: bool, plan=None) -> tuple[dict, dict, dict, tuple]:
    """The units :func:`prune_groups` allocates over: ``"group<i>"`` (a group's channel
    scores) and, for groups a channel shuffle ties together, ``"linked<i>+<j>..."`` (the
    scores of its removable tie classes, the mean over their channels). ``plan`` is
    ``plan_channels(model, example_inputs)`` when the caller already has it; ``reduction``
    is resolved (not ``None``)."""
    if plan is None:
        plan = plan_channels(model, example_inputs)
    chan, names_of, parts = {}, {}, {}
    for i, g in enumerate(plan.groups):
        if g["fixed"] or g["followers"] or not g["producers"]:
            continue
        names = [f"{p}.weight" if p else "weight" for p in g["producers"]]
        if not all(n in scores and scores[n].shape[0] == g["size"] for n in names):
            continue
        s = sum(channel_scores(scores[n], reduction, normalise) for n in names)
        gone = torch.ones(g["size"], dtype=torch.bool)
        gone[g["kept"]] = False
        g_parts = math.lcm(*g["partitions"]) if g["partitions"] else 1
        if g["size"] % g_parts:
            continue
        chan[i] = s.masked_fill(gone.to(s.device), float("-inf"))
        names_of[i] = names
        parts[f"group{i}"] = g_parts
    linked = _Linked(plan, chan)
    pinned_groups = {g for g, _ in plan.pins}
    # groups connected by tie classes form one unit
    comp = {i: i for i in chan}

    def root(i):
        while comp[i] != i:
            i = comp[i]
        return i
    for members in linked.classes.values():
        gs = [g for g, _ in members if g in chan]
        for g in gs[1:]:
            comp[root(g)] = root(gs[0])
    tied = {g for ms in linked.classes.values() for g, _ in ms if g in chan}
    out, members_out, decode = {}, {}, {}
    for i in chan:
        if i not in tied and i not in pinned_groups:
            out[f"group{i}"] = chan[i]
            members_out[f"group{i}"] = names_of[i]
    comps: dict[int, list[int]] = {}
    for i in tied | (pinned_groups & set(chan)):
        comps.setdefault(root(i), []).append(i)
    for gs in comps.values():
        gs = sorted(gs)
        if any(parts[f"group{g}"] > 1 for g in gs):
            continue  # grouped convs and shuffles together: left whole
        classes, seen = [], set()
        for g in gs:
            for c in range(chan[g].numel()):
                r = linked.find((g, c)) if (g, c) in linked.parent else (g, c)
                if r in seen:
                    continue
                seen.add(r)
                ms = linked.members((g, c))
                removable = (r in linked.removable) if (g, c) in linked.parent else (g, c) not in linked.pins
                if removable and all(g2 in chan for g2, _ in ms):
                    classes.append(ms)
        if not classes:
            continue
        vals = [torch.stack([chan[g2][c2].double() for g2, c2 in ms]) for ms in classes]
        score_t = torch.stack([v[torch.isfinite(v)].mean() if torch.isfinite(v).any() else v.new_tensor(float("-inf"))
                               for v in vals])
        key = "linked" + "+".join(str(g) for g in gs)
        out[key] = score_t
        members_out[key] = [n for g in gs for n in names_of[g]]
        decode[key] = (gs, classes)
    return out, members_out, parts, (chan, names_of, decode, linked)


def _regroup(keep: torch.Tensor, scores: torch.Tensor, parts: int, round_to: int | None) -> torch.Tensor:
    """Re-select the kept channels of one group: ``parts`` equal parts with equal counts,
    the total a multiple of ``round_to`` (rounded up), the best scores of each part."""
    n = keep.numel()
    per = max(1, round(int(keep.sum()) / parts))
    if round_to is not None:
        step = math.lcm(round_to, parts)
        total = n if n < round_to else min(n, math.ceil(per * parts / step) * step)
        per = total // parts
    out = torch.zeros(n, dtype=torch.bool)
    for j, part in enumerate(scores.detach().cpu().double().view(parts, -1)):
        alive = int(torch.isfinite(part).sum()) if part.numel() else 0
        k = min(per, max(alive, 1))  # never un-prune (but a part keeps one channel)
        best = torch.sort(part, descending=True, stable=True).indices[:k]
        out[j * part.numel() + best] = True
    return out.to(keep.device)


def _balance_chunks(group_keep: dict, chan: dict, linked: _Linked) -> None:
    """Give the parts of every ``chunk`` equal kept counts (:func:`prunekit.compact` needs
    them): a part that keeps fewer gets back its best removed channels, each with its
    whole tie class. Only adds; repeats until every chunk holds."""
    def kept(node) -> bool:
        g, c = node
        return bool(group_keep[g][c]) if g in group_keep else True

    changed = bool(linked.chunks)
    while changed:
        changed = False
        for parts in linked.chunks:
            counts = [sum(kept(n) for n in part) for part in parts]
            target = max(counts)
            for part, count in zip(parts, counts):
                gone = sorted((n for n in part if not kept(n)), key=lambda n: -float(chan[n[0]][n[1]]))
                for node in gone[:target - count]:
                    for g, c in linked.members(node):
                        if g in group_keep:
                            group_keep[g][c] = True
                    changed = True


@register_coupled
def prune_groups(
    model: nn.Module,
    sparsity: float,
    example_inputs,
    criterion: str = "magnitude",
    scope: str = "layer",
    data: Iterable | None = None,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    reduction: str | None = None,
    round_to: int | None = None,
    **criterion_kwargs,
) -> dict[str, torch.Tensor]:
    """Remove ``sparsity`` of the channels of every coupled group (see the module docstring).

    Returns the masks applied (full parameter shapes, whole rows False). After it,
    :func:`prunekit.compact` removes exactly the channels chosen here. Every argument is
    validated, and the model traced, before the criterion runs and before anything is
    changed. ``round_to=r``: every
    group keeps a multiple of ``r`` channels (fewer removed; a group smaller than ``r``
    keeps all), e.g. ``8`` to try SIMD-friendly widths.

    >>> import torch, prunekit as pk
    >>> net = pk.models.ResNet(widths=(8, 16))
    >>> x = torch.zeros(1, 3, 16, 16)
    >>> _ = pk.structured.groups.prune_groups(net, 0.5, x, exclude="fc.weight")
    >>> small = pk.compact(net, x)
    >>> small.layer1[0].conv2.out_channels, small.layer2[0].conv2.out_channels
    (4, 8)
    """
    check_materialised(model)
    if isinstance(sparsity, Mapping):
        check_sparsity(sparsity)  # coupled layers share one sparsity: a TypeError naming the argument
    get_criterion(criterion)
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be None or a positive int, got {round_to!r}")  # tests pin ValueError
    targets = {t.name: t for t in find_targets(model, include=include, exclude=exclude)}
    req = mask_request(parse("channel"), sparsity, scope, reduction, {n: t.shape for n, t in targets.items()})
    plan = plan_channels(model, example_inputs)  # traced before the criterion runs: a bad input fails first
    scores = check_scores(score(model, criterion, data, include=include, exclude=exclude, **criterion_kwargs))
    units, members, parts, (chan, names_of, decode, linked) = _units(
        model, scores, example_inputs, reduction=req.reduction, normalise=req.normalise, plan=plan)
    if not units:
        raise ValueError("no channel group of the model can be pruned as a unit "
                         "(check include/exclude: every producer of a group must be prunable)")
    s = req.sparsity[next(iter(req.sparsity))]
    keep = allocate_units(units, {k: s for k in units}, req.scope, min_keep=1)
    group_keep: dict[int, torch.Tensor] = {}
    for key in keep:
        if key in decode:  # tie classes: a class removed leaves all its channels
            gs, classes = decode[key]
            for g in gs:
                group_keep[g] = torch.isfinite(chan[g]).cpu()
            for ms, k in zip(classes, keep[key].tolist()):
                if not k:
                    for g, c in ms:
                        group_keep[g][c] = False
            continue
        if parts[key] > 1 or round_to is not None:
            keep[key] = _regroup(keep[key], units[key], parts[key], round_to)
        group_keep[int(key[len("group"):])] = keep[key].cpu()
    _balance_chunks(group_keep, chan, linked)
    masks = {}
    for g, k in group_keep.items():
        for n in names_of[g]:
            m = channel_mask(k, targets[n].shape).to(targets[n].parameter.device)
            masks[n] = m & targets[n].mask if targets[n].is_masked else m
    apply_masks(model, masks)
    return masks
