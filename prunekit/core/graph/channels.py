"""The channel planner: which channels of each coupled group are kept.

:func:`plan_channels` traces a model (:mod:`.trace`), builds its channel spaces
(:mod:`.tracer`, :mod:`.rules`) and decides, from the model's masks, the channels every
group keeps. It lives in ``core/`` (not in ``structured/``) because coupled-channel pruning
(``prune(..., granularity="channel", example_inputs=x)``) needs the groups to make its masks,
and the pipeline may not import ``structured/``; :mod:`prunekit.structured.compact` uses the
plan to remove the channels.

Which channels go
-----------------
A channel is *masked* in a layer when its whole output row/filter mask is False. A channel
of a group is **removed only when every producer of the group masks it** (the union of kept
channels is kept; depthwise convs and gate producers do not vote), so a residual stage loses
a channel only if all the convs that add into it dropped it. The constraints of the rules
then only add kept channels, until all hold together: grouped-conv parts balanced
(:func:`_balance`), shuffle ties whole, chunk parts equal, slice prefixes pinned
(:func:`_settle`). The model's outputs keep everything, and so do channels that would slice a
parameter shared by several modules (tied weights stay one parameter).

Channels that cannot be removed exactly
---------------------------------------
A group whose channels reach a construct no rule follows (a *barrier*: attention, a
norm over a different set of dims, an unknown module...) keeps all its channels. This is
never an error: :class:`ChannelPlan` lists each such group in ``blocked`` with the
construct, and :func:`prunekit.compact` warns once about the channels that the masks
removed and that it had to keep. Such a group is ``fixed`` in ``groups``, so coupled
pruning leaves it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..targets import all_parameters
from .trace import check_inputs, trace
from .tracer import ChannelTracer

__all__ = ["ChannelPlan", "plan_channels", "analyse"]


@dataclass
class ChannelPlan:
    """The groups :func:`compact` found and the channels it keeps in each.

    ``groups`` lists, per group, a dict with ``producers`` (they vote), ``followers``
    (squeeze-and-excitation gate producers: sliced, no vote), ``batchnorms``,
    ``depthwise``, ``norms`` (the LayerNorm-like nodes normalising it), ``params``
    (per-channel parameters: layer scale, class token, position embedding, LayerNorm
    weight/bias), ``consumers`` (module names), ``partitions`` (the group counts of the
    grouped convs that read or write it: each of that many equal parts keeps the same count),
    ``size``, ``fixed`` (never loses a channel: the model's outputs, or a barrier),
    ``barriers`` (the constructs that block it) and ``kept`` (a sorted ``LongTensor`` of kept
    channel indices).
    """

    groups: list
    out_index: dict      # module name -> kept output channel indices
    in_index: dict       # module name -> kept input feature indices
    bn_index: dict       # BatchNorm name -> kept indices
    attr_index: dict = field(default_factory=dict)  # per-channel parameter -> (dim, kept indices)
    grouped: dict = field(default_factory=dict)     # grouped (not depthwise) conv -> groups
    #: channel-level constraints, as ``(group index, channel)`` (index ``None``: a space that is
    #: no group, e.g. the input): ties (kept together), chunks (parts keeping equal counts), pins
    ties: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    pins: list = field(default_factory=list)
    #: groups whose masked channels had to be kept: ``(group index, channels kept back, construct)``
    blocked: list = field(default_factory=list)
    #: channel-norm nodes that lose channels -> (channel dim, kept indices, full size)
    norm_index: dict = field(default_factory=dict)
    #: modules whose ``normalized_shape`` shrinks -> the kept width
    norm_shapes: dict = field(default_factory=dict)

    def removed(self) -> int:
        """How many channels are removed over all groups."""
        return sum(g["size"] - len(g["kept"]) for g in self.groups)


def _kept_rows(module: nn.Module) -> torch.Tensor:
    """Bool [out]: which output channels of a Conv/Linear are not entirely masked."""
    mask = getattr(module, "weight_mask", None)
    n = module.weight.shape[0] if mask is None else mask.shape[0]
    if mask is None:
        return torch.ones(n, dtype=torch.bool)
    return mask.reshape(n, -1).bool().any(dim=1).cpu()


def _balance(keep: torch.Tensor, partitions: list[int]) -> None:
    """Keep more channels (in place) until, for every ``g`` in ``partitions``, each of the
    ``g`` equal consecutive parts keeps the same count: the most any part keeps. The
    channels added back are the lowest-indexed removed ones of each part."""
    changed = bool(partitions)
    while changed:
        changed = False
        for g in partitions:
            parts = keep.view(g, -1)
            target = int(parts.sum(1).max())
            for part in parts:
                missing = target - int(part.sum())
                if missing > 0:
                    part[(~part).nonzero().flatten()[:missing]] = True
                    changed = True


def _settle(keeps: dict[int, torch.Tensor], spaces: list, ties: list, chunks: list) -> None:
    """Keep more channels (in place) until every space is balanced over its grouped convs'
    parts, every tie (channels a channel shuffle moves together) is kept whole or not at
    all, and the parts of every ``chunk`` keep equal counts (the lowest removed positions of
    a part come back). Channels of spaces without a vote (the inputs) count as kept."""
    changed = True
    while changed:
        changed = False
        for i, keep in keeps.items():
            if spaces[i].partitions:
                before = int(keep.sum())
                _balance(keep, spaces[i].partitions)
                changed |= int(keep.sum()) != before
        for tie in ties:
            states = [keeps[sid][c] if sid in keeps else True for sid, c in tie]
            if any(states) and not all(states):
                for sid, c in tie:
                    if sid in keeps:
                        keeps[sid][c] = True
                changed = True
        for parts in chunks:
            states = [[bool(keeps[sid][c]) if sid in keeps else True for sid, c in part] for part in parts]
            target = max(sum(st) for st in states)
            for part, st in zip(parts, states):
                missing = target - sum(st)
                for (sid, c), kept in zip(part, st):
                    if missing > 0 and not kept:
                        keeps[sid][c] = True
                        missing -= 1
                        changed = True


def _shared_spaces(tr: ChannelTracer, model: nn.Module) -> set[int]:
    """The spaces whose channels would slice a parameter shared by several modules (tied weights).

    Slicing it for one module would untie it from the others (an embedding that shares its
    matrix with the output head is not sliced with the head's input columns), so these
    spaces keep all their channels and every use keeps one, unsliced, parameter.
    """
    pinned: set[int] = set()
    seen: set[int] = set()
    for _, m in model.named_modules(remove_duplicate=False):  # cheap check first: most models share nothing
        for p in m._parameters.values():
            if p is not None and id(p) in seen:
                break
            if p is not None:
                seen.add(id(p))
        else:
            continue
        break
    else:
        return pinned
    for t in all_parameters(model).values():
        if len(t.uses) < 2:
            continue
        for u in t.uses:
            owner = u.name.rpartition(".")[0]
            segs = list(tr.attr_in.get(u.name, (None, []))[1])
            if u.attr in ("weight", "bias"):
                segs += tr.module_out.get(owner, []) + tr.bn_in.get(owner, [])
            if u.attr == "weight":
                segs += tr.module_in.get(owner, [])
            pinned.update(tr.find(sid) for sid, _, _ in segs)
    return pinned


def analyse(model: nn.Module, example_inputs) -> ChannelTracer:
    """The channel spaces of ``model`` (cached with its trace: they depend on the graph only)."""
    traced = trace(model, example_inputs)
    tr = traced.memo.get("channels")
    if tr is None:
        tr = ChannelTracer(traced.gm, traced.modules).run()
        traced.memo["channels"] = tr
    return tr


def _plan(model: nn.Module, example_inputs) -> ChannelPlan:
    """Trace ``model`` (masks applied) and decide the kept channels of every group."""
    tr = analyse(model, example_inputs)
    modules = tr.modules
    shared = _shared_spaces(tr, model)
    groups = []
    kept_of: dict[int, torch.Tensor] = {}
    leader: dict[int, tuple[int, str]] = {}
    for g, d, where in tr.follows:
        g, d = tr.find(g), tr.find(d)
        if g == d:
            continue
        sg = tr.spaces[g]
        if leader.get(g, (d,))[0] != d or sg.consumers or sg.barriers or sg.fixed or sg.depthwise:
            raise ValueError(
                f"the gate at {where} (produced by {sg.producers}) is also used elsewhere; "
                "a squeeze-and-excitation gate must feed only its product gate * x"
            )
        leader[g] = (d, where)
    roots = [i for i in sorted(range(len(tr.spaces)), key=lambda j: tr.find(j) in leader) if tr.find(i) == i
             and any((tr.spaces[i].producers, tr.spaces[i].consumers, tr.spaces[i].bns, tr.spaces[i].depthwise))]
    keeps: dict[int, torch.Tensor] = {}
    for i in roots:  # the vote: the union of what the producers keep
        s = tr.spaces[i]
        if i in leader:
            continue
        keep = torch.zeros(s.size, dtype=torch.bool)
        if not s.producers:  # the model's inputs, or fed only by them
            keep[:] = True
        for p in s.producers:
            keep |= _kept_rows(modules[p])
        if not keep.any():
            keep[0] = True  # a layer never loses all its channels
        keeps[i] = keep
    ties = [[(tr.find(sid), c) for sid, c in tie] for tie in tr.ties]
    ties.append([(None, 0)] + [(tr.find(sid), c) for sid, c in tr.pins])  # tied to a kept channel
    chunks = [[[(tr.find(sid), c) for sid, c in part] for part in parts] for parts in tr.chunks]
    _settle(keeps, tr.spaces, ties, chunks)
    blocked_at: dict[int, tuple[int, str]] = {}
    for i, keep in keeps.items():
        s = tr.spaces[i]
        if not keep.all() and s.barriers:  # documented rule: channels that reach a barrier stay
            blocked_at[i] = (int((~keep).sum()), s.barriers[0])
        if s.fixed or s.barriers or i in shared:  # outputs, barriers and tied parameters keep all
            keep[:] = True
    _settle(keeps, tr.spaces, ties, chunks)
    number = {root: n for n, root in enumerate(roots)}
    blocked = []
    for i in roots:
        s = tr.spaces[i]
        if i in leader:  # a squeeze-and-excitation gate: the data's channels, no vote
            d = tr.find(leader[i][0])
            if d not in keeps:
                raise ValueError(f"the gate at {leader[i][1]} gates a tensor channel surgery cannot follow")
            keeps[i] = keeps[d].clone()
        kept = keeps[i].nonzero().flatten()
        kept_of[i] = kept
        voters, followers = ([], s.producers) if i in leader else (s.producers, [])
        groups.append({"producers": list(dict.fromkeys(voters)),
                       "batchnorms": list(dict.fromkeys(s.bns)),
                       "depthwise": list(dict.fromkeys(s.depthwise)),
                       "norms": list(dict.fromkeys(s.norms)),
                       "params": list(dict.fromkeys(s.params)),
                       "followers": list(dict.fromkeys(followers)),
                       "consumers": list(dict.fromkeys(c for c, _ in s.consumers)),
                       "partitions": sorted(set(s.partitions)),
                       "size": s.size, "fixed": s.fixed or bool(s.barriers),
                       "barriers": list(dict.fromkeys(s.barriers)), "kept": kept})
        if i in blocked_at:
            blocked.append((number[i], *blocked_at[i]))

    def index(segments: list) -> torch.Tensor:
        parts, offset = [], 0
        for sid, rep, idx in segments:
            root = tr.find(sid)
            kept = kept_of.get(root)
            size = tr.spaces[root].size
            if kept is None:
                kept = torch.arange(size)
            if idx is not None:  # a shuffled/split part: the positions of its kept channels
                keep = torch.zeros(size, dtype=torch.bool)
                keep[kept] = True
                kept, size = keep[idx].nonzero().flatten(), len(idx)
            parts.append(offset + (kept[:, None] * rep + torch.arange(rep)).flatten())
            offset += size * rep
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def full(segments: list) -> int:
        return sum((tr.spaces[tr.find(sid)].size if idx is None else len(idx)) * rep for sid, rep, idx in segments)

    out_index = {name: index(segs) for name, segs in tr.module_out.items()}
    in_index = {name: index(segs) for name, segs in tr.module_in.items()}
    bn_index = {name: index(segs) for name, segs in tr.bn_in.items()}
    attr_index = {name: (dim, index(segs)) for name, (dim, segs) in tr.attr_in.items()}
    norm_index, norm_shapes = {}, {}
    for node, (dim, segs) in tr.norm_in.items():
        idx = index(segs)
        if len(idx) < full(segs):
            norm_index[node.name] = (dim, idx, full(segs))
            if tr.norm_owner.get(node) is not None:
                norm_shapes[tr.norm_owner[node]] = len(idx)
    at = lambda pairs: [(number.get(tr.find(sid)), c) for sid, c in pairs]  # noqa: E731
    return ChannelPlan(groups, out_index, in_index, bn_index, attr_index, dict(tr.grouped),
                       ties=[at(t) for t in tr.ties], chunks=[[at(p) for p in parts] for parts in tr.chunks],
                       pins=at(tr.pins), blocked=blocked, norm_index=norm_index,
                       norm_shapes=norm_shapes)


def plan_channels(model: nn.Module, example_inputs) -> ChannelPlan:
    """The channel groups of ``model`` and the channels :func:`prunekit.compact` would keep.

    Nothing is modified. ``example_inputs`` (a tensor or a tuple of tensors) is used to
    trace shapes; the trace is cached per model (:mod:`prunekit.core.graph.trace`).
    """
    check_inputs(model, example_inputs)
    return _plan(model, example_inputs)
