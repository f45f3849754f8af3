"""Attention heads: find them, score them, mask them, remove them.

Head pruning removes whole attention heads (Michel, Levy & Neubig 2019, *Are Sixteen
Heads Really Better than One?*, NeurIPS; Voita et al. 2019, *Analyzing Multi-Head
Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned*, ACL).
It is the transformer's structured granularity in the survey's taxonomy (Cheng et al.
2024, Sec. 2.2). ``granularity="head"`` in :func:`prunekit.make_masks` and
:func:`prunekit.prune` is implemented here.

Where the heads are
-------------------
* :class:`prunekit.blocks.MultiHeadSelfAttention` (and :class:`PrunedMultiheadAttention`):
  head ``h`` owns rows ``h*hd:(h+1)*hd`` of ``q``, ``k``, ``v`` (weight and bias) and
  the same columns of ``proj.weight`` (``hd = head_dim``).
* :class:`torch.nn.MultiheadAttention` (torchvision's ViT uses it): the same rows of the
  query, key and value parts of ``in_proj_weight`` / ``in_proj_bias`` (rows ``0:E``,
  ``E:2E``, ``2E:3E``), or of ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
  when ``kdim``/``vdim`` differ, the same columns of ``out_proj.weight``, and the same
  entries of ``bias_k``/``bias_v`` when present. ``out_proj.bias`` belongs to no head.

:func:`find_heads` lists them as :class:`AttentionHeads` records. Finding the heads is the
granularity's job (:mod:`prunekit.granularity.heads`, re-exported here): other attention
modules take part once registered with :func:`prunekit.granularity.heads.register`.

Scores, counts, masks
---------------------
A head's score is the reduction (default ``"l2"``; ``"l1"``, ``"sum"``, ``"mean"``) of
all weight-level scores of its slices that are present in ``scores`` -- with the
default targets of :func:`prunekit.prune` those are ``q/k/v/proj.weight`` of our
module and only ``out_proj.weight`` of ``nn.MultiheadAttention`` (``in_proj_weight`` is
not a Linear weight; pass ``include=`` to score it too). An attention module takes part
when at least one of its head parameters is scored; scored parameters outside any head
(MLPs, embeddings, the classifier) are ignored and get no mask.

* ``scope="layer"``: every attention module loses ``round(s * H)`` of its ``H`` heads;
  ``sparsity`` may be a ``{module_name: fraction}`` dict.
* ``scope="global"``: ``round(s * N)`` of all ``N`` heads go; the head scores are
  normalised by the head size (l2 -> RMS, l1 -> mean |s|, sum -> mean) so that modules
  of different widths compete fairly.

Every attention module keeps at least one head; counts and ties follow
:mod:`prunekit.allocation` (lowest first; ties: model order, then head index). A
removed head is removed *whole*: the masks cover every parameter slice of the head,
including those that were not scored (biases, ``in_proj_weight``), and are True
elsewhere in those parameters. ``-inf`` scores (already removed) count as in
:mod:`prunekit.granularity`, so repeated pruning is cumulative.

Removing heads physically
-------------------------
:func:`compact_heads` returns a copy with the removed heads gone. A head is removed when
its out-projection columns are all zero in the (mask-folded) copy: such a head adds
nothing to the output whatever its queries, keys and values, so the smaller model gives
the same outputs as the masked one. Our module shrinks in place (``num_heads``, the
``q/k/v`` rows, the ``proj`` columns); an ``nn.MultiheadAttention`` (whose inner width
must equal ``embed_dim``) is replaced by :class:`PrunedMultiheadAttention`, a drop-in
module with the same call signature and fewer heads.

>>> import torch, prunekit as pk
>>> from prunekit.models import TinyViT
>>> _ = torch.manual_seed(0)
>>> vit = TinyViT(depth=2, num_heads=4)
>>> masks = pk.make_masks(pk.score(vit, "magnitude"), 0.5, "head", "layer", model=vit)
>>> [n for n in masks][:3]
['blocks.0.attn.q.weight', 'blocks.0.attn.q.bias', 'blocks.0.attn.k.weight']
>>> _ = pk.apply_masks(vit, masks)
>>> small = compact_heads(vit)
>>> [b.attn.num_heads for b in small.blocks]
[2, 2]
>>> x = torch.randn(2, 1, 8, 8)
>>> bool(torch.allclose(small(x), vit(x), atol=1e-6))
True

Gradient importance (Michel et al. 2019)
----------------------------------------
The scores above are weight norms: data-free, and what ``granularity="head"`` uses with
the default criterion. Michel et al. rank heads by how much the loss reacts to them
instead. With a gate ``xi_h = 1`` multiplying head ``h``'s output ``A_h(x)`` (the
per-head attention output, before the out-projection),

    I_h = E_x | sum_t A_h(x)_t . dL(x)/dA_h(x)_t | = E_x | dL(x)/d xi_h |,

normalised per attention module by its l2 norm. :func:`head_importance` computes it
(one ``[num_heads]`` tensor per module); :func:`head_masks_from_importance` turns those
head scores into masks that remove whole heads, like ``granularity="head"`` does, to be
applied with :func:`prunekit.apply_masks` and removed with :func:`compact_heads`.

>>> data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]
>>> imp = head_importance(vit, data)
>>> {n: tuple(t.shape) for n, t in imp.items()}
{'blocks.0.attn': (4,), 'blocks.1.attn': (4,)}
>>> [int((t == 0).sum()) for t in imp.values()]   # the heads removed above
[2, 2]
>>> masks = head_masks_from_importance(imp, 0.5, vit, scope="layer")
>>> sorted({n.rsplit(".", 2)[0] for n in masks})
['blocks.0.attn', 'blocks.1.attn']
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_model, check_scope, check_scores
from ..allocation import allocate_units
from ..blocks import MultiHeadSelfAttention
from ..core.masks import copy_model
from ..core.targets import all_parameters, effective
from ..criteria._common import iter_batches, model_device
from ..granularity.heads import AttentionHeads, HeadSlice, find_heads, head_mask, head_scores, heads_sparsity
from ..pipeline import make_masks

__all__ = ["HeadSlice", "AttentionHeads", "find_heads", "head_scores", "head_masks", "removed_heads",
           "compact_heads", "PrunedMultiheadAttention", "head_importance", "head_masks_from_importance"]

_head_mask = head_mask  # its name before 0.2


def head_masks(scores: Mapping[str, torch.Tensor], sparsity: float | Mapping[str, float], model: nn.Module,
               scope: str = "global", reduction: str | None = None) -> dict[str, torch.Tensor]:
    """Masks that remove ``sparsity`` of the attention heads of ``model`` (True = kept):
    ``make_masks(scores, sparsity, "head", scope, reduction=reduction, model=model)``; see
    the module docstring for the rules. ``ValueError`` when ``model`` has no attention
    heads or no scored head parameter."""
    if not isinstance(model, nn.Module):
        raise ValueError("granularity 'head' finds the attention heads in the model: pass the model as model= "
                         f"(make_masks(scores, sparsity, 'head', model=model); formerly shapes=model), got "
                         f"{type(model).__name__}")
    return make_masks(scores, sparsity, "head", scope, reduction=reduction, model=model)


# --- removing heads physically ------------------------------------------------------------

def _out_weight(a: AttentionHeads) -> torch.Tensor:
    m = a.module
    return effective(m.proj, "weight") if isinstance(m, MultiHeadSelfAttention) else effective(m.out_proj, "weight")


def removed_heads(model: nn.Module) -> dict[str, list[int]]:
    """``{attention module name: [removed head indices]}``: heads whose out-projection
    columns are all zero (masked or not). A module whose heads would all be removed
    keeps head 0 (its output is then the projection bias, as in the masked model)."""
    out = {}
    for a in find_heads(model):
        w = _out_weight(a).detach()
        cols = w.reshape(w.shape[0], a.num_heads, a.head_dim)
        zero = [h for h in range(a.num_heads) if not bool(cols[:, h].any())]
        if len(zero) == a.num_heads:
            zero = zero[1:]
        out[a.name] = zero
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _rows(t: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.detach().index_select(0, index.to(t.device)).clone()


def _kept_index(num_heads: int, head_dim: int, kept: list[int], offset: int = 0) -> torch.Tensor:
    return torch.tensor([offset + h * head_dim + i for h in kept for i in range(head_dim)], dtype=torch.long)


class PrunedMultiheadAttention(MultiHeadSelfAttention):
    """A drop-in replacement for :class:`torch.nn.MultiheadAttention` with fewer heads.

    It holds the kept heads of an ``nn.MultiheadAttention`` in separate ``q``, ``k``,
    ``v`` and ``proj`` Linear layers (inner width ``num_heads * head_dim`` < ``embed_dim``)
    and is called like the original: ``attn(query, key, value, key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)``
    returning ``(output, weights or None)``, with ``batch_first`` and unbatched inputs
    as in PyTorch. A 3-D ``attn_mask`` of shape ``[batch * original_heads, L, S]`` is
    restricted to the kept heads (``kept_heads``). The returned attention weights are
    those of the kept heads (averaged over them by default), so they differ from the
    masked module's, which averages in the removed heads too; the outputs are equal.
    Build one with :meth:`from_torch`.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, kdim: int | None = None,
                 vdim: int | None = None, bias: bool = True, out_bias: bool = True, dropout: float = 0.0,
                 batch_first: bool = False, kept_heads: tuple[int, ...] | None = None,
                 source_num_heads: int | None = None) -> None:
        super().__init__(embed_dim, num_heads, head_dim, bias=bias)
        inner = num_heads * head_dim
        self.k = nn.Linear(kdim or embed_dim, inner, bias=bias)
        self.v = nn.Linear(vdim or embed_dim, inner, bias=bias)
        self.proj = nn.Linear(inner, embed_dim, bias=out_bias)
        self.embed_dim, self.kdim, self.vdim = embed_dim, kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.kept_heads = tuple(range(num_heads)) if kept_heads is None else tuple(kept_heads)
        self.source_num_heads = num_heads if source_num_heads is None else source_num_heads

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, kept: list[int]) -> "PrunedMultiheadAttention":
        """The heads ``kept`` of ``mha`` (unmasked, e.g. after folding masks)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("compact_heads: nn.MultiheadAttention with add_bias_kv=True or add_zero_attn=True is "
                             "not supported")
        e, hd = mha.embed_dim, mha.head_dim
        if mha._qkv_same_embed_dim:
            w = mha.in_proj_weight
            ws = [_rows(w, _kept_index(mha.num_heads, hd, kept, o)) for o in (0, e, 2 * e)]
        else:
            ws = [_rows(getattr(mha, f"{p}_proj_weight"), _kept_index(mha.num_heads, hd, kept)) for p in "qkv"]
        b = mha.in_proj_bias
        bs = [None] * 3 if b is None else [_rows(b, _kept_index(mha.num_heads, hd, kept, o)) for o in (0, e, 2 * e)]
        out_w = mha.out_proj.weight.detach()[:, _kept_index(mha.num_heads, hd, kept).to(
            mha.out_proj.weight.device)].clone()
        out_b = mha.out_proj.bias
        new = cls(e, len(kept), hd, kdim=mha.kdim, vdim=mha.vdim, bias=b is not None, out_bias=out_b is not None,
                  dropout=mha.dropout, batch_first=mha.batch_first, kept_heads=tuple(kept),
                  source_num_heads=mha.num_heads)
        new.q, new.k, new.v = (_linear(w_, b_) for w_, b_ in zip(ws, bs))
        new.proj = _linear(out_w, None if out_b is None else out_b.detach())
        new.train(mha.training)
        return new

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        key = query if key is None else key
        value = key if value is None else value
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        b, L, S = query.shape[0], query.shape[1], key.shape[1]
        h, hd = self.num_heads, self.head_dim
        q = self.q(query).reshape(b, L, h, hd).transpose(1, 2)
        k = self.k(key).reshape(b, S, h, hd).transpose(1, 2)
        v = self.v(value).reshape(b, S, h, hd).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        for m in (self._heads_mask(attn_mask, b, L, S),
                  None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
            if m is not None:
                logits = logits.masked_fill(m, float("-inf")) if m.dtype == torch.bool else logits + m
        attn = torch.softmax(logits, dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, L, h * hd))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if not batched:
                weights = weights.squeeze(0)
        return out, weights

    def _heads_mask(self, attn_mask: torch.Tensor | None, b: int, L: int, S: int) -> torch.Tensor | None:
        if attn_mask is None or attn_mask.dim() == 2:
            return attn_mask
        idx = torch.tensor(self.kept_heads, dtype=torch.long, device=attn_mask.device)
        return attn_mask.reshape(b, self.source_num_heads, L, S).index_select(1, idx)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"kept_heads={list(self.kept_heads)}, batch_first={self.batch_first}")


def _shrink_ours(m: MultiHeadSelfAttention, kept: list[int]) -> None:
    idx = _kept_index(m.num_heads, m.head_dim, kept)
    for p in ("q", "k", "v"):
        lin = getattr(m, p)
        setattr(m, p, _linear(_rows(lin.weight, idx), _rows(lin.bias, idx)))
    w = m.proj.weight.detach()[:, idx.to(m.proj.weight.device)].clone()
    m.proj = _linear(w, None if m.proj.bias is None else m.proj.bias.detach())
    if isinstance(m, PrunedMultiheadAttention):
        m.kept_heads = tuple(m.kept_heads[h] for h in kept)
    m.num_heads = len(kept)


def compact_heads(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the removed attention heads physically gone.

    Removed heads are those of :func:`removed_heads` (all-zero out-projection columns,
    e.g. after ``prune(model, s, granularity="head")``). Masks are folded into the copy
    (masked weights become plain zeros, no hooks); ``model`` is untouched. Our
    :class:`~prunekit.models.MultiHeadSelfAttention` shrinks; an
    ``nn.MultiheadAttention`` that loses a head becomes a
    :class:`PrunedMultiheadAttention` (one with no removed head stays as it is). The
    result gives the same outputs as the masked model; the parameter count drops by
    ``AttentionHeads.head_params()`` per removed head.
    """
    check_model(model)
    work = copy_model(model, fold=True)
    gone = removed_heads(work)
    modules = dict(work.named_modules())
    for a in find_heads(work):
        drop = set(gone[a.name])
        if not drop:
            continue
        kept = [h for h in range(a.num_heads) if h not in drop]
        if isinstance(a.module, MultiHeadSelfAttention):
            _shrink_ours(a.module, kept)
        else:
            new = PrunedMultiheadAttention.from_torch(a.module, kept)
            if not a.name:
                return new
            parent, _, child = a.name.rpartition(".")
            setattr(modules[parent] if parent else work, child, new)
    return work


# --- gradient importance (Michel et al. 2019) ----------------------------------------------

def _summed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the examples (and over the tokens of ``[B, T, C]``
    outputs with ``[B, T]`` targets, as language models give)."""
    if outputs.dim() == 3 and targets.dim() == 2:
        outputs, targets = outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    return F.cross_entropy(outputs, targets, reduction="sum")


def _gated_copy(model: nn.Module) -> tuple[nn.Module, dict[str, MultiHeadSelfAttention]]:
    """A frozen eval-mode copy of ``model`` (masks folded) in which every attention module
    is a :class:`~prunekit.models.MultiHeadSelfAttention` (an ``nn.MultiheadAttention``
    becomes the equivalent :class:`PrunedMultiheadAttention` with all its heads), so that
    the concatenated head outputs are the input of its ``proj``."""
    work = copy_model(model, fold=True)
    attns = {}
    for a in find_heads(work):
        m = a.module
        if not isinstance(m, MultiHeadSelfAttention):
            if m.bias_k is not None or m.add_zero_attn:
                raise ValueError(f"head_importance: the nn.MultiheadAttention {a.name!r} has add_bias_kv=True or "
                                 "add_zero_attn=True, which is not supported")
            m = PrunedMultiheadAttention.from_torch(m, list(range(m.num_heads)))
            if not a.name:
                work = m
            else:
                parent, _, child = a.name.rpartition(".")
                setattr(work.get_submodule(parent) if parent else work, child, m)
        attns[a.name] = m
    work.eval()
    for p in work.parameters():
        p.requires_grad_(False)
    return work, attns


def head_importance(model: nn.Module, data, *, loss_fn=None, normalize: bool = True) -> dict[str, torch.Tensor]:
    """Michel et al.'s (2019) gradient importance of every attention head.

    For a gate ``xi_h = 1`` multiplying the output ``A_h(x)`` of head ``h`` (its attention
    output before the out-projection; ``t`` runs over the tokens),

    ``I_h = E_x | sum_t A_h(x)_t . dL(x)/dA_h(x)_t | = E_x | dL(x)/d xi_h |``,

    the expected absolute first-order change of the loss when the head is removed. With
    ``normalize=True`` (the paper's choice) each module's scores are divided by their l2
    norm, so that modules compete fairly in a global ranking.

    * ``model`` -- any module containing :class:`prunekit.models.MultiHeadSelfAttention`
      or :class:`torch.nn.MultiheadAttention` (``add_bias_kv``/``add_zero_attn`` are not
      supported). It is left exactly as it was: the computation runs on a copy, in eval
      mode (no dropout), with the masks of :func:`prunekit.apply_masks` folded in. A
      removed head (zero output) gets importance 0.
    * ``data`` -- an iterable of ``(inputs, targets)`` batches (a DataLoader, a list of
      tuples); the expectation is over all their examples. Each row of an attention
      module's batch is one example (as in ViTs and language models), and the absolute
      value is taken per example, as in the paper's formula (the authors' code takes it
      per batch).
    * ``loss_fn(outputs, targets)`` -- the loss of the batch, *summed* over its examples
      (or a tensor of per-example losses, which is summed); a mean-reduced loss scales
      each batch by 1/batch size. Default: cross-entropy summed over the examples (and
      over the tokens when the outputs are ``[B, T, C]`` and the targets ``[B, T]``).

    Returns ``{attention module name: tensor [num_heads]}`` (higher = more important), in
    ``named_modules`` order; a module that the forward pass never calls gets zeros. Bad
    input raises ``TypeError`` or ``ValueError``; the model is untouched then too.

    Prune with them by :func:`head_masks_from_importance` and :func:`prunekit.apply_masks`.
    """
    check_model(model)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    if loss_fn is None:
        loss_fn = _summed_cross_entropy
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable loss_fn(outputs, targets) -> loss, got "
                        f"{type(loss_fn).__name__}")
    if isinstance(data, (torch.Tensor, str, bytes)) or data is None:
        raise TypeError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}")
    if not find_heads(model):
        raise ValueError("head_importance: the model has no attention heads (prunekit.models.MultiHeadSelfAttention "
                         "or torch.nn.MultiheadAttention)")
    work, attns = _gated_copy(model)
    total = {n: torch.zeros(m.num_heads, dtype=torch.float64) for n, m in attns.items()}
    rows = {n: 0 for n in attns}
    calls: dict[str, list[torch.Tensor]] = {n: [] for n in attns}

    def gate(name: str, heads: int, head_dim: int):
        def hook(module, args):
            x = args[0]  # [batch, ..., heads * head_dim]: the concatenated head outputs
            g = torch.ones((x.shape[0],) + (1,) * (x.dim() - 2) + (heads, 1), dtype=x.dtype, device=x.device,
                           requires_grad=True)
            calls[name].append(g)
            return ((x.unflatten(-1, (heads, head_dim)) * g).flatten(-2),) + tuple(args[1:])
        return hook

    handles = [m.proj.register_forward_pre_hook(gate(n, m.num_heads, m.head_dim)) for n, m in attns.items()]
    try:
        for x, y in iter_batches(data, None, model_device(work)):
            for c in calls.values():
                c.clear()
            with torch.enable_grad():
                loss = loss_fn(work(x), y)
                if not isinstance(loss, torch.Tensor) or not loss.is_floating_point():
                    raise ValueError(f"loss_fn must return a floating-point tensor (the batch's loss), got "
                                     f"{type(loss).__name__ if not isinstance(loss, torch.Tensor) else loss.dtype}")
                loss = loss.sum()
                gates = [g for c in calls.values() for g in c]
                grads = (torch.autograd.grad(loss, gates, allow_unused=True) if gates and loss.requires_grad
                         else [None] * len(gates))
            grad_of = dict(zip(map(id, gates), grads))
            for n, c in calls.items():
                per_call = [grad_of[id(g)] if grad_of[id(g)] is not None else torch.zeros_like(g) for g in c]
                if not per_call:
                    continue
                if len({tuple(g.shape) for g in per_call}) > 1:
                    raise ValueError(f"head_importance: attention module {n!r} was called several times in one "
                                     "forward pass with different batch sizes")
                g = torch.stack(per_call).sum(0).reshape(per_call[0].shape[0], -1)  # [rows, heads]
                total[n] += g.abs().sum(0).detach().to(torch.float64).cpu()
                rows[n] += g.shape[0]
    finally:
        for h in handles:
            h.remove()
    device = model_device(model)
    out = {}
    for n in attns:
        imp = total[n] / max(rows[n], 1)
        if normalize:
            norm = imp.norm()
            imp = imp / norm if norm > 0 else imp
        out[n] = imp.to(device=device, dtype=torch.float32)
    return out


def head_masks_from_importance(importance: Mapping[str, torch.Tensor], sparsity: float | Mapping[str, float],
                               model: nn.Module, scope: str = "global") -> dict[str, torch.Tensor]:
    """Masks that remove ``sparsity`` of the heads of ``model``, the least important first.

    ``importance`` holds one score per head, ``{attention module name: tensor
    [num_heads]}`` (higher = kept), e.g. from :func:`head_importance`; the modules it
    names take part, the others are left alone. Counts, ties, ``scope`` and a
    per-module ``sparsity`` dict follow the same rules as ``granularity="head"``
    (module docstring), except that the head scores are used as they are (no size
    normalisation). The masks cover every parameter slice of a removed head; apply them
    with :func:`prunekit.apply_masks`, then :func:`compact_heads` removes the heads.

    >>> import torch
    >>> from prunekit.models import TinyViT
    >>> vit = TinyViT(depth=1, num_heads=4)
    >>> imp = {"blocks.0.attn": torch.tensor([0.9, 0.1, 0.5, 0.3])}
    >>> masks = head_masks_from_importance(imp, 0.5, vit)
    >>> masks["blocks.0.attn.proj.weight"].reshape(-1, 4, 8)[0].all(-1).tolist()
    [True, False, True, False]
    """
    check_model(model)
    if not isinstance(importance, Mapping):
        raise TypeError("importance must be a dict {attention module name: tensor [num_heads]}, got "
                        f"{type(importance).__name__}")
    scope = check_scope(scope)
    found = {a.name: a for a in find_heads(model)}
    if not found:
        raise ValueError("head_masks_from_importance: the model has no attention heads")
    unknown = [n for n in importance if n not in found]
    if unknown:
        raise ValueError(f"importance names {unknown}, which are not attention modules of the model; they are "
                         f"{list(found)}")
    check_scores(importance)
    for n, t in importance.items():
        if tuple(t.shape) != (found[n].num_heads,):
            raise ValueError(f"importance[{n!r}] has shape {list(t.shape)}, but {n!r} has {found[n].num_heads} "
                             f"heads (shape [{found[n].num_heads}])")
    taking_part = [a for name, a in found.items() if name in importance]
    per = heads_sparsity(sparsity, scope, [a.name for a in taking_part])
    units = {a.name: importance[a.name].detach().reshape(-1) for a in taking_part}
    keep = allocate_units(units, per, scope, min_keep=1)
    shapes = {n: (t.shape, t.parameter.device) for n, t in all_parameters(model).items()}
    masks = {}
    for a in taking_part:
        for s in a.slices:
            shape, device = shapes[s.param]
            masks[s.param] = head_mask(a, s, shape, keep[a.name]).to(device)
    return masks
