"""Width pruning of a LLaMA-style LM: LLM-Pruner's coupled groups and first-order Taylor importance.

Ma, Fang & Wang 2023, *LLM-Pruner: On the structural pruning of large language models*
(NeurIPS 2023, arXiv:2305.11627), its block-wise setting (the one of its LLaMA tables):

* **Groups.** An attention head is the rows ``[h·d, (h+1)·d)`` of ``q_proj``, ``k_proj`` and
  ``v_proj`` (``d`` = ``head_dim``) and the same columns of ``o_proj``; an MLP channel ``c`` is
  row ``c`` of ``gate_proj`` and ``up_proj`` and column ``c`` of ``down_proj``. Removing a group
  removes all of it, so the block stays consistent. With grouped-query attention
  (``num_key_value_heads < num_attention_heads``) the unit is a whole **KV group**: one key/value
  head and the ``num_attention_heads / num_key_value_heads`` query heads that read it (so the
  ratio, ``num_key_value_groups``, stays the same in every layer); without GQA a KV group is one head.
* **Importance.** The element-wise first-order Taylor term ``|W ⊙ ∂L/∂W|`` of every weight (and
  bias) of the group, **summed** over the group's elements (the paper's element-wise
  "first-order" estimate, reference option ``--taylor param_first``, aggregated with the default
  ``--grouping_strategy sum``). ``L`` is the next-token loss on the calibration sequences (the
  gradient of their mean loss; the reference uses 10 sequences).
* **Removal.** Each pruned block loses the same share of its groups: ``int(n · sparsity)`` KV
  groups (``head_sparsity``) and ``int(n · sparsity)`` channels (``mlp_sparsity``) of lowest
  importance, ties to the lower index (the reference's local, per-layer ratio). The reference
  leaves the first and last blocks intact (LLaMA-7B: blocks 4..29 pruned of 32): ``keep_first`` and
  ``keep_last``. The kept rows and columns are copied into new, smaller ``nn.Linear`` layers.

Hugging Face's ``LlamaAttention`` (transformers 5.x) infers the head count from the projection's
width (``view(..., -1, head_dim)``) and ``LlamaMLP`` has no size in its forward pass, so blocks
with different widths run as they are; the modules' own attributes (``num_heads``,
``num_key_value_heads``, ``intermediate_size``, read by older transformers versions) are set per
block. The config keeps the unpruned sizes: save the pruned model with ``torch.save`` (as the
reference does), not ``save_pretrained``/``from_pretrained``, which would rebuild unpruned shapes.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_bool, check_int, check_model
from .perplexity import logits_of
from .sequential import _check_tokens, find_blocks

__all__ = ["llm_pruner", "taylor_importance", "block_parts", "prune_attention_groups", "prune_mlp_channels"]

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def block_parts(block: nn.Module, index: int = 0) -> tuple[nn.Module, nn.Module, int]:
    """``(attention, mlp, head_dim)`` of a LLaMA-style decoder block (``self_attn.{q,k,v,o}_proj``,
    ``mlp.{gate,up,down}_proj``, all ``nn.Linear``); ``ValueError`` naming what is missing."""
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    for owner, names, where in ((attn, ATTN, "self_attn"), (mlp, MLP, "mlp")):
        for n in names:
            if not isinstance(getattr(owner, n, None), nn.Linear):
                raise ValueError(f"block {index} has no nn.Linear {where}.{n}: llm_pruner needs LLaMA-style blocks "
                                 f"(self_attn.q_proj/k_proj/v_proj/o_proj, mlp.gate_proj/up_proj/down_proj)")
    q, k = attn.q_proj, attn.k_proj
    head_dim = getattr(attn, "head_dim", None)
    if not isinstance(head_dim, int) or head_dim < 1 or q.out_features % head_dim or k.out_features % head_dim \
            or (q.out_features // head_dim) % (k.out_features // head_dim):
        raise ValueError(f"block {index}: self_attn.head_dim ({head_dim!r}) must divide q_proj's and k_proj's "
                         f"out_features ({q.out_features}, {k.out_features}) and the query heads must be a "
                         f"multiple of the key/value heads")
    return attn, mlp, head_dim


def _check_sparsity(name: str, value: Any) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _rows_of_groups(n_groups: int, rows_per_group: int) -> torch.Tensor:
    return torch.arange(n_groups * rows_per_group).reshape(n_groups, rows_per_group)


def _group_sums(s: torch.Tensor, n_groups: int, dim: int) -> torch.Tensor:
    """Sum a score tensor over the consecutive slices of ``dim`` that form ``n_groups`` groups."""
    s = s.movedim(dim, 0)
    return s.reshape(n_groups, -1).sum(dim=1)


def _taylor(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        return torch.zeros_like(p, dtype=torch.float64)
    return (p.detach().double() * p.grad.detach().double()).abs()


def taylor_importance(model: nn.Module, calib_tokens: torch.Tensor, *, blocks: nn.ModuleList | None = None,
                      nsamples: int | None = None, batch_size: int = 1) -> list[dict[str, torch.Tensor]]:
    """LLM-Pruner's group importance of every decoder block: ``Σ |W ⊙ ∇W|`` over each group.

    Args:
        model: a causal LM returning logits (or an object with ``.logits``) for ``model(ids)``.
        calib_tokens: ``[nsamples, seq_len]`` token ids; the loss is their mean next-token
            cross-entropy (gradients accumulated over batches of ``batch_size`` sequences).
        blocks, nsamples, batch_size: as in :func:`llm_pruner`.

    Returns:
        One dict per block, ``{"heads": [num_key_value_heads], "channels": [intermediate]}``
        (float64): the importance of each KV group (its key/value head, its query heads and their
        ``o_proj`` columns) and of each MLP channel. The model's weights, ``requires_grad`` flags
        and existing ``.grad`` are left as they were.
    """
    check_model(model)
    blocks = find_blocks(model) if blocks is None else blocks
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise TypeError(f"blocks must be a non-empty nn.ModuleList of decoder blocks, got {type(blocks).__name__}")
    parts = [block_parts(b, i) for i, b in enumerate(blocks)]
    tokens = _check_tokens(calib_tokens, nsamples)
    if tokens.shape[1] < 2:
        raise ValueError("calib_tokens must have seq_len >= 2 (the loss predicts each next token)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    wanted = {id(p) for attn, mlp, _ in parts for lin in [*(getattr(attn, n) for n in ATTN),
                                                          *(getattr(mlp, n) for n in MLP)]
              for p in lin.parameters()}
    was_training = model.training
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    device = next(model.parameters()).device
    try:
        if use_cache is not None:
            config.use_cache = False
        model.eval()
        for p in params:
            p.requires_grad_(id(p) in wanted)
            p.grad = None
        n = tokens.shape[0]
        for b in range(0, n, batch_size):
            ids = tokens[b:b + batch_size].to(device)
            logits = logits_of(model(ids))
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
            (loss * ids.shape[0] / n).backward()
        result = []
        for attn, mlp, hd in parts:
            n_kv = attn.k_proj.out_features // hd
            heads = torch.zeros(n_kv, dtype=torch.float64)
            for name in ("q_proj", "k_proj", "v_proj"):
                for p in getattr(attn, name).parameters():              # weight [out, in], bias [out]
                    heads += _group_sums(_taylor(p), n_kv, 0).cpu()
            heads += _group_sums(_taylor(attn.o_proj.weight), n_kv, 1).cpu()
            inter = mlp.gate_proj.out_features
            channels = torch.zeros(inter, dtype=torch.float64)
            for name in ("gate_proj", "up_proj"):
                for p in getattr(mlp, name).parameters():
                    channels += _group_sums(_taylor(p), inter, 0).cpu()
            channels += _group_sums(_taylor(mlp.down_proj.weight), inter, 1).cpu()
            result.append({"heads": heads, "channels": channels})
    finally:
        for p, f, g in zip(params, flags, grads):
            p.grad = g
            p.requires_grad_(f)
        model.train(was_training)
        if use_cache is not None:
            config.use_cache = use_cache
    return result


def _slice_linear(lin: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` with the rows (``dim=0``) or columns (``dim=1``) ``index`` of ``lin``."""
    w = lin.weight.detach().index_select(dim, index.to(lin.weight.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, index.to(w.device)))
    new.weight.requires_grad_(lin.weight.requires_grad)
    if lin.bias is not None:
        new.bias.requires_grad_(lin.bias.requires_grad)
    return new


def prune_attention_groups(attn: nn.Module, keep: torch.Tensor, head_dim: int, *, compact: bool = True) -> None:
    """Keep only the KV groups ``keep`` (sorted indices) of a LLaMA attention module, in place:
    new smaller ``q/k/v_proj`` (rows) and ``o_proj`` (columns), or, with ``compact=False``, the
    removed groups' rows and columns set to zero (the masked model)."""
    n_kv = attn.k_proj.out_features // head_dim
    per = attn.q_proj.out_features // head_dim // n_kv                  # query heads per KV group
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    kv_rows = _rows_of_groups(n_kv, head_dim)[keep].reshape(-1)
    q_rows = _rows_of_groups(n_kv, per * head_dim)[keep].reshape(-1)
    if not compact:
        with torch.no_grad():
            for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                lin = getattr(attn, name)
                drop = torch.ones(lin.out_features, dtype=torch.bool)
                drop[rows] = False
                lin.weight[drop.to(lin.weight.device)] = 0
                if lin.bias is not None:
                    lin.bias[drop.to(lin.bias.device)] = 0
            drop = torch.ones(attn.o_proj.in_features, dtype=torch.bool)
            drop[q_rows] = False
            attn.o_proj.weight[:, drop.to(attn.o_proj.weight.device)] = 0
        return
    attn.q_proj = _slice_linear(attn.q_proj, q_rows, 0)
    attn.k_proj = _slice_linear(attn.k_proj, kv_rows, 0)
    attn.v_proj = _slice_linear(attn.v_proj, kv_rows, 0)
    attn.o_proj = _slice_linear(attn.o_proj, q_rows, 1)
    attn.num_heads = per * keep.numel()
    attn.num_key_value_heads = keep.numel()


def prune_mlp_channels(mlp: nn.Module, keep: torch.Tensor, *, compact: bool = True) -> None:
    """Keep only the channels ``keep`` of a LLaMA MLP, in place: new ``gate/up_proj`` (rows) and
    ``down_proj`` (columns), or, with ``compact=False``, the others set to zero."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if not compact:
        drop = torch.ones(mlp.gate_proj.out_features, dtype=torch.bool)
        drop[keep] = False
        with torch.no_grad():
            for name in ("gate_proj", "up_proj"):
                lin = getattr(mlp, name)
                lin.weight[drop.to(lin.weight.device)] = 0
                if lin.bias is not None:
                    lin.bias[drop.to(lin.bias.device)] = 0
            mlp.down_proj.weight[:, drop.to(mlp.down_proj.weight.device)] = 0
        return
    mlp.gate_proj = _slice_linear(mlp.gate_proj, keep, 0)
    mlp.up_proj = _slice_linear(mlp.up_proj, keep, 0)
    mlp.down_proj = _slice_linear(mlp.down_proj, keep, 1)
    mlp.intermediate_size = keep.numel()


def _lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices kept after removing the ``n`` lowest scores (ties: the lower index goes first), sorted."""
    order = sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))
    return torch.tensor(sorted(order[n:]), dtype=torch.long)


def llm_pruner(model: nn.Module, calib_tokens: torch.Tensor, *, head_sparsity: float = 0.0,
               mlp_sparsity: float = 0.0, nsamples: int | None = None, keep_first: int = 0, keep_last: int = 0,
               blocks: nn.ModuleList | None = None, batch_size: int = 1,
               compact: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """LLM-Pruner's block-wise structured pruning (Ma et al. 2023), in place.

    Args:
        model: a LLaMA-style causal LM (``LlamaForCausalLM``, Mistral, Qwen2, ...); see :func:`block_parts`.
        calib_tokens: ``[n, seq_len]`` calibration token ids (not the evaluation split).
        head_sparsity: the fraction of KV groups (= of attention heads) removed in each pruned
            block, in ``[0, 1)``; ``int(num_key_value_heads · head_sparsity)`` groups per block.
        mlp_sparsity: the fraction of MLP channels removed in each pruned block, in ``[0, 1)``.
        nsamples: use the first ``nsamples`` sequences (default: all; the reference uses 10).
        keep_first, keep_last: leave the first / last blocks unpruned (the reference prunes
            LLaMA-7B's blocks 4..29 only: ``keep_first=4, keep_last=2``).
        blocks: the decoder blocks; default :func:`~prunekit.llm.find_blocks`.
        batch_size: sequences per forward/backward pass for the gradients.
        compact: remove the groups physically (smaller ``nn.Linear`` layers); ``False`` zeroes
            the same rows and columns instead (the masked model, same outputs).

    Returns:
        ``{block index: {"heads": kept KV-group indices, "channels": kept MLP channel indices}}``
        for every pruned block (indices into the block's original groups, sorted).
    """
    check_model(model)
    head_sparsity = _check_sparsity("head_sparsity", head_sparsity)
    mlp_sparsity = _check_sparsity("mlp_sparsity", mlp_sparsity)
    compact = check_bool("compact", compact)
    blocks = find_blocks(model) if blocks is None else blocks
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise TypeError(f"blocks must be a non-empty nn.ModuleList of decoder blocks, got {type(blocks).__name__}")
    keep_first = check_int("keep_first", keep_first, minimum=0, maximum=len(blocks))
    keep_last = check_int("keep_last", keep_last, minimum=0, maximum=len(blocks) - keep_first)
    parts = [block_parts(b, i) for i, b in enumerate(blocks)]
    _check_tokens(calib_tokens, nsamples)
    check_int("batch_size", batch_size, minimum=1)
    pruned = range(keep_first, len(blocks) - keep_last)
    if not len(pruned) or (head_sparsity == 0 and mlp_sparsity == 0):
        return {}
    importance = taylor_importance(model, calib_tokens, blocks=blocks, nsamples=nsamples, batch_size=batch_size)
    result: dict[int, dict[str, torch.Tensor]] = {}
    for i in pruned:
        attn, mlp, hd = parts[i]
        heads, channels = importance[i]["heads"], importance[i]["channels"]
        keep_heads = _lowest(heads, int(heads.numel() * head_sparsity))
        keep_channels = _lowest(channels, int(channels.numel() * mlp_sparsity))
        if keep_heads.numel() < heads.numel():
            prune_attention_groups(attn, keep_heads, hd, compact=compact)
        if keep_channels.numel() < channels.numel():
            prune_mlp_channels(mlp, keep_channels, compact=compact)
        result[i] = {"heads": keep_heads, "channels": keep_channels}
    return result
