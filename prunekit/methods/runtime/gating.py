"""Run-time channel gating: each input computes only the channels a small predictor picks.

Feature Boosting and Suppression (FBS): Gao, Zhao, Dudziak, Mullins & Xu, "Dynamic channel
pruning: feature boosting and suppression", ICLR 2019 (arXiv 1810.05331). For a conv layer
with ``C`` output channels and input ``x``:

* the input is subsampled to one number per input channel, ``ss(x)_c = mean |x_c|`` (the
  paper's ℓ1 subsampling; for a post-ReLU input it is global average pooling);
* a small linear layer predicts the saliencies ``g(x) = ReLU(W ss(x) + b)`` (shape ``[C]``);
* ``π = wta_k(g(x))`` keeps the ``k = round(keep · C)`` largest saliencies (winner takes all)
  and sets the others to zero;
* the output is ``act(π ⊙ bn(conv(x)))`` -- FBS multiplies the normalised output by ``π``,
  which both *suppresses* (π = 0: the channel need not be computed at all) and *boosts*
  (π > 0 scales the kept channels).

``scale=False`` replaces ``π`` by its 0/1 pattern (a pure gate, no boosting): then
``keep=1.0`` computes exactly the ungated layer, whereas with ``scale=True`` the output of a
kept channel is multiplied by its saliency. FBS trains the predictor jointly, with an ℓ1 penalty
on the saliencies (:func:`saliency_l1`); the paper's lasso weight is a hyper-parameter.

This implementation computes every channel and multiplies the skipped ones by zero (PyTorch
has no per-sample sparse conv); :func:`executed_macs` counts the multiply-accumulates a kernel
that skips them would execute, per input.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from ..._validate import check_bool, check_model, check_names, check_number

__all__ = ["ChannelGate", "executed_macs", "gate_model", "gated_channels", "saliency_l1"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def check_keep(keep: object) -> float:
    """``keep`` as a float in (0, 1] (the fraction of channels computed per input)."""
    return check_number("keep", keep, low=0.0, high=1.0, low_open=True,
                        what="a number in (0, 1] (the fraction of channels kept per input)")


def kept_count(keep: float, channels: int) -> int:
    """``k = round(keep · C)`` channels kept per input (Python's ``round``), at least 1."""
    return max(1, min(channels, round(keep * channels)))


class ChannelGate(nn.Module):
    """A conv (+ BatchNorm + activation) whose output channels are gated per input (FBS, Gao et al. 2019).

    ``forward(x) = act(π ⊙ bn(conv(x)))`` with ``π = wta_k(ReLU(predictor(mean |x|)))`` (see the
    module docstring); ``k = round(keep · out_channels)``, at least 1. The predictor is an
    ``nn.Linear(in_channels, out_channels)`` whose bias starts at 1 (every channel salient, as
    the paper initialises its gates to pass everything). ``scale=False``: ``π`` is the 0/1
    winner pattern.

    ``threshold=t`` (not in FBS, whose ``k`` is fixed): of the ``k`` winners only those with
    saliency ``> t`` are computed, and always the most salient one, so the number of channels
    -- and the cost -- varies per input (with ``keep=1.0``: a pure threshold gate). ``None``
    (default): exactly ``k`` per input.

    After each forward pass :attr:`last_mask` (``[batch, C]`` bool: the channels computed) and
    :attr:`last_saliency` (``g(x)`` before winner-take-all, differentiable) hold that pass's
    values.
    """

    def __init__(self, conv: nn.Module, bn: nn.Module | None = None, act: nn.Module | None = None, *,
                 keep: float = 0.5, scale: bool = True, threshold: float | None = None):
        super().__init__()
        if not isinstance(conv, _CONVS):
            raise TypeError(f"conv must be an nn.Conv1d/2d/3d, got {type(conv).__name__}")
        if bn is not None and not isinstance(bn, _BNS):
            raise TypeError(f"bn must be a BatchNorm layer or None, got {type(bn).__name__}")
        if act is not None and not isinstance(act, nn.Module):
            raise TypeError(f"act must be an nn.Module or None, got {type(act).__name__}")
        self.keep = check_keep(keep)
        self.scale = check_bool("scale", scale)
        self.threshold = None if threshold is None else check_number("threshold", threshold)
        self.conv, self.bn, self.act = conv, bn, act
        self.predictor = nn.Linear(conv.in_channels, conv.out_channels)
        with torch.no_grad():
            self.predictor.weight.mul_(0.1)
            self.predictor.bias.fill_(1.0)
        self.k = kept_count(self.keep, conv.out_channels)
        self.last_mask: torch.Tensor | None = None
        self.last_saliency: torch.Tensor | None = None

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """``g(x) = ReLU(W · mean|x| + b)``, shape ``[batch, out_channels]``."""
        return torch.relu(self.predictor(x.abs().flatten(2).mean(dim=2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.saliency(x)
        idx = g.topk(self.k, dim=1).indices
        mask = torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx, True)
        if self.threshold is not None:
            mask = mask & (g > self.threshold)
            mask.scatter_(1, idx[:, :1], True)  # the most salient channel always runs
        pi = g * mask if self.scale else mask.to(g.dtype)
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        y = y * pi.reshape(*pi.shape, *([1] * (y.dim() - 2)))
        if self.act is not None:
            y = self.act(y)
        self.last_mask, self.last_saliency = mask, g
        return y

    def extra_repr(self) -> str:
        t = "" if self.threshold is None else f", threshold={self.threshold:g}"
        return f"keep={self.keep:g}, k={self.k}, scale={self.scale}{t}"


def gate_model(model: nn.Module, keep: float, *, include: Iterable[str] | str | None = None,
               exclude: Iterable[str] | str | None = None, scale: bool = True,
               threshold: float | None = None) -> nn.Module:
    """A copy of ``model`` whose convs are :class:`ChannelGate` s; ``model`` is untouched.

    Convs are found inside ``nn.Sequential`` containers, where the order of execution is
    known: a conv, the BatchNorm right after it (if any) and the ReLU after that (if any) become
    one ``ChannelGate`` at the conv's index, and the BatchNorm and ReLU are replaced by
    ``nn.Identity`` so that every other module keeps its name (``features.0`` is the gate,
    ``features.0.conv`` the conv). ``include``/``exclude`` are conv module names or fnmatch
    patterns (default: every conv in a Sequential); a pattern that matches no conv, or names a
    conv outside a Sequential, is a ``ValueError``. ``keep`` in (0, 1], ``scale`` and
    ``threshold`` as in :class:`ChannelGate`. Checked before anything is copied.

    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> gated = gate_model(model, keep=0.5)
    >>> [type(m).__name__ for m in gated]
    ['ChannelGate', 'Identity', 'Identity', 'ChannelGate']
    >>> x = torch.randn(2, 3, 8, 8)
    >>> executed_macs(gated, x).tolist()        # 3*8 + 3*4*9*36 + 4*4 + 4*2*9*16
    [5080, 5080]
    >>> gated[0].last_mask.sum(dim=1).tolist()  # round(0.5 * 8) channels per input
    [4, 4]
    """
    check_model(model)
    keep = check_keep(keep)
    scale = check_bool("scale", scale)
    if threshold is not None:
        check_number("threshold", threshold)
    inc = None if include is None else check_names("include", include)
    exc = [] if exclude is None else check_names("exclude", exclude)
    convs = [n for n, m in model.named_modules() if isinstance(m, _CONVS)]
    seq = _sequential_convs(model)
    for arg, patterns in (("include", inc or []), ("exclude", exc)):
        for p in patterns:
            hits = [n for n in convs if fnmatch.fnmatchcase(n, p)]
            if not hits:
                raise ValueError(f"{arg} pattern {p!r} matches no conv of the model; convs are {convs[:8]}")
            if arg == "include":
                outside = [n for n in hits if n not in seq]
                if outside:
                    raise ValueError(f"include: conv {outside[0]!r} is not inside an nn.Sequential, so its BatchNorm "
                                     f"and activation are unknown; gate_model gates convs in Sequentials only")
    chosen = [n for n in seq if (inc is None or any(fnmatch.fnmatchcase(n, p) for p in inc))
              and not any(fnmatch.fnmatchcase(n, p) for p in exc)]
    if not chosen:
        raise ValueError("gate_model: no conv to gate (convs must sit inside an nn.Sequential)")
    gated = copy.deepcopy(model)
    for name in chosen:
        parent_name, _, index = name.rpartition(".")
        parent = gated.get_submodule(parent_name) if parent_name else gated
        i = int(index)
        conv, bn, act = parent[i], None, None
        j = i + 1
        if j < len(parent) and isinstance(parent[j], _BNS):
            bn = parent[j]
            parent[j] = nn.Identity()
            j += 1
        if j < len(parent) and isinstance(parent[j], nn.ReLU):
            act = parent[j]
            parent[j] = nn.Identity()
        parent[i] = ChannelGate(conv, bn, act, keep=keep, scale=scale, threshold=threshold)
    return gated


def _sequential_convs(model: nn.Module) -> list[str]:
    """Names of the convs that are direct children of an ``nn.Sequential`` (at any depth)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            for i, child in enumerate(m):
                if isinstance(child, _CONVS):
                    out.append(f"{name}.{i}" if name else str(i))
    return out


def gated_channels(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{gate name: last_mask}`` of every :class:`ChannelGate` after a forward pass."""
    return {n: m.last_mask for n, m in model.named_modules() if isinstance(m, ChannelGate) and m.last_mask is not None}


def saliency_l1(model: nn.Module) -> torch.Tensor:
    """FBS's lasso term: the sum over gates of the mean ℓ1 norm of the last pass's saliencies.

    Use as ``train(..., regularizer=lambda m: lam * saliency_l1(m))``; the regulariser runs
    after the forward pass, so it sees that pass's saliencies.
    """
    terms = [m.last_saliency.abs().sum(dim=1).mean() for m in model.modules()
             if isinstance(m, ChannelGate) and m.last_saliency is not None]
    if not terms:
        raise ValueError("saliency_l1: no ChannelGate has run a forward pass yet")
    return torch.stack(terms).sum()


@torch.no_grad()
def executed_macs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The multiply-accumulates each input of the batch ``x`` needs, given the channels computed: ``[batch]``.

    Every Conv and Linear layer (the predictors included) is counted as in
    :func:`prunekit.metrics.count_macs` -- a conv ``C_out · C_in/groups · kernel · H_out · W_out``,
    a Linear ``in · out`` per row -- but per input and only over the channels that input
    needs:

    * a gated conv computes only its ``k`` kept output channels (:attr:`ChannelGate.last_mask`);
    * a layer does not read input channel ``c`` when the most recent *producer* of that many
      channels (a gate, or an ungated Conv/Linear: it computes all its outputs; the gates'
      predictors are not producers) skipped ``c`` for this input *and* ``c`` is exactly zero at
      this layer's input. So a skipped channel saves the MACs of the convs and Linears that
      read it next, through element-wise and pooling layers that keep it zero; a channel
      re-filled by a residual addition is read; channels that merely happen to be zero (a dead
      ReLU) are read, since no gate decided to skip them.

    With every gate at ``keep=1.0``, or an ungated model, the count per input equals
    :func:`prunekit.count_macs` on that input alone. The model runs once in eval mode, and
    its mode is restored. Returns an int64 CPU tensor ``[batch]``.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a batch tensor, got {type(x).__name__}")
    batch = x.shape[0]
    total = torch.zeros(batch, dtype=torch.float64, device=x.device)
    produced: list[torch.Tensor] = []  # [B, C] computed-channel masks of the producers run so far, latest last
    predictors = {id(m.predictor) for m in model.modules() if isinstance(m, ChannelGate)}
    owner: dict[nn.Module, ChannelGate] = {m.conv: m for m in model.modules() if isinstance(m, ChannelGate)}
    pending: dict[nn.Module, tuple[torch.Tensor, int]] = {}  # a gated conv's reads, until its gate's mask exists

    def read_channels(inp: torch.Tensor) -> torch.Tensor:
        """``[batch, C]``: the input channels a layer reads (dim 1 is the channel dim)."""
        c = inp.shape[1]
        zero = inp.reshape(batch, c, -1).eq(0).all(dim=2)
        computed = next((m for m in reversed(produced) if m.shape[1] == c), None)
        if computed is None:
            return torch.ones(batch, c, dtype=torch.bool, device=inp.device)
        return ~(zero & ~computed)

    def produce(channels: int) -> None:
        produced.append(torch.ones(batch, channels, dtype=torch.bool, device=total.device))

    def conv_hook(module, args, out):
        reads = read_channels(args[0]).to(torch.float64)                  # [B, Cin]
        g = module.groups
        per_out = out[0].numel() // out.shape[1] * module.weight[0, 0].numel()  # kernel · spatial
        in_g = reads.reshape(batch, g, -1).sum(dim=2)                      # [B, g]
        pending[module] = (in_g, per_out)
        if module not in owner:
            out_g = torch.full((batch, g), module.out_channels / g, dtype=torch.float64, device=total.device)
            total.add_((in_g * out_g).sum(dim=1) * per_out)
            produce(module.out_channels)

    def gate_hook(module, args, out):
        in_g, per_out = pending.pop(module.conv)
        g = module.conv.groups
        out_g = module.last_mask.to(torch.float64).reshape(batch, g, -1).sum(dim=2)
        total.add_((in_g * out_g).sum(dim=1) * per_out)
        produced.append(module.last_mask)

    def linear_hook(module, args, out):
        inp = args[0]
        rows = inp.reshape(batch, -1, inp.shape[-1]).shape[1]
        if inp.dim() == 2:
            reads = read_channels(inp).to(torch.float64).sum(dim=1)
        else:  # tokens or other leading dims: every feature is read
            reads = torch.full((batch,), float(inp.shape[-1]), dtype=torch.float64, device=total.device)
        total.add_(reads * module.out_features * rows)
        if id(module) not in predictors:
            produce(module.out_features)

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, ChannelGate):
                handles.append(m.register_forward_hook(gate_hook))
            elif isinstance(m, _CONVS):
                handles.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
        was_training = model.training
        model.eval()
        try:
            model(x)
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total.round().to(torch.int64).cpu()
