"""The layer-wise channel-ratio search space shared by the "learning to prune" searches.

AMC (:mod:`prunekit.methods.learned.amc`), MetaPruning (:mod:`prunekit.methods.learned.metapruning`) and the
GNN policy (:mod:`prunekit.methods.learned.gnn`) all search the same thing: one *pruning ratio* per
prunable layer, under a MAC budget (Cheng, Zhang & Shi, "A Survey on Deep Neural Network
Pruning", arXiv 2308.06767, "learning to prune"). :class:`SearchSpace` describes that space
for a traced model:

* **layers** -- the prunable *channel groups* of :func:`prunekit.core.graph.channels.plan_channels`:
  channels that must go together (a conv, its BatchNorm and the next layer's input columns;
  in a ResNet, every conv that adds into one residual stream). One ratio per group. A
  group is named after its first producer in module order (``"features.0"``, ``"conv1"``).
  The model's input and output channels are never searched.
* **the round rule** -- a ratio ``r`` removes ``n = min(round(r * c), c - 1)`` of a group's
  ``c`` channels (Python's ``round``, half to even; at least one channel is kept), the rule
  of :func:`prunekit.allocation.allocate` with ``scope="layer", min_keep=1``.
* **which channels** -- the lowest L1 norms (the sum of ``|w|`` of each channel's filter,
  summed over the group's producers: PFEC, Li et al. ICLR 2017; AMC's magnitude selection),
  ties to the lower index (a stable ascending sort, as in :mod:`prunekit.allocation`).
* **MACs** -- :meth:`SearchSpace.macs` is a closed form, exact for every ratio vector: each
  Conv/Linear layer's dense MACs scale with the fraction of its input channels kept times
  the fraction of its output channels kept (a depthwise conv with the one fraction of its
  group). It equals ``pk.count_macs`` of the pruned and compacted model (tested), at the
  cost of a few integer multiplications instead of a trace.
* **reward** -- :meth:`SearchSpace.accuracy`: top-1 accuracy of the pruned network (no
  fine-tuning) on a validation batch. It is computed with :func:`torch.func.functional_call`
  on weights whose removed channels are zero -- filters, biases and BatchNorm
  ``gamma``/``beta``/``running_mean`` -- which is exactly what :func:`prunekit.compact`
  computes (see :mod:`prunekit.core.graph`), without copying the model.
* **the budget wall** -- :meth:`SearchSpace.clip_removed`: AMC's action-space restriction
  (He et al., ECCV 2018, Sec. 3.3). When the agent decides layer ``t``, the layers before
  are fixed and every later layer is assumed pruned as hard as allowed (``max_ratio``); the
  action is raised to the least pruning that still lets the MAC budget be met. So every
  episode ends at or under the budget (a property test checks it for arbitrary actions).

The reward batch should be a *validation split*: data the model was not trained on and that
the final test never uses (a search that selects on test images reports a biased result; one
that selects on training images rewards memorisation). :func:`as_batch` turns a loader
into one batch, e.g. ``as_batch(pk.data.digits(validation=0.5)[1])`` for the 225 validation
images of the digits, which no zoo model was trained on. (AMC and MetaPruning score
candidates on images split off the training set, which their networks were not trained on.)

>>> import torch, prunekit as pk
>>> from prunekit.methods.learned.search_space import SearchSpace
>>> space = SearchSpace(pk.zoo.load("cnn-digits"), torch.zeros(1, 1, 8, 8))
>>> space.names
('features.0', 'features.4', 'features.8', 'classifier.2')
>>> space.sizes, space.total_macs
((16, 32, 64, 64), 161408)
>>> space.kept([0.5, 0.5, 0.25, 0.0])
[8, 16, 48, 64]
>>> space.macs([0.5, 0.5, 0.25, 0.0]) == pk.count_macs(space.compact([0.5, 0.5, 0.25, 0.0]), torch.zeros(1, 1, 8, 8))[0]
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import nn

from ..._validate import check_int, check_model, check_number
from ...core.masks import apply_masks
from ...metrics import count_macs
from ...core.graph.channels import plan_channels
from ...core.masks import copy_model
from ...structured.compact import compact
from ...core.targets import all_parameters

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

__all__ = [
    "LayerInfo", "SearchResult", "SearchSpace", "apply_ratios", "as_batch", "check_budget",
    "STATE_FEATURES",
]

#: The AMC state embedding, in this order (He et al. 2018, Sec. 3.2), each normalised to [0, 1].
STATE_FEATURES = ("index", "c_in", "c_out", "stride", "kernel", "macs", "reduced", "rest", "prev_action")


# --------------------------------------------------------------------------- validators

def check_budget(budget: Any, arg: str = "budget") -> float:
    """A MAC budget as a fraction of the dense model's MACs, in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise TypeError(f"{arg} must be a number in (0, 1] (the fraction of the dense MACs kept), got {budget!r}")
    b = float(budget)
    if not (0.0 < b <= 1.0):
        raise ValueError(f"{arg} must be in (0, 1] (the fraction of the dense MACs kept), got {budget!r}")
    return b


def as_batch(loader: Any, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of ``loader.dataset`` as one ``(inputs, targets)`` batch, in dataset order.

    ``n=None`` (default) takes all of them; an int ``n`` takes ``n`` examples drawn without
    replacement (seeded with ``seed``; all of them if ``n`` is larger than the dataset). For
    the reward of a search, pass a *validation* loader (``pk.data.digits(validation=0.5)[1]``):
    neither the data the model was trained on nor the test split that reports the result.
    """
    n = None if n is None else check_int("n", n, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    dataset = getattr(loader, "dataset", loader)
    size = len(dataset)
    if n is None or n >= size:
        idx = torch.arange(size)
    else:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(size, generator=g)[:n].sort().values
    if hasattr(dataset, "tensors"):
        x, y = dataset.tensors[0], dataset.tensors[1]
        return x[idx].clone(), y[idx].clone()
    items = [dataset[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items])


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class LayerInfo:
    """One searchable channel group (a "layer" of the search)."""

    name: str                  # first producer in module order
    producers: tuple[str, ...]  # modules whose output rows are removed
    size: int                  # channels c
    c_in: int                  # input channels of the first producer
    stride: int
    kernel: int
    macs: int                  # dense MACs of the producers ("FLOPs[t]" of AMC)


@dataclass
class SearchResult:
    """What a search returns: the best per-layer ratios and the trace to plot.

    ``history`` holds one dict per episode (AMC, GNN) or generation (MetaPruning); every
    entry has at least ``"mac_fraction"`` and ``"reward"`` (the accuracy on the validation
    batch) and the ratios it refers to.
    """

    method: str
    names: tuple[str, ...]
    budget: float
    best_ratios: list[float]
    best_reward: float
    best_mac_fraction: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short: the history can hold hundreds of entries
        ratios = ", ".join(f"{n}: {r:.3f}" for n, r in zip(self.names, self.best_ratios))
        return (f"SearchResult({self.method}, budget={self.budget:g}, best_reward={self.best_reward:.4f}, "
                f"best_mac_fraction={self.best_mac_fraction:.4f}, best_ratios={{{ratios}}}, "
                f"history=[{len(self.history)} entries])")

    def trace(self, key: str) -> list:
        """One column of the history, e.g. ``result.trace("reward")``."""
        return [h[key] for h in self.history]


# --------------------------------------------------------------------------- the space

@dataclass(frozen=True)
class _Term:
    """MACs of one Conv/Linear module: ``base * kept_out * kept_in / (out * in)``."""

    base: int
    out_group: int | None      # searched group index, None = fixed
    out_size: int
    in_groups: tuple[tuple[int | None, int], ...]  # (searched group or None, channels)
    rep: int                   # input features per channel (flatten of [N, C, H, W])
    depthwise: bool


class SearchSpace:
    """The channel-ratio search space of ``model`` (see the module docstring).

    ``example_inputs`` -- one example (batch 1 gives per-example MACs), used to trace the
    model and count MACs. ``layers`` -- names of the groups to search (default: every
    prunable group); the others keep all their channels. The model is copied (eval mode);
    it is never modified. Groups that touch constructs the closed form does not model
    (grouped convs, channel shuffles, concatenated producers, norms other than BatchNorm)
    are not searched, and with ``verify=True`` the space checks itself once against
    ``pk.compact`` and ``pk.count_macs`` (half of every layer's channels removed), raising
    ``ValueError`` on a mismatch.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *, layers: Sequence[str] | None = None,
                 verify: bool = True) -> None:
        check_model(model)
        if any(hasattr(m, "weight_mask") for m in model.modules()):
            raise ValueError("model already carries pruning masks; pass an unpruned model "
                             "(or make the masks permanent with pk.remove_masks first)")
        self.example_inputs = example_inputs
        self.model = copy_model(model, fold=False).eval()
        plan = plan_channels(self.model, example_inputs)
        modules = dict(self.model.named_modules())
        position = {n: i for i, n in enumerate(modules)}
        params = all_parameters(self.model)

        # constructs whose channels this closed-form space does not model are left unsearched:
        # grouped convs, channel shuffles / chunks / pinned channels, partitioned groups
        grouped = set(getattr(plan, "grouped", {}) or {})
        constrained = {gi for pairs in [*getattr(plan, "ties", []), getattr(plan, "pins", []),
                                        *[p for parts in getattr(plan, "chunks", []) for p in parts]]
                       for gi, _ in pairs}
        candidates = []
        for gi, g in enumerate(plan.groups):
            if g["fixed"] or g["followers"] or not g["producers"] or g.get("partitions") or gi in constrained:
                continue
            if any(modules[p].weight.shape[0] != g["size"] for p in g["producers"]):
                continue  # a concatenation: the producers are narrower than the group
            touched = set(g["producers"]) | set(g["consumers"]) | set(g["depthwise"])
            if touched & grouped or not all(isinstance(modules[p], _LAYERS) for p in g["producers"]):
                continue
            if not all(isinstance(modules[b], nn.modules.batchnorm._BatchNorm) for b in g["batchnorms"]):
                continue
            producers = tuple(sorted(g["producers"], key=position.__getitem__))
            candidates.append((position[producers[0]], producers, g))
        candidates.sort(key=lambda c: c[0])
        available = [c[1][0] for c in candidates]
        if layers is not None:
            if isinstance(layers, str):
                layers = [layers]
            unknown = [n for n in layers if n not in available]
            if unknown:
                raise ValueError(f"layers names unknown layers {unknown}; the searchable layers of this model are "
                                 f"{available}")
            candidates = [c for c in candidates if c[1][0] in set(layers)]
        if not candidates:
            raise ValueError("model has no prunable channel group to search (its only layers are the input/output)")

        self.total_macs, per_module = count_macs(self.model, example_inputs)
        group_of: dict[str, int] = {}
        self._groups = []
        infos = []
        for i, (_, producers, g) in enumerate(candidates):
            first = modules[producers[0]]
            stride = first.stride[0] if isinstance(first, nn.Conv2d) else 1
            kernel = first.kernel_size[0] if isinstance(first, nn.Conv2d) else 1
            c_in = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
            infos.append(LayerInfo(producers[0], producers, g["size"], int(c_in), int(stride), int(kernel),
                                   int(sum(per_module.get(p, 0) for p in producers))))
            for p in producers:
                group_of[p] = i
            self._groups.append(g)
        self.layers: tuple[LayerInfo, ...] = tuple(infos)
        self.names: tuple[str, ...] = tuple(l.name for l in infos)
        self.sizes: tuple[int, ...] = tuple(l.size for l in infos)

        # MAC terms: every Conv/Linear module that the counter saw
        searched_id = {id(g): i for i, g in enumerate(self._groups)}
        consumer_of: dict[str, list] = {}
        depthwise_of: dict[str, int] = {}
        for g in plan.groups:
            gi = searched_id.get(id(g))
            for c in g["consumers"]:
                consumer_of.setdefault(c, []).append((gi, g["size"]))
            for d in g["depthwise"]:
                if gi is not None:
                    depthwise_of[d] = gi
        terms, counted = [], 0
        for name, m in modules.items():
            if not isinstance(m, _LAYERS) or name not in per_module:
                continue
            base = int(per_module[name])
            counted += base
            out_size = int(m.weight.shape[0])
            if name in depthwise_of:
                terms.append(_Term(base, depthwise_of[name], out_size, (), 1, True))
                continue
            ins = tuple(consumer_of.get(name, ()))
            width = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            total_c = sum(c for _, c in ins)
            rep = width // total_c if total_c and width % total_c == 0 else 0
            if rep == 0:  # input structure unknown: its input side is fixed
                ins, rep = ((None, width),), 1
            terms.append(_Term(base, group_of.get(name), out_size, ins, rep, False))
        self._terms = tuple(terms)
        self._other_macs = self.total_macs - counted  # MACs outside Conv/Linear modules (constant)

        # channel order: ascending L1 norm summed over the producers, stable (ties: lower index first)
        self._order = []
        for info in self.layers:
            s = sum(params[f"{p}.weight"].tensor.detach().abs().reshape(info.size, -1).sum(1).double()
                    for p in info.producers)
            self._order.append(torch.sort(s, stable=True).indices)

        # which tensors to zero for a removed channel (what compact removes / zero_removed_channels zeroes)
        self._zero = []
        for g, info in zip(self._groups, self.layers):
            names = []
            for p in list(info.producers) + list(g["depthwise"]):
                names.append(f"{p}.weight")
                if getattr(modules[p], "bias", None) is not None:
                    names.append(f"{p}.bias")
            for b in g["batchnorms"]:
                bn = modules[b]
                names += [f"{b}.{a}" for a in ("weight", "bias", "running_mean") if getattr(bn, a, None) is not None]
            self._zero.append(tuple(names))
        self._state = dict(self.model.state_dict())
        self._static = self._static_features()
        if verify:
            self._verify()

    def _verify(self) -> None:
        """Self-check on half of every layer's channels: the closed-form MACs and the fast forward must equal
        ``pk.count_macs`` and the output of :func:`prunekit.compact` (as ``compact`` checks itself)."""
        ratios = [0.5] * len(self)
        small = self.compact(ratios)
        args = self.example_inputs if isinstance(self.example_inputs, tuple) else (self.example_inputs,)
        with torch.no_grad():
            ref = small(*args)
            out = torch.func.functional_call(self.model, self._zeroed(ratios), args)
        macs = count_macs(small, self.example_inputs)[0]
        if macs != self.macs(ratios) or not torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max()))):
            raise ValueError("SearchSpace does not support a construct of this model (its closed-form MACs or "
                             "its pruned forward disagree with pk.compact); pass layers= to search fewer layers")

    # ----------------------------------------------------------------------- ratios

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"SearchSpace({len(self)} layers {list(self.names)}, sizes {list(self.sizes)}, {self.total_macs:,} MACs)"

    def check_ratios(self, ratios: Any, arg: str = "ratios") -> list[float]:
        """Validate ``ratios`` (a sequence in layer order or a ``{name: ratio}`` dict) -> list."""
        if isinstance(ratios, Mapping):
            unknown = [k for k in ratios if k not in self.names]
            if unknown:
                raise ValueError(f"{arg} names unknown layers {unknown}; the layers are {list(self.names)}")
            missing = [n for n in self.names if n not in ratios]
            if missing:
                raise ValueError(f"{arg} misses layers {missing}; the layers are {list(self.names)}")
            ratios = [ratios[n] for n in self.names]
        if isinstance(ratios, torch.Tensor):
            ratios = ratios.tolist()
        if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
            raise TypeError(f"{arg} must be a sequence of {len(self)} ratios or a {{layer: ratio}} dict, "
                            f"got {type(ratios).__name__}")
        if len(ratios) != len(self):
            raise ValueError(f"{arg} must have one ratio per layer ({len(self)}: {list(self.names)}), got {len(ratios)}")
        return [check_number(f"{arg}[{i}]", r, low=0.0, high=1.0, high_open=True) for i, r in enumerate(ratios)]

    def removed(self, ratios: Any) -> list[int]:
        """Channels removed per layer: ``min(round(r * c), c - 1)``."""
        rs = self.check_ratios(ratios)
        return [min(round(r * c), c - 1) for r, c in zip(rs, self.sizes)]

    def kept(self, ratios: Any) -> list[int]:
        """Channels kept per layer (the widths of the compacted model)."""
        return [c - n for c, n in zip(self.sizes, self.removed(ratios))]

    def ratios_from_kept(self, kept: Sequence[int]) -> list[float]:
        """The ratios ``(c - k) / c`` that keep exactly ``kept`` channels."""
        if len(kept) != len(self):
            raise ValueError(f"kept must have one count per layer ({len(self)}), got {len(kept)}")
        for i, (k, c) in enumerate(zip(kept, self.sizes)):
            if not 1 <= int(k) <= c:
                raise ValueError(f"kept[{i}] must be in 1..{c}, got {k!r}")
        return [(c - int(k)) / c for k, c in zip(kept, self.sizes)]

    # ----------------------------------------------------------------------- MACs

    def macs_of_kept(self, kept: Sequence[int]) -> int:
        """Exact dense MACs of the model that keeps ``kept[i]`` channels of layer ``i``."""
        total = self._other_macs
        for t in self._terms:
            k_out = t.out_size if t.out_group is None else int(kept[t.out_group])
            if t.depthwise:
                total += t.base * k_out // t.out_size
                continue
            k_in = sum(c if gi is None else int(kept[gi]) for gi, c in t.in_groups) * t.rep
            c_in = sum(c for _, c in t.in_groups) * t.rep
            total += t.base * k_out * k_in // (t.out_size * c_in)
        return total

    def expected_macs(self, kept: Sequence[Any]) -> torch.Tensor:
        """The closed form of :meth:`macs_of_kept` for fractional, differentiable widths.

        ``kept[i]`` may be a float or a 0-d tensor, e.g. the *expected* number of open gates
        of layer ``i``. Each term is ``base * k_out * k_in / (out * in)``, bilinear in the
        widths of two different layers, so with independent random gates this is exactly the
        expected MAC count of the gated model (the expectation of a product of independent
        factors is the product of their expectations). Returns a float64 tensor; gradients
        flow to every tensor in ``kept``.
        """
        if len(kept) != len(self):
            raise ValueError(f"kept must have one width per layer ({len(self)}), got {len(kept)}")
        k = [torch.as_tensor(v, dtype=torch.float64) for v in kept]
        total = torch.tensor(float(self._other_macs), dtype=torch.float64)
        for t in self._terms:
            k_out = torch.tensor(float(t.out_size), dtype=torch.float64) if t.out_group is None else k[t.out_group]
            if t.depthwise:
                total = total + t.base * k_out / t.out_size
                continue
            k_in = sum(torch.tensor(float(c), dtype=torch.float64) if gi is None else k[gi]
                       for gi, c in t.in_groups) * t.rep
            c_in = sum(c for _, c in t.in_groups) * t.rep
            total = total + t.base * k_out * k_in / (t.out_size * c_in)
        return total

    def kept_by_scores(self, scores: Sequence[torch.Tensor | None], budget: float) -> list[torch.Tensor]:
        """Keep-masks that meet a MAC ``budget`` by removing the lowest-scored channels first.

        ``scores`` holds one 1-D tensor of channel scores per layer (higher = more important,
        e.g. Network Slimming's ``|gamma|``) or ``None`` for a layer that keeps all its
        channels. Channels are removed one at a time in ascending order of score across all
        scored layers (one global ranking, ties to the earlier layer and lower index), each
        layer keeping at least one channel, until the MACs of the pruned model are at most
        ``budget * total_macs`` -- the same closed form as :meth:`macs`. Returns one bool
        tensor per layer (True = kept). ``ValueError`` if the budget cannot be met.
        """
        budget = check_budget(budget)
        if len(scores) != len(self):
            raise ValueError(f"scores must have one entry per layer ({len(self)}: {list(self.names)}), "
                             f"got {len(scores)}")
        entries = []
        for i, (s, c) in enumerate(zip(scores, self.sizes)):
            if s is None:
                continue
            s = torch.as_tensor(s).detach().reshape(-1)
            if s.numel() != c:
                raise ValueError(f"scores[{i}] has {s.numel()} entries but layer {self.names[i]!r} has {c} channels")
            entries += [(float(v), i, j) for j, v in enumerate(s.tolist())]
        entries.sort()
        limit = math.floor(budget * self.total_macs + 1e-9)
        keep = [torch.ones(c, dtype=torch.bool) for c in self.sizes]
        kept = list(self.sizes)
        for _, i, j in entries:
            if self.macs_of_kept(kept) <= limit:
                break
            if kept[i] > 1:
                keep[i][j] = False
                kept[i] -= 1
        if self.macs_of_kept(kept) > limit:
            raise ValueError(f"budget={budget:g} cannot be met by removing the scored channels "
                             f"(at least {self.macs_of_kept(kept) / self.total_macs:.3f} of the MACs remain)")
        return keep

    def macs(self, ratios: Any) -> int:
        """Exact dense MACs of the pruned (compacted) model, without building it."""
        return self.macs_of_kept(self.kept(ratios))

    def mac_fraction(self, ratios: Any) -> float:
        """``macs(ratios) / total_macs``."""
        return self.macs(ratios) / self.total_macs

    def max_removed(self, max_ratio: float) -> list[int]:
        """The most channels each layer may lose with ratios <= ``max_ratio``: ``min(floor(max_ratio * c), c - 1)``."""
        return [min(math.floor(max_ratio * c + 1e-9), c - 1) for c in self.sizes]

    def check_reachable(self, budget: float, max_ratio: float) -> int:
        """The budget in MACs; ``ValueError`` if pruning every layer at ``max_ratio`` cannot reach it."""
        budget = check_budget(budget)
        max_ratio = check_number("max_ratio", max_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
        limit = math.floor(budget * self.total_macs + 1e-9)
        floor = self.macs_of_kept([c - n for c, n in zip(self.sizes, self.max_removed(max_ratio))])
        if floor > limit:
            raise ValueError(f"budget={budget:g} is unreachable: pruning every layer at max_ratio={max_ratio:g} "
                             f"still leaves {floor / self.total_macs:.3f} of the MACs; raise budget or max_ratio")
        return limit

    def clip_removed(self, t: int, removed: int, prefix: Sequence[int], budget_macs: int, max_ratio: float) -> int:
        """AMC's action wall for layer ``t``: the removed count, raised so the budget stays reachable.

        ``prefix`` holds the removed counts already chosen for layers ``0..t-1``; later
        layers are assumed to lose ``max_removed(max_ratio)``. Returns a count in
        ``[lowest feasible, max_removed[t]]``; with a reachable budget the result of walking
        all layers is always at or under ``budget_macs``.
        """
        n_max = self.max_removed(max_ratio)
        kept = [c - n for c, n in zip(self.sizes, list(prefix) + n_max[len(prefix):])]
        c = self.sizes[t]
        lo, hi = c - n_max[t], c  # find the most channels layer t may keep
        kept[t] = lo
        if self.macs_of_kept(kept) > budget_macs:
            return n_max[t]  # unreachable (only when the budget was not checked): prune as hard as allowed
        while lo < hi:
            mid = (lo + hi + 1) // 2
            kept[t] = mid
            if self.macs_of_kept(kept) <= budget_macs:
                lo = mid
            else:
                hi = mid - 1
        return min(max(int(removed), c - lo), n_max[t])

    def walk(self, actions: Sequence[float], budget: float = 1.0, max_ratio: float = 0.8) -> list[float]:
        """Ratios from raw per-layer actions through the budget wall, layer by layer (AMC's episode).

        Each action is clamped to ``[0, max_ratio]`` (NaN counts as 0), turned into a channel count by the
        round rule, then raised by :meth:`clip_removed`. The returned ratios are ``n / c``.
        """
        limit = self.check_reachable(budget, max_ratio)
        if len(actions) != len(self):
            raise ValueError(f"actions must have one entry per layer ({len(self)}), got {len(actions)}")
        prefix: list[int] = []
        for t, a in enumerate(actions):
            a = 0.0 if math.isnan(float(a)) else min(max(float(a), 0.0), max_ratio)
            c = self.sizes[t]
            prefix.append(self.clip_removed(t, min(round(a * c), c - 1), prefix, limit, max_ratio))
        return [n / c for n, c in zip(prefix, self.sizes)]

    def uniform(self, budget: float, max_ratio: float = 0.99) -> list[float]:
        """The smallest uniform ratio (the same for every layer) whose MACs meet ``budget``.

        Returned as the exact per-layer fractions ``n / c`` it removes (they differ by rounding).
        """
        limit = self.check_reachable(budget, max_ratio)
        lo, hi = 0.0, max_ratio
        if self.macs([lo] * len(self)) <= limit:
            return [0.0] * len(self)
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.macs([mid] * len(self)) <= limit:
                hi = mid
            else:
                lo = mid
        return [n / c for n, c in zip(self.removed([hi] * len(self)), self.sizes)]

    # ----------------------------------------------------------------------- state features

    def _static_features(self) -> torch.Tensor:
        """[L, 6]: index, c_in, c_out, stride, kernel, MACs, each min-max normalised over the layers."""
        raw = torch.tensor([[i, l.c_in, l.size, l.stride, l.kernel, l.macs] for i, l in enumerate(self.layers)],
                           dtype=torch.float64)
        lo, hi = raw.min(0).values, raw.max(0).values
        span = hi - lo
        out = torch.where(span > 0, (raw - lo) / torch.where(span > 0, span, torch.ones_like(span)), raw.clamp(0, 1))
        return out.float()

    def static_features(self) -> torch.Tensor:
        """The static part of AMC's state, ``[L, 6]``, normalised per model (a copy)."""
        return self._static.clone()

    def state(self, t: int, prefix: Sequence[int], prev_action: float) -> torch.Tensor:
        """AMC's state of layer ``t`` (:data:`STATE_FEATURES`) given the removed counts of layers ``0..t-1``.

        ``reduced`` = MACs removed so far / total, ``rest`` = MACs of the later layers / total
        (the producers' own MACs, as in AMC's ``flops_list``), ``prev_action`` = the ratio
        chosen for layer ``t - 1`` (0 at ``t = 0``).
        """
        kept = [c - n for c, n in zip(self.sizes, list(prefix) + [0] * (len(self) - len(prefix)))]
        reduced = (self.total_macs - self.macs_of_kept(kept)) / self.total_macs
        rest = sum(l.macs for l in self.layers[t + 1:]) / self.total_macs
        dyn = torch.tensor([reduced, rest, prev_action], dtype=torch.float32)
        return torch.cat([self._static[t], dyn])

    def edges(self) -> list[tuple[int, int]]:
        """Data-flow edges between layers: ``(i, j)`` when a producer of ``j`` reads the channels of ``i``."""
        out = []
        for i, g in enumerate(self._groups):
            readers = set(g["consumers"])
            for j, info in enumerate(self.layers):
                if i != j and readers & set(info.producers):
                    out.append((i, j))
        return out

    # ----------------------------------------------------------------------- pruned models

    def masks(self, ratios: Any) -> dict[str, torch.Tensor]:
        """Channel keep-masks ``{param name: bool mask}`` for the producers' weights."""
        out = {}
        for info, order, n in zip(self.layers, self._order, self.removed(ratios)):
            keep = torch.ones(info.size, dtype=torch.bool)
            keep[order[:n]] = False
            for p in info.producers:
                w = self._state[f"{p}.weight"]
                out[f"{p}.weight"] = keep.reshape((-1,) + (1,) * (w.dim() - 1)).expand(w.shape).clone()
        return out

    def apply(self, ratios: Any) -> nn.Module:
        """A pruned copy: channel masks applied (``pk.apply_masks``), removed channels' biases and
        BatchNorm entries zeroed, so that it computes what :meth:`compact` computes."""
        masks = self.masks(ratios)
        model = copy.deepcopy(self.model)
        apply_masks(model, masks)
        with torch.no_grad():
            for t, v in self._zeroed(ratios, with_weights=False).items():
                owner, attr = t.rsplit(".", 1)
                getattr(model.get_submodule(owner), attr).copy_(v)
        return model

    def compact(self, ratios: Any) -> nn.Module:
        """The pruned model, physically smaller (:func:`prunekit.compact` of :meth:`apply`)."""
        return compact(self.apply(ratios), self.example_inputs)

    def _zeroed(self, ratios: Any, with_weights: bool = True) -> dict[str, torch.Tensor]:
        out = {}
        for names, order, n in zip(self._zero, self._order, self.removed(ratios)):
            if n == 0:
                continue
            idx = order[:n]
            for name in names:
                if name.endswith(".weight") and not with_weights and name.rsplit(".", 1)[0] in self._producer_set:
                    continue
                t = out.get(name, self._state[name]).clone()
                t[idx] = 0
                out[name] = t
        return out

    @property
    def _producer_set(self) -> frozenset[str]:
        return frozenset(p for l in self.layers for p in l.producers)

    def logits(self, ratios: Any, inputs: torch.Tensor) -> torch.Tensor:
        """Outputs of the pruned model on ``inputs`` (eval mode, no gradient)."""
        with torch.no_grad():
            return torch.func.functional_call(self.model, self._zeroed(ratios), (inputs,))

    def accuracy(self, ratios: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Top-1 accuracy of the pruned model (no fine-tuning) on ``batch = (inputs, targets)``."""
        x, y = batch
        return float((self.logits(ratios, x).argmax(1) == y).float().mean())

    def reward(self, ratios: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The searches' reward: AMC's ``R_err = -error``, reported as accuracy = 1 - error.

        It calls :meth:`accuracy`, so a subclass that overrides ``accuracy`` changes the reward.
        """
        return self.accuracy(ratios, batch)


def apply_ratios(model: nn.Module, ratios: Any, example_inputs: Any) -> nn.Module:
    """A channel-pruned copy of ``model`` with per-layer ``ratios`` (see :class:`SearchSpace`).

    ``model`` is untouched; ``pk.compact(result, example_inputs)`` makes it physically small.
    """
    return SearchSpace(model, example_inputs).apply(ratios)
