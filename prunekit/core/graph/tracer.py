"""Walk a traced model and assign every tensor's channel dim to channel spaces.

:class:`ChannelTracer` visits the fx nodes in order. The model's inputs and parameters
open fixed spaces; every other node is handled by the rule that
:func:`prunekit.core.graph.rules.lookup` finds for it (a node without one is a
*barrier*: the channels reaching it are kept). A few things are decided here, before the
rules, because they cut across all of them:

* a node computed from parameters only (a class token expanded to the batch) is a
  constant, with a fixed space of its own;
* the parts of a ``chunk`` and a channel dim split in several (a shuffle's ``view``) are
  followed by :mod:`.rules.index_split` and :mod:`.rules.reshape`;
* a *gate* (the output of a sigmoid-like activation, nonzero on a removed channel) may
  only be a factor of ``gate * x`` (:mod:`.rules.gate`) or pass through per-channel ops;
* a module with parameters that is called more than once is refused (``ValueError``), as
  is a model that ``torch.fx.symbolic_trace`` cannot trace (``TypeError``, from :mod:`.trace`).

The model's inputs and outputs are fixed spaces: their channels are never removed (the
classifier keeps its classes). The channel dim of a tensor is dim 1 (``[N, C, ...]`` or
``[N, F]``) unless an operation moved it (``self.cdim``): a permute (ConvNeXt's channels-last
``[N, H, W, C]``), or a Linear, which puts its output channels in the last dim
(``[N, L, C]`` tokens).
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils._pytree import tree_flatten

from . import ops
from .rules import lookup
from .spaces import Spaces

__all__ = ["ChannelTracer", "describe"]

_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}


def describe(node: fx.Node, modules: dict) -> str:
    """``node 'x' (module 'a.b': Conv2d)`` or ``node 'y' (call_function cat)``."""
    if node.op == "call_module":
        return f"node {node.name!r} (module {node.target!r}: {type(modules[node.target]).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"node {node.name!r} ({node.op} {target})"


def _construct(node: fx.Node, modules: dict) -> str:
    t = node.target
    if t in (torch.cat, torch.concat, torch.stack):
        return "concatenation/stacking along a dim other than the channels"
    if t in (torch.flatten, torch.reshape, torch.squeeze) or (
            node.op == "call_method" and t in ("flatten", "view", "reshape", "squeeze")):
        return "reshape other than [N, C, ...] -> [N, C * ...] (e.g. a channel shuffle)"
    if t in (torch.split, torch.chunk, operator.getitem) or (node.op == "call_method" and t in ("split", "chunk")):
        return "split/indexing"
    if node.op == "call_module":
        m = modules[t]
        if isinstance(m, ops.CONVS) and m.groups > 1:
            return f"grouped convolution (groups={m.groups}, only depthwise is supported)"
        if isinstance(m, (*ops.CONVS, *ops.BATCHNORMS)):
            return "conv/BatchNorm on a flattened input"
        if isinstance(m, nn.MultiheadAttention):
            return "attention"
        if isinstance(m, nn.Linear):
            return "Linear on an input with more than 2 dims"
        return f"module type {type(m).__name__}"
    if t in (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div):
        return "tensor * tensor (gating/attention)"
    if t in (operator.add, operator.iadd, torch.add):
        return "addition of a constant or of tensors with different shapes/layouts"
    if t in (torch.matmul, torch.bmm, operator.matmul, nn.functional.scaled_dot_product_attention):
        return "matrix product / attention"
    return "an operation channel surgery has no rule for"


class ChannelTracer(Spaces):
    """Channel spaces of a traced model (see the module docstring and :mod:`.spaces`)."""

    def __init__(self, gm: fx.GraphModule, modules: dict):
        super().__init__()
        self.gm, self.modules = gm, modules
        self.info: dict[fx.Node, list | None] = {}
        self.module_in: dict[str, list] = {}   # Conv/Linear -> segments of its input columns
        self.module_out: dict[str, list] = {}  # Conv/Linear/depthwise conv -> segments of its output rows
        self.bn_in: dict[str, list] = {}       # BatchNorm -> segments of its channels
        self.norm_in: dict[fx.Node, tuple[int, list]] = {}  # channel-norm node -> (its channel dim, segments)
        self.norm_owner: dict[fx.Node, str | None] = {}  # channel-norm node -> module holding normalized_shape
        self.gates: set[fx.Node] = set()       # outputs of gate activations (nonzero on removed channels)
        self.cdim: dict[fx.Node, int] = {}     # which dim of the tensor holds the channels (default 1)
        self.consts: set[fx.Node] = set()      # parameters/buffers (get_attr) and what is computed from them only
        self.attr_in: dict[str, tuple[int, list]] = {}  # per-channel parameter -> (its channel dim, segments)
        self.grouped: dict[str, int] = {}      # grouped (not depthwise) conv -> groups
        self.multi: dict[fx.Node, list] = {}   # chunk/split along the channels -> segments of each part
        # a channel dim split into several dims (a shuffle's view): node -> (segments, P, dims), P holding
        # the original channel position at each index of the split dims ``dims`` (ascending)
        self.factored: dict[fx.Node, tuple[list, torch.Tensor, list[int]]] = {}
        self.ties: list[list[tuple[int, int]]] = []  # (space, channel)s a shuffle keeps or removes together
        self.chunks: list[list[list[tuple[int, int]]]] = []  # a chunk's parts: each must keep as many
        self.pins: list[tuple[int, int]] = []  # (space, channel)s a constant slice needs where they are
        self.follows: list[tuple[int, int, str]] = []  # (gate space, data space, where): gate keeps data's channels
        self.const_root: dict[fx.Node, tuple[str, int]] = {}  # constant -> (parameter it repeats, that dim offset)
        # ints computed from a tensor's channel count (``C = x.shape[1]``, ``C // g``): -> (tensors, direct)
        self.size_reads: dict[fx.Node, tuple[set, bool]] = {}
        self.accepted: dict[fx.Node, set] = {}  # node -> the size reads its rule follows with the channels
        self.size_claims: list[tuple[fx.Node, fx.Node]] = []  # (size read, tensor it must size): checked at the end

    # --- helpers for rules ----------------------------------------------------------
    @staticmethod
    def shape(node) -> torch.Size | None:
        if not isinstance(node, fx.Node):
            return None
        tm = node.meta.get("tensor_meta")
        return getattr(tm, "shape", None)

    def fresh_for(self, node: fx.Node) -> list | None:
        shape = self.shape(node)
        if shape is None:
            return None
        return [(self.new(shape[1] if len(shape) >= 2 else 0, fixed=True), 1, None)]

    def cd(self, node: fx.Node) -> int:
        """The channel dim of ``node``'s tensor (1 unless a permute or a Linear moved it)."""
        return self.cdim.get(node, 1)

    def where(self, node: fx.Node) -> str:
        return describe(node, self.modules)

    def barrier(self, node: fx.Node, inputs, why: str | None = None, output: bool = True) -> list | None:
        """The channels of ``inputs`` cannot pass ``node``: they are kept (``why`` says why; default:
        a description of the construct). The output, if any, is a fixed space of its own, also kept."""
        what = f"{describe(node, self.modules)}: {why or _construct(node, self.modules)}"
        for a in inputs:
            for sid, *_ in self.info.get(a) or []:
                self.space(sid).barriers.append(what)
        if not output:
            return None
        out = self.fresh_for(node)
        so = self.shape(node)
        dims = {self.cd(a) for a in inputs if self.info.get(a) is not None and a not in self.consts}
        if out is not None and len(dims) == 1 and so is not None:  # keep following the inputs' channel dim
            d = dims.pop()
            shapes = [self.shape(a) for a in inputs if a not in self.consts]
            if d < len(so) and all(sh is not None and len(sh) == len(so) and sh[d] == so[d] for sh in shapes):
                out = [(self.new(so[d], fixed=True), 1, None)]
                self.cdim[node] = d
        if out is not None:  # what comes out is opaque too: whatever joins it may not lose channels
            self.space(out[0][0]).barriers.append(what)
        return out

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        out = []
        for a in list(node.args) + list(node.kwargs.values()):
            for x in tree_flatten(a)[0]:
                if isinstance(x, fx.Node) and self.info.get(x) is not None:
                    out.append(x)
        return out

    def unit(self, node: fx.Node) -> bool:
        """Whether every segment of ``node`` is one channel per space channel (no flatten)."""
        return all(rep == 1 for _, rep, _ in self.info[node])

    def whole(self, node: fx.Node) -> bool:
        """Whether every segment of ``node`` is a whole space in its own order (no shuffle/split)."""
        return all(idx is None for *_, idx in self.info[node])

    def same_channels(self, a: fx.Node, b: fx.Node) -> bool:
        """Whether ``a`` and ``b`` lay out their channels alike (same dim, segment sizes, repeats)."""
        ia, ib = self.info[a], self.info[b]
        return (self.cd(a) == self.cd(b) and len(ia) == len(ib) and self.whole(a) and self.whole(b)
                and all(ra == rb and self.space(sa).size == self.space(sb).size
                        for (sa, ra, _), (sb, rb, _) in zip(ia, ib)))

    def merge(self, node: fx.Node, a: fx.Node, b: fx.Node) -> list:
        """One group for the channels of ``a`` and ``b`` (a residual addition)."""
        where = describe(node, self.modules)
        self.cdim[node] = self.cd(a)
        return [(self.union(sa, sb, where), ra, None) for (sa, ra, _), (sb, _, _) in zip(self.info[a], self.info[b])]

    def passthrough(self, node: fx.Node, src: fx.Node, spatial: bool = False) -> list | None:
        """Same channels out as in; ``spatial`` ops (pooling) need the channels at dim 1."""
        si, so = self.shape(src), self.shape(node)
        d = self.cd(src)
        if si is None or so is None or len(si) < 2:
            return self.barrier(node, [src])
        if spatial:
            if d != 1 or len(so) < 2 or si[:2] != so[:2]:
                return self.barrier(node, [src])
        elif len(so) != len(si) or so[d] != si[d] or so[0] != si[0]:
            return self.barrier(node, [src])
        self.cdim[node] = d
        return self.info[src]

    def producer(self, name: str, size: int) -> list:
        """A Conv/Linear output: a new space that ``name`` produces (it votes)."""
        out = self.new(size)
        self.space(out).producers.append(name)
        self.module_out[name] = [(out, 1, None)]
        return [(out, 1, None)]

    def consumer(self, name: str, src: fx.Node) -> None:
        """``name`` reads ``src``'s channels as its input columns (sliced with them)."""
        for sid, rep, _ in self.info[src]:
            self.space(sid).consumers.append((name, rep))
        self.module_in[name] = self.info[src]

    def member_param(self, name: str, dim: int, src: fx.Node | list) -> bool:
        """Parameter/buffer ``name`` (qualified) varies along ``src``'s channels at its dim ``dim``:
        it is sliced with them (and zeroed on removed channels by ``zero_removed_channels``).
        Returns False (nothing recorded) if it is already a member of other channels."""
        segs = self.info[src] if isinstance(src, fx.Node) else src
        if name in self.attr_in:
            old = self.attr_in[name]
            return old[0] == dim and [s for s, *_ in old[1]] == [s for s, *_ in segs]
        self.attr_in[name] = (dim, segs)
        for sid, *_ in segs:
            self.space(sid).params.append(name)
        return True

    # --- the walk ---------------------------------------------------------------------
    def run(self) -> "ChannelTracer":
        counts: dict[str, int] = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                m = self.modules[node.target]
                if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
                    counts[node.target] = counts.get(node.target, 0) + 1
                    if counts[node.target] > 1:
                        raise ValueError(
                            f"module {node.target!r} ({type(m).__name__}) is called more than once (a "
                            "reused module with parameters); channel surgery does not support shared layers"
                        )
        for node in self.gm.graph.nodes:
            self.info[node] = self.visit(node)
            if self.info[node] is not None and node.op != "output" and self.gate_like(node):
                self.gates.add(node)
        self._check_size_claims()
        return self

    def _check_size_claims(self) -> None:
        """A view sized by a tensor's channel count is exact if that tensor ends in the same group as
        the viewed one (or one is a gate following the other); else both keep their channels."""
        follow = {self.find(g): self.find(d) for g, d, _ in self.follows}
        lead = lambda sid: follow.get(self.find(sid), self.find(sid))  # noqa: E731
        for arg, src in self.size_claims:
            roots = [(lead(sid), rep) for sid, rep, _ in self.info[src]]
            for t in self.size_reads[arg][0]:
                if self.whole(t) and [(lead(sid), rep) for sid, rep, _ in self.info[t]] == roots:
                    continue
                what = (f"{describe(arg, self.modules)}: the channel count of {t.name!r} sizes a view of "
                        f"{src.name!r}, which has other channels")
                for sid, *_ in list(self.info[t]) + list(self.info[src]):
                    self.space(sid).barriers.append(what)

    def gate_like(self, node: fx.Node, visited: bool = True) -> bool:
        """A gate activation, or a per-channel op (or reshape) on a gate's output."""
        if node.op not in ("call_module", "call_function", "call_method"):
            return False
        kind = ops.kind_of(node, self.modules)
        if kind is not None and kind.gate:
            return True
        t = node.target
        if node.op == "call_function":
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if t in (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div) \
                    and len(tensors) == 1 and tensors[0] in self.gates:  # 2 * gate is a gate
                return True
        passes = (kind is not None and kind.zero_to_zero) or (
            node.op == "call_function" and t in _RESHAPE_FUNCTIONS) or (
            node.op == "call_method" and t in _RESHAPE_METHODS)
        return (passes and bool(node.args) and node.args[0] in self.gates
                and (not visited or self.info.get(node) == self.info.get(node.args[0])))  # same channels

    def visit(self, node: fx.Node) -> list | None:
        if node.op == "placeholder":
            return self.fresh_for(node)
        if node.op == "get_attr":
            self.consts.add(node)
            self.const_root[node] = (node.target, 0)
            return self.fresh_for(node)
        if node.op == "output":
            for a in self.tensor_args(node):
                for sid, *_ in self.info[a]:
                    self.space(sid).fixed = True
            return None
        args = self.tensor_args(node)
        tm = node.meta.get("tensor_meta")
        if tm is None:
            self._size_read(node)
            return None  # sizes, shapes, ints: no channels involved
        out = self._visit(node, args, tm)
        self._check_size_reads(node)
        return out

    def _size_read(self, node: fx.Node) -> None:
        """Remember ints that are a tensor's channel count (``x.shape[1]``, ``x.size(1)``) or computed from one."""
        src, i = None, None
        a0 = node.args[0] if node.args else None
        if node.op == "call_method" and node.target == "size" and len(node.args) == 2:
            src, i = node.args
        elif node.op == "call_function" and node.target is operator.getitem and isinstance(a0, fx.Node):
            if a0.op == "call_function" and a0.target is getattr and a0.args[1] == "shape":
                src, i = a0.args[0], node.args[1]
            elif a0.op == "call_method" and a0.target == "size" and len(a0.args) == 1:
                src, i = a0.args[0], node.args[1]
        shape = self.shape(src)
        if isinstance(i, int) and shape is not None and self.info.get(src) is not None \
                and i % len(shape) == self.cd(src) and src not in self.consts:
            self.size_reads[node] = ({src}, True)
            return
        reads = [a for a in node.all_input_nodes if a in self.size_reads]
        if reads:
            self.size_reads[node] = (set().union(*(self.size_reads[a][0] for a in reads)), False)

    def _check_size_reads(self, node: fx.Node) -> None:
        """A channel count read by a node whose rule does not follow it (``torch.zeros(N, C)``, a view
        sized by another tensor): the compacted model would read the shrunk count there, so the
        channels of the tensors it was read from are kept."""
        ok = self.accepted.get(node, set())
        for a in node.all_input_nodes:
            if a in self.size_reads and a not in ok:
                for t in self.size_reads[a][0]:
                    for sid, *_ in self.info.get(t) or []:
                        self.space(sid).barriers.append(
                            f"{describe(node, self.modules)}: uses the channel count of {t.name!r} "
                            "(it would change with the channels)")

    def _visit(self, node: fx.Node, args: list, tm) -> list | None:
        if args and all(a in self.consts for a in args) and node.op != "call_module":
            self.consts.add(node)  # computed from parameters only (e.g. a class token expanded)
            self._follow_const(node, args)
            return self.fresh_for(node) if isinstance(tm, TensorMetadata) else None
        special = [a for a in args if a in self.multi or a in self.factored]
        if special:  # parts of a chunk/split, or a channel dim split in several (a shuffle)
            from .rules import index_split, reshape
            src = special[0]
            if src in self.multi:
                return index_split.part(self, node, src, args)
            return reshape.on_factored(self, node, src, args)
        rule = lookup(node, self.modules)
        if rule is not None and rule.multi_output:
            return rule.fn(self, node, args)
        if not isinstance(tm, TensorMetadata):  # several tensors out (split, chunk, ...)
            return self.barrier(node, args)
        if any(a in self.gates for a in args) and not (
                self.gate_like(node, visited=False) or (node.op == "call_function" and node.target in (operator.mul, torch.mul))):
            return self.barrier(node, args, "a sigmoid-like gate (nonzero on removed channels) used other "
                                "than as a factor of gate * x")
        if rule is None:
            return self.barrier(node, args)
        if node.op == "call_module" and rule.single_input:
            src = args[0] if args else None
            if src is None or len(args) != 1 or (node.args[0] if node.args else None) is not src:
                return self.barrier(node, args)
        return rule.fn(self, node, args)

    def _follow_const(self, node: fx.Node, args: list) -> None:
        """Remember which parameter a constant repeats along its trailing dims (``p.expand(N, -1, -1)``)."""
        src = node.args[0] if node.args else None
        if len(args) != 1 or src is not args[0] or src not in self.const_root:
            return
        name = getattr(node.target, "__name__", node.target)
        if name in ("expand", "expand_as", "contiguous", "clone", "detach", "to", "type_as"):
            ss, so = self.shape(src), self.shape(node)
            if ss is not None and so is not None and len(so) >= len(ss):
                root, off = self.const_root[src]
                self.const_root[node] = (root, off + len(so) - len(ss))
