"""Surgery: turn channel masks into a physically smaller model.

:func:`compact` takes a model whose Conv/Linear weights carry channel masks (the
``torch.nn.utils.prune`` reparametrisation ``weight_orig`` + ``weight_mask``, e.g. from
``pk.prune(model, 0.5, granularity="channel", scope="layer")``) and returns a *new*
model (a deep copy; the input is untouched) whose layers are really smaller, so its
parameter count and MACs drop -- the "universal speedup" of structured pruning.

How it works
------------
The model is traced with :func:`torch.fx.symbolic_trace` and every tensor's channel
dimension is assigned a *channel space*. The channel dimension is dim 1 (``[N, C, ...]``
or ``[N, F]``) unless an operation moved it: a ``permute``/``transpose`` moves it
(ConvNeXt's channels-last ``[N, H, W, C]``), a Linear puts its output channels in the
last dim (``[N, L, C]`` tokens). Spaces that must keep the same channels are merged
into one *group* (cf. Torch-Pruning's dependency graph, Fang et al., CVPR 2023):

* a Conv/Linear output opens a space; its *producer* is that layer. A Linear acts on
  the last dim, so its input channels must be there (``[N, F]``, ``[N, L, C]``,
  ``[N, H, W, C]``); a Linear over another dim is a barrier for the tracked channels;
* BatchNorm, activations with ``f(0) = 0`` (ReLU, ReLU6, LeakyReLU, GELU, SiLU, ELU,
  Tanh, Hardswish), pooling (max, average, adaptive; channels at dim 1), dropout,
  identity, ``x * scalar`` and reductions over dims other than the batch and the
  channels pass a space through unchanged (BatchNorm entries are *members* of the
  group);
* ``x * p`` or ``x / p`` with ``p`` a parameter or buffer keeps ``x``'s channels (a
  zero stays zero); when ``p`` varies along the channels -- ConvNeXt's layer scale, a
  ``[C, 1, 1]`` parameter -- it is a member, sliced with the channels;
* ``permute``/``transpose`` keep the channels and move their dim; a reshape that only
  merges or splits the dims before or after the channels keeps them (``[N, C, H, W] ->
  [N, C, H*W]``, ``[N, L, C] -> [N*L, C]``); indexing that leaves the channel dim whole
  (``x[:, 0]``, ViT's class token) keeps them;
* **channel positions.** A segment may hold a space's channels in another order or only
  some of them; then the tracer follows each channel position. ``chunk(n)`` along the
  channels gives each part its positions; the compacted model chunks its own channels
  into ``n`` equal parts, so every part must keep as many as the others (**rule:** the
  parts that keep fewer keep, in addition, their lowest removed positions). A constant
  slice ``x[:, a:b]`` is sliced at the same positions in the compacted model, so the
  channels at positions ``< b`` are *pinned* (kept). ``split`` with given sizes is
  unsupported;
* a **channel shuffle** (ShuffleNet: ``view(N, g, C/g, H, W)``, ``transpose(1, 2)``,
  ``view(N, C, H, W)``): a view that splits the channel dim into factors, with exactly
  one factor computed at run time (``C // g``) and the others constants (``g``), is
  followed through permutes/transposes/``contiguous`` until a view merges the factors
  back; the channels then sit in the permuted order. The compacted model splits its
  own channels by the same constant ``g``, so the ``g`` channels that share an index
  of the run-time factor (those the shuffle interleaves) are *tied*: **rule:** kept
  all together if the vote keeps any of them (the union rule again). A ShuffleNetV2
  thus compacts with every conv pruned, but independent per-layer masks rarely agree
  on a tied set (each stride-1 unit ties the passed-through half to the new branch),
  so the shuffled channels mostly stay: prune them consistently to remove them;
* a residual addition ``a + b`` merges the spaces of ``a`` and ``b``;
* a concatenation along the channels (``torch.cat(xs, dim=1)``) lays the spaces of its
  parts side by side: each part keeps its own channels, at its own offset (DenseNet,
  GoogLeNet/Inception); a BatchNorm or conv after it indexes all parts;
* a squeeze-and-excitation product ``gate * x`` (the gate from a sigmoid/hardsigmoid,
  shape ``[N, C, 1, 1]``) couples the gate's channels to those of ``x``: a removed
  channel of ``x`` is zero whatever the gate, so the gate's producer is sliced alike
  but does not vote (MobileNetV3, EfficientNet). A product of two ungated tensors of
  equal shape merges their groups; a gate used any other way (its value at a removed
  channel is not zero) is unsupported; stochastic depth passes through;
* a depthwise conv (``groups == in_channels == out_channels``) keeps the space of its
  input: its filters and biases are members, removed with the channels of its input
  (a zero input channel gives a zero output once the bias entry is zero). It does not
  vote: a channel only the depthwise conv masks stays, as a zero filter;
* a **grouped conv** with ``g`` groups (``1 < g``, not depthwise: RegNet, ResNeXt)
  keeps ``g``: its input space and its output space stay separate groups (a removed
  input channel is zero, so its columns can go whatever the outputs do), but each is
  split into ``g`` equal consecutive *parts* (the conv's groups) that must keep the
  same number of channels. **Rule:** after the vote, every part keeps as many channels
  as the part that keeps the most; a part that keeps fewer keeps, in addition, its
  lowest-indexed removed channels (the union rule: never fewer than the masks keep).
  A space read or written by several grouped convs is balanced for each of their
  ``g`` until all hold. Each group of the compacted conv keeps its own columns (the
  input part's kept channels), so ``groups`` is unchanged and the weight is
  ``[g * out_per_group, in_per_group, k, k]``. (Torch-Pruning also keeps ``g`` and
  removes the same positions in every group; here the masks may differ per group.)
  A grouped conv on a concatenation is unsupported;
* **LayerNorm, GroupNorm, RMSNorm** (module or functional, e.g. torchvision's
  ``LayerNorm2d``) normalise *across* the channels: the mean and variance over ``C``
  channels, one of them zero, differ from those over the ``C - 1`` others, so no
  channel of a normalised space can be removed exactly. Their input space is a
  *barrier* (the channels are kept; masks that remove any raise ``ValueError``); the
  output is the same space. In a ConvNeXt or ViT the residual stream is normalised in
  every block, so the stream and everything added into it (stem/patch embedding,
  depthwise convs on the stream, the MLP output projections) keep their channels, and
  what can be pruned is the MLP hidden channels (``Linear(C, 4C) -> GELU ->
  Linear(4C, C)``), which reach no norm;
* flatten (``nn.Flatten``, ``torch.flatten``, ``view``/``reshape`` to ``[N, -1]``) of
  ``[N, C, H, W]`` maps channel ``c`` to the ``H*W`` consecutive features
  ``c*H*W ... (c+1)*H*W - 1`` of the following Linear;
* a Conv/Linear input dimension is a *consumer* of the space it reads.

The model's inputs and outputs are fixed spaces: their channels are never removed
(the classifier keeps its classes).

Which channels go
-----------------
A channel is *masked* in a layer when its whole output row/filter mask is False. A
channel of a group is **removed only when every producer of the group masks it**
(the union of kept channels is kept; depthwise convs and gate producers do not vote),
so a residual stage loses a channel only if all the convs that add into it dropped it.
The constraints above then only add kept channels, until all hold together: grouped-conv
parts balanced, shuffle ties whole, chunk parts equal, slice prefixes pinned; then the
model's outputs keep everything. Removing a channel deletes it from every
member: the producers' rows and biases, the BatchNorm entries (``weight``, ``bias``,
``running_mean``, ``running_var``), depthwise filters, and the consumers' input
columns. Masks that are not channel-structured (scattered zeros) stay as plain zeros
in the compacted weights; the compacted model has no masks and no hooks.

Semantics of a removed channel (read this)
------------------------------------------
A masked filter outputs zeros, but the masked model does *not* output zeros on that
channel when a conv bias or a BatchNorm follows: BatchNorm turns the zero into the
constant ``beta - gamma * running_mean / sqrt(running_var + eps)``, which then flows
into the next layer (and, through zero padding, differently at the borders). Removing
the channel removes that constant too. That is what "removing a filter" means in
Torch-Pruning and in the filter-pruning literature (Li et al. 2017; Liu et al. 2017):
the channel, its bias and its BatchNorm entry go together. So the contract is

    ``compact(model, x)(y) == zero_removed_channels(model, x)(y)``

(up to float rounding), where :func:`zero_removed_channels` sets, for every channel
that :func:`compact` removes, the producers' and depthwise convs' bias entries and the
group's BatchNorm ``weight``, ``bias`` and ``running_mean`` entries to zero, so the
masked model really outputs zero on it. When those entries are already zero -- no
biases, and freshly initialised BatchNorm or BatchNorm without a learned shift -- the
compacted model equals the masked model as it is. :func:`compact` checks its own result against this
reference on ``example_inputs`` (in eval mode) and raises ``RuntimeError`` if they
differ, so it never returns a silently wrong model.

Unsupported constructs
----------------------
``split`` with given sizes, indexing the channels other than by a slice, a channel
shuffle whose sizes are all constants, grouped convs on a concatenation or on shuffled
channels, attention, additions of a constant
(a position embedding) and concatenation with one (a class token), LayerNorm/GroupNorm
over removed channels (see above), activations with ``f(0) != 0`` (sigmoid) outside a
gate, pooling over the channel dim, and any other operation compact does not know raise
a ``ValueError`` naming the node and the construct -- but only when channels that the
masks remove would flow into it; channels that reach them untouched are simply kept.
So in a ViT the MLP hidden channels can be pruned (attention heads are pruned by
another path). Concatenation along a dim other than the channels (tokens) merges the
parts' channel spaces.
Modules with parameters that are called more than once, and models that
``torch.fx.symbolic_trace`` cannot trace, raise a ``ValueError`` / ``TypeError``.

Shared (tied) parameters
------------------------
A parameter used by several modules (a language model's embedding and output head, two
layers sharing ``.weight``) stays one parameter, shared by the same modules, in the
compacted model: the channels that would slice it (for one of its modules but not the
others) are kept, as with the model's outputs, so it is never sliced.
"""

from __future__ import annotations

import copy
import inspect
import math
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.utils import prune as torch_prune
from torch.utils._pytree import tree_flatten

from ..core.guards import example_inputs_fit, read_only
from ..core.targets import all_parameters

__all__ = ["compact", "zero_removed_channels", "plan_channels"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Modules that act on each channel separately and map a zero channel to zero.
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Hardswish,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
)
_F = nn.functional
_PASS_FUNCTIONS = {
    torch.relu, _F.relu, _F.relu6, _F.leaky_relu, _F.gelu, _F.silu, _F.elu, torch.tanh,
    _F.hardswish, _F.dropout, _F.dropout1d, _F.dropout2d, _F.dropout3d,
    _F.max_pool1d, _F.max_pool2d, _F.max_pool3d, _F.avg_pool1d, _F.avg_pool2d, _F.avg_pool3d,
    _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d, _F.adaptive_avg_pool3d,
    _F.adaptive_max_pool1d, _F.adaptive_max_pool2d, _F.adaptive_max_pool3d, _F.interpolate,
}
_PASS_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone", "detach"}
#: Pass-through ops that work on the spatial dims ``2:``: the channels must be dim 1.
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
)
_SPATIAL_FUNCTIONS = {
    _F.max_pool1d, _F.max_pool2d, _F.max_pool3d, _F.avg_pool1d, _F.avg_pool2d, _F.avg_pool3d,
    _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d, _F.adaptive_avg_pool3d,
    _F.adaptive_max_pool1d, _F.adaptive_max_pool2d, _F.adaptive_max_pool3d, _F.interpolate,
    _F.dropout1d, _F.dropout2d, _F.dropout3d,
}
_PERMUTE = {torch.permute, torch.transpose, torch.swapaxes, torch.swapdims}
_PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "swapdims"}
#: Norms over the channels: a removed (zero) channel changes the statistics of the others.
_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)
_NORM_FUNCTIONS = {_F.layer_norm, _F.group_norm, _F.rms_norm, _F.local_response_norm}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_FLATTEN = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_MEAN = {torch.mean, torch.amax, torch.sum}
_MEAN_METHODS = {"mean", "amax", "sum"}
_CAT = {torch.cat, torch.concat}
#: Gate activations (f(0) != 0): allowed only on the gate of a ``gate * x`` product.
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_GATE_FUNCTIONS = {torch.sigmoid, _F.sigmoid, _F.hardsigmoid}
_GATE_METHODS = {"sigmoid"}
#: Identity in eval, whole samples zeroed in training: a zero channel stays zero.
_PASS_MODULE_NAMES = {"StochasticDepth"}
_PASS_FUNCTION_NAMES = {"stochastic_depth"}  # torchvision.ops, traced as a leaf function


@dataclass
class _Space:
    size: int
    fixed: bool = False
    producers: list = field(default_factory=list)   # module names (Conv/Linear/depthwise)
    bns: list = field(default_factory=list)          # BatchNorm module names
    depthwise: list = field(default_factory=list)    # depthwise conv module names
    consumers: list = field(default_factory=list)    # (module name, repeat)
    barriers: list = field(default_factory=list)     # descriptions of unsupported users
    partitions: list = field(default_factory=list)   # group counts of the grouped convs reading/writing it


@dataclass
class ChannelPlan:
    """The groups :func:`compact` found and the channels it keeps in each.

    ``groups`` lists, per group, a dict with ``producers`` (they vote), ``followers``
    (squeeze-and-excitation gate producers: sliced, no vote), ``batchnorms``,
    ``depthwise``, ``consumers`` (module names), ``partitions`` (the group counts of
    the grouped convs that read or write it: each of that many equal parts keeps the
    same count), ``size``, ``fixed`` and ``kept`` (a sorted ``LongTensor`` of kept
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

    def removed(self) -> int:
        """How many channels are removed over all groups."""
        return sum(g["size"] - len(g["kept"]) for g in self.groups)


def _describe(node: fx.Node, modules: dict) -> str:
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
        if isinstance(m, _CONV) and m.groups > 1:
            return f"grouped convolution (groups={m.groups}, only depthwise is supported)"
        if isinstance(m, (*_CONV, *_BN)):
            return "conv/BatchNorm on a flattened input"
        if isinstance(m, nn.MultiheadAttention):
            return "attention"
        if isinstance(m, nn.Linear):
            return "Linear on an input with more than 2 dims"
        return f"module type {type(m).__name__}"
    if t in _MUL:
        return "tensor * tensor (gating/attention)"
    if t in _ADD:
        return "addition of a constant or of tensors with different shapes/layouts"
    if t in (torch.matmul, torch.bmm, operator.matmul, _F.scaled_dot_product_attention):
        return "matrix product / attention"
    return "an operation channel surgery has no rule for"


class _Tracer:
    """Walks the fx graph and builds channel spaces (union-find).

    A tensor's channel dim is described by a list of *segments* ``(space, repeat, idx)``,
    one per concatenated part: a segment covers ``size * repeat`` consecutive channels
    (features), channel ``c`` of the space being the ``repeat`` features from ``c * repeat``.
    """

    def __init__(self, gm: fx.GraphModule, modules: dict):
        self.gm, self.modules = gm, modules
        self.parent: list[int] = []
        self.spaces: list[_Space] = []
        self.info: dict[fx.Node, list | None] = {}
        self.module_in: dict[str, list] = {}
        self.module_out: dict[str, list] = {}
        self.bn_in: dict[str, list] = {}
        self.gates: set[fx.Node] = set()  # outputs of gate activations (nonzero on removed channels)
        self.cdim: dict[fx.Node, int] = {}  # which dim of the tensor holds the channels (default 1)
        self.consts: set[fx.Node] = set()  # parameters/buffers (get_attr) and what is computed from them only
        self.attr_in: dict[str, tuple[int, list]] = {}  # per-channel parameter -> (its channel dim, segments)
        self.grouped: dict[str, int] = {}  # grouped (not depthwise) conv -> groups
        self.multi: dict[fx.Node, list] = {}  # chunk/split along the channels -> segments of each part
        # a channel dim split into several dims (a shuffle's view): node -> (segments, P, dims), P holding
        # the original channel position at each index of the split dims ``dims`` (ascending)
        self.factored: dict[fx.Node, tuple[list, torch.Tensor, list[int]]] = {}
        self.ties: list[list[tuple[int, int]]] = []  # (space, channel)s a shuffle keeps or removes together
        self.chunks: list[list[list[tuple[int, int]]]] = []  # a chunk's parts: each must keep as many
        self.pins: list[tuple[int, int]] = []  # (space, channel)s a constant slice needs where they are
        self.follows: list[tuple[int, int, str]] = []  # (gate space, data space, where): gate keeps data's channels

    # --- union-find -------------------------------------------------------------
    def new(self, size: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(size, fixed))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        sa, sb = self.spaces[a], self.spaces[b]
        if sa.size != sb.size:
            raise ValueError(f"{where} joins channel groups of sizes {sa.size} and {sb.size}, "
                             "which channel surgery cannot follow")
        self.parent[b] = a
        sa.fixed |= sb.fixed
        for f in ("producers", "bns", "depthwise", "consumers", "barriers", "partitions"):
            getattr(sa, f).extend(getattr(sb, f))
        return a

    def space(self, i: int) -> _Space:
        return self.spaces[self.find(i)]

    # --- helpers ------------------------------------------------------------------
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

    def barrier(self, node: fx.Node, inputs, why: str | None = None, output: bool = True) -> list | None:
        what = f"{_describe(node, self.modules)}: {why or _construct(node, self.modules)}"
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
        where = _describe(node, self.modules)
        self.cdim[node] = self.cd(a)
        return [(self.union(sa, sb, where), ra, None) for (sa, ra, _), (sb, _, _) in zip(self.info[a], self.info[b])]

    # --- channel positions: shuffles, splits, slices ---------------------------------------
    def positions(self, segs: list) -> list[tuple[int, int]]:
        """``(space, channel)`` at each channel position (segments of repeat 1)."""
        out = []
        for sid, _, idx in segs:
            chans = range(self.space(sid).size) if idx is None else idx.tolist()
            out.extend((sid, c) for c in chans)
        return out

    def segments(self, pos: list[tuple[int, int]]) -> list:
        """The inverse of :meth:`positions`: runs of one space become one segment."""
        out = []
        for sid, c in pos:
            if out and out[-1][0] == sid:
                out[-1][1].append(c)
            else:
                out.append((sid, [c]))
        segs = []
        for sid, chans in out:
            whole = chans == list(range(self.space(sid).size))
            segs.append((sid, 1, None if whole else torch.tensor(chans, dtype=torch.long)))
        return segs

    # --- the walk -----------------------------------------------------------------
    def run(self) -> None:
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
            if (self.info[node] is not None and node.op != "output" and self.gate_like(node)):
                self.gates.add(node)

    def gate_like(self, node: fx.Node, visited: bool = True) -> bool:
        """A gate activation, or a channel-wise op on a gate's output."""
        t = node.target
        if node.op == "call_module":
            m = self.modules[t]
            if isinstance(m, _GATE_MODULES):
                return True
            passes = isinstance(m, _PASS_MODULES) or type(m).__name__ in _PASS_MODULE_NAMES
        elif node.op == "call_function":
            if t in _GATE_FUNCTIONS:
                return True
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if t in _MUL and len(tensors) == 1 and tensors[0] in self.gates:  # 2 * gate is a gate
                return True
            passes = t in _PASS_FUNCTIONS or t in _FLATTEN or getattr(t, "__name__", None) in _PASS_FUNCTION_NAMES
        elif node.op == "call_method":
            if t in _GATE_METHODS:
                return True
            passes = t in _PASS_METHODS or t in _RESHAPE_METHODS
        else:
            return False
        return (passes and bool(node.args) and node.args[0] in self.gates
                and (not visited or self.info.get(node) == self.info.get(node.args[0])))  # same channels

    def gate(self, node: fx.Node, args: list) -> list | None:
        """``gate * x`` (squeeze-and-excitation): the gate's channels follow those of ``x``.

        A removed channel of ``x`` is zero, so the product is zero whatever the gate:
        the gate's producers are sliced like ``x`` but do not vote. Without a gate
        activation and with equal shapes, both factors vote (a channel goes only when
        both remove it).
        """
        a, b = args
        sa, sb = self.shape(a), self.shape(b)
        so = self.shape(node)
        if sa is None or sb is None or len(sa) < 2 or sa[:2] != sb[:2] or self.cd(a) != 1 or self.cd(b) != 1:
            return None
        ia, ib = self.info[a], self.info[b]
        if (len(ia) != len(ib) or not self.whole(a) or not self.whole(b)
                or any(ra != 1 or rb != 1 for (_, ra, _), (_, rb, _) in zip(ia, ib))):
            return None
        if b in self.gates and a not in self.gates and sa == so:
            data, gate = ia, ib
        elif a in self.gates and b not in self.gates and sb == so:
            data, gate = ib, ia
        elif a not in self.gates and b not in self.gates and sa == sb:
            where = _describe(node, self.modules)
            return [(self.union(x, y, where), 1, None) for (x, *_), (y, *_) in zip(ia, ib)]
        else:
            return None
        where = _describe(node, self.modules)
        out = []
        for (d, *_), (g, *_) in zip(data, gate):
            if self.find(d) == self.find(g):  # x * sigmoid(x): nothing to couple
                out.append((d, 1, None))
                continue
            if self.space(g).fixed or self.space(d).size != self.space(g).size:
                return None
            self.follows.append((g, d, where))
            out.append((d, 1, None))
        return out

    def scaled(self, node: fx.Node, x: fx.Node, c: fx.Node) -> list | None:
        """``x * c`` or ``x / c`` with ``c`` a parameter/buffer: a zero channel stays zero.

        When ``c`` varies along the channels (a layer scale ``[C, 1, 1]``), it is a
        per-channel member of ``x``'s group, sliced with it.
        """
        sx, sc, so = self.shape(x), self.shape(c), self.shape(node)
        if sx is None or sc is None or so != sx or len(sc) > len(sx):
            return None
        d = self.cd(x)
        dc = d - (len(sx) - len(sc))  # the dim of c that broadcasts against the channels
        if dc < 0 or sc[dc] == 1:
            self.cdim[node] = d
            return self.info[x]
        if c.op != "get_attr" or c.target in self.attr_in or sc[dc] != sx[d]:
            return None
        self.attr_in[c.target] = (dc, self.info[x])
        self.cdim[node] = d
        return self.info[x]

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

    def reshape(self, node: fx.Node, src: fx.Node, quiet: bool = False) -> list | None:
        """A reshape that keeps the channel dim (only dims before or after it are merged/split).

        ``[N, C, H, W] -> [N, C * H * W]`` maps channel ``c`` to ``H*W`` consecutive
        features; ``[N, C, H, W] -> [N, C, H*W]`` or ``[N, L, C] -> [N*L, C]`` keep it.
        """
        si, so = self.shape(src), self.shape(node)
        d = self.cd(src)
        if si is None or so is None or len(si) < 2:
            return self.barrier(node, [src])
        si, so = list(si), list(so)
        if so[:d + 1] == si[:d + 1]:  # the dims up to the channels are unchanged
            self.cdim[node] = d
            return self.info[src]
        tail = len(si) - d  # the channels and the dims after them unchanged, leading dims reshaped
        if len(so) >= tail and so[len(so) - tail:] == si[d:] and len(so) - tail >= 1:
            self.cdim[node] = len(so) - tail
            return self.info[src]
        if d >= 1 and len(so) == d + 1 and so[:d] == si[:d] and so[d] == math.prod(si[d:]):
            hw = math.prod(si[d + 1:])  # the channels and everything after them flattened
            self.cdim[node] = d
            return [(sid, rep * hw, idx) for sid, rep, idx in self.info[src]]
        return None if quiet else self.barrier(node, [src])

    def permute(self, node: fx.Node, src: fx.Node) -> list | None:
        """``permute``/``transpose``: the channels move to another dim."""
        if self.shape(src) is None:
            return self.barrier(node, [src])
        n = len(self.shape(src))
        rest = [a for a in node.args[1:]] + [v for k, v in node.kwargs.items() if k in ("dims", "dim0", "dim1")]
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = list(rest[0])
        if not all(isinstance(r, int) for r in rest):
            return self.barrier(node, [src])
        d = self.cd(src)
        name = getattr(node.target, "__name__", node.target)
        if name == "permute":
            perm = [r % n for r in rest]
            if sorted(perm) != list(range(n)):
                return self.barrier(node, [src])
            self.cdim[node] = perm.index(d)
        else:
            if len(rest) != 2:
                return self.barrier(node, [src])
            a, b = (r % n for r in rest)
            self.cdim[node] = b if d == a else a if d == b else d
        return self.info[src]

    def index(self, node: fx.Node, src: fx.Node) -> list | None:
        """``x[:, 0]`` and the like: indexing that leaves the channel dim whole."""
        idx = node.args[1]
        idx = idx if isinstance(idx, tuple) else (idx,)
        d = self.cd(src)
        si, so = self.shape(src), self.shape(node)
        if any(not isinstance(i, (int, slice)) for i in idx) or len(idx) > len(si):
            return self.barrier(node, [src])
        new = d - sum(isinstance(i, int) for i in idx[:d])
        out = self.info[src]
        if d < len(idx) and idx[d] != slice(None):  # a slice of the channels: x[:, a:b]
            c = idx[d]
            if (not isinstance(c, slice) or not self.unit(src)
                    or not all(v is None or isinstance(v, int) for v in (c.start, c.stop, c.step))):
                return self.barrier(node, [src])
            pos = self.positions(out)
            out = self.segments(pos[c])
            # the bounds are constants: the compacted model slices at the same positions, so the
            # channels before the last one read keep their places (pinned: never removed)
            last = max(range(len(pos))[c], default=-1)
            self.pins.extend(pos[:last + 1])
        if so is None or new >= len(so) or so[new] != sum(self.space(sid).size if i is None else len(i)
                                                         for sid, _, i in out):
            return self.barrier(node, [src])
        self.cdim[node] = new
        return out

    def split(self, node: fx.Node, src: fx.Node) -> list | None:
        """``chunk(n)`` along the channels: each part gets its positions' channels. The
        compacted model chunks its own channels into ``n`` equal parts, so every part must
        keep as many channels as the others (``split`` with sizes given is unsupported)."""
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        tms = node.meta.get("tensor_meta")
        d = self.cd(src)
        name = getattr(node.target, "__name__", node.target)
        if (name != "chunk" or self.shape(src) is None or not isinstance(dim, int)
                or dim % len(self.shape(src)) != d or not self.unit(src)
                or not all(isinstance(t, TensorMetadata) and t.shape[d] == tms[0].shape[d] for t in tms)):
            return self.barrier(node, [src])
        pos, parts, start = self.positions(self.info[src]), [], 0
        for t in tms:
            parts.append(self.segments(pos[start:start + t.shape[d]]))
            start += t.shape[d]
        self.chunks.append([pos[i * tms[0].shape[d]:(i + 1) * tms[0].shape[d]] for i in range(len(tms))])
        self.multi[node] = parts
        self.cdim[node] = d
        return self.info[src]

    def unflatten(self, node: fx.Node, src: fx.Node) -> list | None:
        """A view that splits the channel dim into several (``[N, C, H, W] -> [N, g, C/g, H, W]``),
        or merges such split dims back into one channel dim, in their current order."""
        si, so = list(self.shape(src)), list(self.shape(node))
        if src in self.factored:
            segs, P, dims = self.factored[src]
            d0, k = dims[0], len(dims)
            if (dims == list(range(d0, d0 + k)) and so[:d0] == si[:d0] and len(so) == len(si) - k + 1
                    and so[d0] == P.numel() and so[d0 + 1:] == si[d0 + k:]):
                pos = self.positions(segs)
                self.cdim[node] = d0
                return self.segments([pos[i] for i in P.flatten().tolist()])
            return self.barrier(node, [src])
        d = self.cd(src)
        k = len(so) - len(si) + 1
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        if (k < 2 or so[:d] != si[:d] or math.prod(so[d:d + k]) != si[d] or so[d + k:] != si[d + 1:]
                or not self.unit(src) or len(sizes) != len(so)):
            return self.barrier(node, [src])
        # The compacted model must be able to view its channels the same way: the factors given
        # as constants (a shuffle's ``groups``) stay, so exactly one factor may shrink -- the
        # channels that share its index are kept or removed together (a tie).
        dynamic = [a for a in range(k) if not isinstance(sizes[d + a], int) or sizes[d + a] == -1]
        if len(dynamic) != 1:
            return self.barrier(node, [src], "a view that splits the channels with no single size "
                                "computed at run time (e.g. a channel shuffle with hard-coded sizes)")
        P = torch.arange(si[d]).view(so[d:d + k])
        pos = self.positions(self.info[src])
        for j in range(so[d + dynamic[0]]):
            tie = P.select(dynamic[0], j).flatten().tolist()
            if len(tie) > 1:
                self.ties.append([pos[i] for i in tie])
        self.factored[node] = (self.info[src], P, list(range(d, d + k)))
        return self.info[src]

    def refactor(self, node: fx.Node, src: fx.Node) -> list | None:
        """``permute``/``transpose``/``contiguous`` of a tensor whose channel dim is split."""
        segs, P, dims = self.factored[src]
        name = getattr(node.target, "__name__", node.target)
        if name in ("contiguous", "clone", "detach"):
            self.factored[node] = self.factored[src]
            return segs
        n = len(self.shape(src))
        rest = list(node.args[1:])
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = list(rest[0])
        if not rest or not all(isinstance(r, int) for r in rest):
            return self.barrier(node, [src])
        if name == "permute":
            perm = [r % n for r in rest]
        elif len(rest) == 2:
            perm = list(range(n))
            a, b = (r % n for r in rest)
            perm[a], perm[b] = b, a
        else:
            return self.barrier(node, [src])
        if sorted(perm) != list(range(n)):
            return self.barrier(node, [src])
        new = [perm.index(dd) for dd in dims]  # where each axis of P goes
        order = sorted(range(len(dims)), key=lambda a: new[a])
        self.factored[node] = (segs, P.permute(order), sorted(new))
        return segs

    def norm(self, node: fx.Node, src: fx.Node) -> list:
        """LayerNorm/GroupNorm/RMSNorm: they normalise across the channels, so a removed
        (zero) channel would change the mean and variance of the others -- the channels
        they see are fixed (a barrier); what they output is the same channel space."""
        self.barrier(node, [src], "normalisation over the channels (LayerNorm/GroupNorm: a removed "
                     "channel changes the others' mean and variance), so its channels are never removed",
                     output=False)
        self.cdim[node] = self.cd(src)
        return self.info[src]

    def producer(self, name: str, size: int) -> list:
        out = self.new(size)
        self.space(out).producers.append(name)
        self.module_out[name] = [(out, 1, None)]
        return [(out, 1, None)]

    def consumer(self, name: str, src: fx.Node) -> None:
        for sid, rep, _ in self.info[src]:
            self.space(sid).consumers.append((name, rep))
        self.module_in[name] = self.info[src]

    def visit(self, node: fx.Node) -> list | None:
        if node.op == "placeholder":
            return self.fresh_for(node)
        if node.op == "get_attr":
            self.consts.add(node)
            return self.fresh_for(node)
        if node.op == "output":
            for a in self.tensor_args(node):
                for sid, *_ in self.info[a]:
                    self.space(sid).fixed = True
            return None
        args = self.tensor_args(node)
        tm = node.meta.get("tensor_meta")
        if tm is None:
            return None  # sizes, shapes, ints: no channels involved
        if args and all(a in self.consts for a in args) and node.op != "call_module":
            self.consts.add(node)  # computed from parameters only (e.g. a class token expanded)
            return self.fresh_for(node) if isinstance(tm, TensorMetadata) else None
        t, fn = node.target, node.op == "call_function"
        first = node.args[0] if node.args else None
        special = [a for a in args if a in self.multi or a in self.factored]
        if special:  # parts of a chunk/split, or a channel dim split in several (a shuffle)
            src = special[0]
            if len(args) == 1 and first is src and src in self.multi and fn and t is operator.getitem \
                    and isinstance(node.args[1], int):
                self.cdim[node] = self.cd(src)
                return self.multi[src][node.args[1]]
            if len(args) == 1 and first is src and src in self.factored:
                if (fn and t in _FLATTEN) or (not fn and t in _RESHAPE_METHODS):
                    return self.unflatten(node, src)
                if (fn and t in _PERMUTE) or (not fn and t in (_PERMUTE_METHODS | {"contiguous", "clone", "detach"})):
                    return self.refactor(node, src)
            return self.barrier(node, args, "an operation on split channels channel surgery has no rule for"
                                if src in self.factored else None)
        if ((fn and t in (torch.chunk, torch.split, torch.tensor_split)) or (not fn and t in ("chunk", "split"))) \
                and len(args) == 1 and first is args[0] and isinstance(tm, (tuple, list)):
            return self.split(node, args[0])
        if not isinstance(tm, TensorMetadata) and not (  # several tensors out (split, chunk, ...)
                node.op == "call_module" and isinstance(self.modules[node.target], nn.MultiheadAttention)):
            return self.barrier(node, args)
        first = node.args[0] if node.args else None
        if any(a in self.gates for a in args) and not (
                self.gate_like(node, visited=False) or (node.op == "call_function" and node.target in (operator.mul, torch.mul))):
            return self.barrier(node, args, "a sigmoid-like gate (nonzero on removed channels) used other "
                                "than as a factor of gate * x")
        if node.op == "call_module":
            m = self.modules[node.target]
            src = args[0] if args else None
            if isinstance(m, nn.MultiheadAttention) and isinstance(tm, (tuple, list)) and tm \
                    and isinstance(tm[0], TensorMetadata):
                # attention mixes its inputs' channels: a barrier; its output (out_proj's channels,
                # [.., E] last) is a fixed space of its own, so the residual stream stays one group
                what = f"{_describe(node, self.modules)}: attention"
                self.barrier(node, args, "attention", output=False)
                out = self.new(tm[0].shape[-1], fixed=True)
                self.space(out).barriers.append(what)
                self.multi[node] = [[(out, 1, None)]] + [None] * (len(tm) - 1)
                self.cdim[node] = len(tm[0].shape) - 1
                return self.multi[node][0]
            if src is None or len(args) != 1 or first is not src:
                return self.barrier(node, args)
            if isinstance(m, _CONV):
                if not self.unit(src) or self.cd(src) != 1:
                    return self.barrier(node, args)
                if m.groups == 1:
                    self.consumer(node.target, src)
                    return self.producer(node.target, m.out_channels)
                if m.groups == m.in_channels == m.out_channels:
                    for sid, *_ in self.info[src]:
                        self.space(sid).depthwise.append(node.target)
                    self.module_out[node.target] = self.info[src]
                    return self.info[src]
                if len(self.info[src]) != 1 or not self.whole(src):
                    return self.barrier(node, args, f"grouped convolution (groups={m.groups}) on a concatenation "
                                        "or on shuffled/split channels")
                # grouped conv: input and output are separate spaces, each split into ``groups``
                # equal parts that must keep equal counts (see the module docstring)
                self.consumer(node.target, src)
                self.space(self.info[src][0][0]).partitions.append(m.groups)
                out = self.producer(node.target, m.out_channels)
                self.space(out[0][0]).partitions.append(m.groups)
                self.grouped[node.target] = m.groups
                return out
            if isinstance(m, nn.Linear):
                shape = self.shape(src)
                if shape is None or len(shape) < 2:
                    return self.barrier(node, args)
                if self.cd(src) == len(shape) - 1:  # a Linear acts on the last dim
                    self.consumer(node.target, src)
                else:  # it mixes another dim: the tracked channels may not lose anything
                    self.barrier(node, args, "Linear over a dim other than the channels", output=False)
                self.cdim[node] = len(shape) - 1
                return self.producer(node.target, m.out_features)
            if isinstance(m, _BN):
                if not self.unit(src) or self.cd(src) != 1:
                    return self.barrier(node, args)
                for sid, *_ in self.info[src]:
                    self.space(sid).bns.append(node.target)
                self.bn_in[node.target] = self.info[src]
                return self.passthrough(node, src, spatial=True)
            if isinstance(m, _NORM_MODULES):
                return self.norm(node, src)
            if isinstance(m, _SPATIAL_MODULES):
                return self.passthrough(node, src, spatial=True)
            if isinstance(m, (*_PASS_MODULES, *_GATE_MODULES)) or type(m).__name__ in _PASS_MODULE_NAMES:
                return self.passthrough(node, src)
            if isinstance(m, nn.Flatten):
                if m.end_dim != -1:
                    return self.barrier(node, args)
                return self.reshape(node, src)
            return self.barrier(node, args)
        if node.op in ("call_function", "call_method"):
            t = node.target
            fn = node.op == "call_function"
            named = getattr(t, "__name__", None) in _PASS_FUNCTION_NAMES
            data = [a for a in args if a not in self.consts]
            if fn and t in _NORM_FUNCTIONS:
                if first in args and first not in self.consts:
                    return self.norm(node, first)
            elif (fn and (t in (_PASS_FUNCTIONS | _GATE_FUNCTIONS) or named)) \
                    or (not fn and t in (_PASS_METHODS | _GATE_METHODS)):
                if len(args) == 1 and first is args[0]:
                    return self.passthrough(node, args[0], spatial=fn and t in _SPATIAL_FUNCTIONS)
            elif (fn and t in _FLATTEN) or (not fn and t in _RESHAPE_METHODS):
                if len(args) == 1 and first is args[0]:
                    out = self.reshape(node, args[0], quiet=True)
                    return out if out is not None else self.unflatten(node, args[0])
            elif (fn and t in _PERMUTE) or (not fn and t in _PERMUTE_METHODS):
                if len(args) == 1 and first is args[0]:
                    return self.permute(node, args[0])
            elif fn and t is operator.getitem:
                if len(args) == 1 and first is args[0] and self.shape(first) is not None:
                    return self.index(node, first)
            elif (fn and t in _MEAN) or (not fn and t in _MEAN_METHODS):
                dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
                dims = [dims] if isinstance(dims, int) else dims
                shape = self.shape(args[0]) if args else None
                if (len(args) == 1 and first is args[0] and dims is not None and shape is not None
                        and all(isinstance(dd, int) for dd in dims)):
                    d, n = self.cd(first), len(shape)
                    dims = [dd % n for dd in dims]
                    keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
                    if d not in dims and 0 not in dims:
                        self.cdim[node] = d if keep else d - sum(dd < d for dd in dims)
                        return self.info[first]
            elif fn and t in _CAT:
                parts = first if isinstance(first, (list, tuple)) else None
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
                so = self.shape(node)
                if (parts and isinstance(dim, int) and len(so) >= 2
                        and all(isinstance(p, fx.Node) and self.info.get(p) is not None for p in parts)):
                    d = self.cd(parts[0])
                    if dim % len(so) == d and all(self.cd(p) == d for p in parts):
                        self.cdim[node] = d
                        return [seg for p in parts for seg in self.info[p]]
                    if (dim % len(so) != d and not any(p in self.consts for p in parts)
                            and all(self.same_channels(parts[0], p) for p in parts[1:])):
                        out = self.info[parts[0]]
                        for p in parts[1:]:
                            out = self.merge(node, parts[0], p)
                        return out
                    if any(p in self.consts for p in parts):
                        return self.barrier(node, args, "concatenation with a parameter (e.g. a class token), "
                                            "whose values at removed channels are not zero")
            elif fn and t in _ADD:
                if (len(args) == 2 and len(node.args) == 2 and "alpha" not in node.kwargs and len(data) == 2
                        and self.shape(args[0]) == self.shape(args[1]) and self.same_channels(args[0], args[1])):
                    return self.merge(node, args[0], args[1])
            elif (fn and t in (operator.mul, operator.imul, torch.mul) and len(args) == 2 and len(data) == 1
                  or fn and t in (operator.truediv, torch.div) and len(args) == 2 and data == args[:1]):
                scaled = self.scaled(node, data[0], args[1] if data[0] is args[0] else args[0])
                if scaled is not None:
                    return scaled
            elif fn and t in _MUL and len(args) == 2 and len(node.args) == 2 and t in (operator.mul, torch.mul):
                gated = self.gate(node, args)
                if gated is not None:
                    return gated
            elif fn and t in _MUL:
                if (len(args) == 1 and len(node.args) == 2 and node.args[0] is args[0]
                        and isinstance(node.args[1], (int, float))) or (
                        len(args) == 1 and len(node.args) == 2 and node.args[1] is args[0]
                        and isinstance(node.args[0], (int, float)) and t in (operator.mul, torch.mul)):
                    return self.passthrough(node, args[0])
            return self.barrier(node, args)
        return self.barrier(node, args)


def _fixed_defaults(model: nn.Module, n_args: int) -> dict[str, object] | None:
    """The parameters of ``model.forward`` after the ``n_args`` given ones whose default is
    ``None`` or a plain constant: traced as that constant (``torch.fx`` would otherwise trace
    e.g. ``if mask is not None`` as if a mask were given)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params[:n_args + 1]):
        return None
    fixed = {p.name: p.default for p in params[n_args:]
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
             and (p.default is None or type(p.default) in (bool, int, float, str))}
    return fixed or None


def _trace(model: nn.Module, example_inputs) -> tuple[fx.GraphModule, dict]:
    """The ``torch.fx`` graph of ``model`` (traced in eval mode) with every node's shape, from
    one pass on ``example_inputs``; ``model`` is left exactly as it was (:func:`read_only`).

    ``example_inputs`` that the model does not accept raise a ``ValueError`` naming them; a
    model that cannot be traced, a ``TypeError``; a graph that fails where the model runs
    (control flow that tracing fixed), a ``ValueError``. The messages name no public function:
    ``compact``, ``zero_removed_channels`` and ``prune(..., example_inputs=)`` all trace.
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with read_only(model):
        with example_inputs_fit(model, example_inputs):  # shape, dtype, arity: a clear error first
            model(*args)
        try:
            gm = fx.symbolic_trace(model, concrete_args=_fixed_defaults(model, len(args)))
        except Exception as e:  # noqa: BLE001 - torch.fx raises many kinds of errors
            raise TypeError(
                f"torch.fx.symbolic_trace cannot trace {type(model).__name__} ({type(e).__name__}: {e}); "
                "following channels through a model (compact, prune with granularity='channel' and "
                "example_inputs) needs a model without data-dependent control flow"
            ) from e
        try:
            ShapeProp(gm).propagate(*args)
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"the torch.fx graph of {type(model).__name__} fails on example_inputs although the model "
                f"runs on them ({type(e).__name__}: {e}); its forward() likely branches on its inputs "
                "(control flow that tracing fixed), which channel surgery cannot follow"
            ) from e
    return gm, dict(gm.named_modules())


def _check_inputs(model, example_inputs) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ok = isinstance(example_inputs, torch.Tensor) or (
        isinstance(example_inputs, tuple) and all(isinstance(x, torch.Tensor) for x in example_inputs))
    if not ok:
        raise TypeError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


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


def _shared_spaces(tr: _Tracer, model: nn.Module) -> set[int]:
    """The spaces whose channels would slice a parameter shared by several modules (tied weights).

    Slicing it for one module would untie it from the others (an embedding that shares its
    matrix with the output head is not sliced with the head's input columns), so these
    spaces keep all their channels and every use keeps one, unsliced, parameter.
    """
    pinned = set()
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


def _plan(model: nn.Module, example_inputs) -> ChannelPlan:
    """Trace ``model`` (masks still applied) and decide the kept channels of every group."""
    gm, modules = _trace(model, example_inputs)
    tr = _Tracer(gm, modules)
    tr.run()
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
    for i, keep in keeps.items():
        s = tr.spaces[i]
        if not keep.all() and s.barriers:
            raise ValueError(
                f"the masks remove {int((~keep).sum())} channels of the group produced by "
                f"{s.producers}, and they flow into {s.barriers[0]}, which channel surgery does not support; "
                "keep those channels (pass exclude= the producing layers when pruning)"
            )
        if s.fixed or i in shared:  # the model's outputs, and tied parameters, keep all their channels
            keep[:] = True
    _settle(keeps, tr.spaces, ties, chunks)
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
                       "followers": list(dict.fromkeys(followers)),
                       "consumers": list(dict.fromkeys(c for c, _ in s.consumers)),
                       "partitions": sorted(set(s.partitions)),
                       "size": s.size, "fixed": s.fixed, "kept": kept})

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

    out_index = {name: index(segs) for name, segs in tr.module_out.items()}
    in_index = {name: index(segs) for name, segs in tr.module_in.items()}
    bn_index = {name: index(segs) for name, segs in tr.bn_in.items()}
    attr_index = {name: (dim, index(segs)) for name, (dim, segs) in tr.attr_in.items()}
    number = {root: n for n, root in enumerate(r for r in roots)}
    at = lambda pairs: [(number.get(tr.find(sid)), c) for sid, c in pairs]  # noqa: E731
    return ChannelPlan(groups, out_index, in_index, bn_index, attr_index, dict(tr.grouped),
                       ties=[at(t) for t in tr.ties], chunks=[[at(p) for p in parts] for parts in tr.chunks],
                       pins=at(tr.pins))


def plan_channels(model: nn.Module, example_inputs) -> ChannelPlan:
    """The channel groups of ``model`` and the channels :func:`compact` would keep.

    Nothing is modified.
    """
    _check_inputs(model, example_inputs)
    return _plan(model, example_inputs)


def _gone(index: torch.Tensor, size: int) -> torch.Tensor:
    gone = torch.ones(size, dtype=torch.bool)
    gone[index] = False
    return gone


def _zero(plan: ChannelPlan, modules: dict) -> None:
    with torch.no_grad():
        for name, idx in plan.out_index.items():  # producers and depthwise convs: biases
            b = getattr(modules[name], "bias", None)
            if b is not None:
                b[_gone(idx, b.shape[0]).to(b.device)] = 0
        for name, idx in plan.bn_index.items():
            bn = modules[name]
            gone = _gone(idx, bn.num_features)
            for t in (bn.weight, bn.bias, bn.running_mean):
                if t is not None:
                    t[gone.to(t.device)] = 0


def zero_removed_channels(model: nn.Module, example_inputs, inplace: bool = False) -> nn.Module:
    """The masked model with the channels :func:`compact` removes made exactly zero.

    For every removed channel, the producers' and depthwise convs' bias entries and the
    group's BatchNorm ``weight``, ``bias`` and ``running_mean`` (gamma, beta, mean)
    entries are set to zero; masks and hooks stay.
    Returns a copy (``model`` untouched) unless ``inplace=True``. The result is the
    reference :func:`compact` equals; see the module docstring.
    """
    _check_inputs(model, example_inputs)
    work = model if inplace else _copy(model)
    plan = _plan(work, example_inputs)
    _zero(plan, dict(work.named_modules()))
    return work


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    new = t.detach().index_select(dim, index.to(t.device)).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        setattr(module, name, new)


def _shrink_grouped(m: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
    """Slice a grouped conv: kept rows, and in each group the kept columns of its input part
    (every group keeps as many inputs and outputs as the others: see ``_balance``)."""
    g, w = m.groups, m.weight
    if len(out_idx) == m.out_channels and len(in_idx) == m.in_channels:
        return
    per_in = m.in_channels // g
    cols = in_idx.view(g, -1) - (torch.arange(g) * per_in)[:, None]  # local kept columns per group
    rows = out_idx
    idx = cols[rows // (m.out_channels // g)].to(w.device)  # [rows, kept per group]
    idx = idx.view(*idx.shape, *[1] * (w.dim() - 2)).expand(-1, -1, *w.shape[2:])
    new = torch.gather(w.detach()[rows.to(w.device)], 1, idx).clone()
    m.weight = nn.Parameter(new, requires_grad=w.requires_grad)
    _slice_param(m, "bias", out_idx, 0)
    m.out_channels, m.in_channels = len(out_idx), len(in_idx)


def _shrink(plan: ChannelPlan, modules: dict, root: nn.Module | None = None) -> None:
    for name, (dim, idx) in plan.attr_index.items():  # per-channel parameters (layer scale)
        owner, _, attr = name.rpartition(".")
        mod = root.get_submodule(owner) if root is not None else modules[owner]
        t = getattr(mod, attr)
        if t.shape[dim] != len(idx):
            _slice_param(mod, attr, idx, dim)
    for name, idx in plan.bn_index.items():
        bn = modules[name]
        if len(idx) == bn.num_features:
            continue
        for p in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(bn, p, idx, 0)
        bn.num_features = len(idx)
    for name in set(plan.out_index) | set(plan.in_index):
        m = modules[name]
        out_idx = plan.out_index.get(name)
        in_idx = plan.in_index.get(name)
        if name in plan.grouped:
            _shrink_grouped(m, out_idx, in_idx)
            continue
        if isinstance(m, _CONV) and m.groups > 1:  # depthwise: input and output coupled
            if len(out_idx) != m.out_channels:
                _slice_param(m, "weight", out_idx, 0)
                _slice_param(m, "bias", out_idx, 0)
                m.in_channels = m.out_channels = m.groups = len(out_idx)
            continue
        if out_idx is not None and len(out_idx) != m.weight.shape[0]:
            _slice_param(m, "weight", out_idx, 0)
            _slice_param(m, "bias", out_idx, 0)
        if in_idx is not None and len(in_idx) != m.weight.shape[1]:
            _slice_param(m, "weight", in_idx, 1)
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape[0], m.weight.shape[1]
        else:
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1]


def _outputs(model: nn.Module, example_inputs) -> list[torch.Tensor]:
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with read_only(model):
        out = model(*args)
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _absmax(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _copy(model: nn.Module) -> nn.Module:
    """Deep copy; the masked weights ``weight = orig * mask`` that ``torch.nn.utils.prune``
    keeps as non-leaf attributes (which ``copy.deepcopy`` refuses) are copied detached."""
    memo: dict = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                t = m.__dict__.get(hook._tensor_name)
                if isinstance(t, torch.Tensor) and not t.is_leaf:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)


def compact(model: nn.Module, example_inputs) -> nn.Module:
    """A physically smaller copy of a channel-masked ``model``; ``model`` is untouched.

    ``example_inputs`` (a tensor or a tuple of tensors) is used to trace shapes and to
    check the result. A channel is removed when every producer of its group masks its
    whole output row; the compacted model equals
    ``zero_removed_channels(model, example_inputs)`` -- the masked model
    with the removed channels' biases and BatchNorm gamma/beta/mean set to zero -- see the
    module docstring. The result is an ordinary model of the same class (no masks, no
    hooks); scattered (non-channel) masked weights are plain zeros in it.

    >>> import torch, torch.nn as nn, prunekit as pk
    >>> from prunekit.structured.surgery import compact
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> _ = pk.prune(model, 0.5, criterion="random", granularity="channel", scope="layer")
    >>> small = compact(model, torch.randn(1, 8))
    >>> small[0].out_features, small[2].in_features, small[2].out_features
    (8, 8, 2)
    """
    _check_inputs(model, example_inputs)
    work = _copy(model)
    plan = _plan(work, example_inputs)
    modules = dict(work.named_modules())
    for m in modules.values():  # fold masks: weight = orig * mask, hooks and buffers gone
        for hook in [h for h in m._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]:
            if hasattr(m, hook._tensor_name + "_mask"):
                torch_prune.remove(m, hook._tensor_name)
    _zero(plan, modules)
    reference = _outputs(work, example_inputs)
    _shrink(plan, modules, work)
    try:
        result = _outputs(work, example_inputs)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"compact: the compacted model fails on example_inputs ({type(e).__name__}: {e}); "
            "a hard-coded shape in forward() (e.g. view(-1, 512 * 7 * 7)) is not supported"
        ) from e
    if len(result) != len(reference) or any(
        r.shape != o.shape or not torch.allclose(r, o, rtol=1e-4, atol=1e-4 * max(1.0, _absmax(r)))
        for r, o in zip(reference, result)
    ):
        raise RuntimeError(
            "compact: the compacted model's outputs differ from the masked reference on example_inputs; "
            "the model contains a construct compact mishandles -- please report it"
        )
    return work
