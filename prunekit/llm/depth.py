"""Depth pruning of a decoder-only LM: ShortGPT's Block Influence and removing whole decoder blocks.

Men et al. 2024, *ShortGPT: Layers in large language models are more redundant than you
expect* (arXiv:2403.03853), eq. (1): the Block Influence of block *i* is

    BI_i = 1 - E_{X, t} [ x_{i,t}ᵀ x_{i+1,t} / (‖x_{i,t}‖ ‖x_{i+1,t}‖) ],

with ``x_i`` the hidden states entering block *i* and ``x_{i+1}`` those leaving it, averaged
over every token *t* of the calibration sequences *X*. A block that barely turns the residual
stream (its output is nearly parallel to its input) has a small BI; ShortGPT removes the blocks
with the smallest BI, all at once (no recomputation after each removal), and compares with
removing the last blocks.

:func:`drop_blocks` removes decoder blocks physically and repairs what Hugging Face models
(transformers 5.x) read about them: ``config.num_hidden_layers`` (``LlamaModel.forward`` runs
``layers[:config.num_hidden_layers]``; the KV cache is built from the config), the
``layer_idx`` of every module of a kept block (attention modules index the KV cache with it, so
they must be 0, 1, ... in order) and, if present, the per-layer list ``config.layer_types``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from numbers import Integral
from typing import Any

import torch
from torch import nn

from .._validate import check_bool, check_model
from .sequential import _check_tokens, find_blocks

__all__ = ["block_influence", "drop_blocks", "least_influential"]


def _hidden(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _check_blocks(model: nn.Module, blocks: Any) -> nn.ModuleList:
    blocks = find_blocks(model) if blocks is None else blocks
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise TypeError(f"blocks must be a non-empty nn.ModuleList of decoder blocks, got {type(blocks).__name__}")
    return blocks


@torch.no_grad()
def block_influence(model: nn.Module, calib_tokens: torch.Tensor, *, blocks: nn.ModuleList | None = None,
                    nsamples: int | None = None, batch_size: int = 1) -> torch.Tensor:
    """ShortGPT's Block Influence of every decoder block (Men et al. 2024, eq. 1).

    Args:
        model: a decoder-only LM whose forward pass runs ``blocks`` in order, each taking the
            hidden states first and returning the next ones (or a tuple starting with them).
        calib_tokens: calibration token ids ``[nsamples, seq_len]`` (not the evaluation split).
        blocks: the decoder blocks; default :func:`~prunekit.llm.find_blocks`.
        nsamples: use the first ``nsamples`` sequences (default: all).
        batch_size: sequences per forward pass (the result does not depend on it, up to rounding).

    Returns:
        A float64 tensor ``[len(blocks)]``: ``1 −`` the mean over all calibration tokens of the
        cosine similarity between the hidden state entering and the one leaving each block.
        0 for a block that leaves every token's state unchanged (or only rescales it).
    """
    check_model(model)
    blocks = _check_blocks(model, blocks)
    tokens = _check_tokens(calib_tokens, nsamples)
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    sums = torch.zeros(len(blocks), dtype=torch.float64)
    counts = torch.zeros(len(blocks), dtype=torch.float64)
    inputs: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(blocks):
        def pre(_m, args, kwargs, i=i):
            inputs[i] = (args[0] if args else kwargs["hidden_states"]).detach()

        def post(_m, _args, _kwargs, out, i=i):
            x_in, x_out = inputs.pop(i).double(), _hidden(out).detach().double()
            cos = torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1, eps=1e-12)
            sums[i] += cos.sum().cpu()
            counts[i] += cos.numel()
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if use_cache is not None:
        config.use_cache = False
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for b in range(0, tokens.shape[0], batch_size):
            model(tokens[b:b + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if use_cache is not None:
            config.use_cache = use_cache
    if (counts == 0).any():
        missing = [i for i in range(len(blocks)) if counts[i] == 0]
        raise ValueError(f"the model's forward pass never ran blocks {missing}; pass blocks= (the nn.ModuleList "
                         f"the forward pass goes through)")
    return 1.0 - sums / counts


def least_influential(influence: torch.Tensor, n: int) -> list[int]:
    """The indices of the ``n`` blocks of smallest Block Influence, in increasing block order
    (ties broken by the lower index)."""
    if not isinstance(influence, torch.Tensor) or influence.dim() != 1:
        raise TypeError("influence must be a 1-D tensor (block_influence's result)")
    if not isinstance(n, Integral) or isinstance(n, bool) or not 0 <= n < influence.numel():
        raise ValueError(f"n must be an int in [0, {influence.numel() - 1}] (at least one block is kept), got {n!r}")
    order = sorted(range(influence.numel()), key=lambda i: (float(influence[i]), i))
    return sorted(order[:int(n)])


def _check_indices(indices: Any, n_blocks: int) -> list[int]:
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise TypeError(f"indices must be a sequence of block indices, got {type(indices).__name__}")
    out: list[int] = []
    for i in indices:
        if isinstance(i, torch.Tensor) and i.numel() == 1 and not i.is_floating_point():
            i = int(i)
        if not isinstance(i, Integral) or isinstance(i, bool):
            raise TypeError(f"indices must hold ints, got {i!r}")
        if not -n_blocks <= i < n_blocks:
            raise ValueError(f"block index {i} is out of range for {n_blocks} blocks")
        out.append(int(i) % n_blocks)
    if len(set(out)) != len(out):
        raise ValueError(f"indices must not repeat a block, got {list(indices)}")
    if len(out) >= n_blocks:
        raise ValueError(f"indices would remove all {n_blocks} blocks; keep at least one")
    return sorted(out)


def drop_blocks(model: nn.Module, indices: Iterable[int], *, blocks: nn.ModuleList | None = None,
                inplace: bool = False) -> nn.Module:
    """Remove the decoder blocks ``indices`` of ``model``.

    Args:
        model: a decoder-only LM (Hugging Face ``LlamaForCausalLM``, ``OPTForCausalLM``, ... or any
            module whose blocks :func:`~prunekit.llm.find_blocks` finds).
        indices: block indices (negative ones count from the end), distinct; at least one block stays.
        blocks: the decoder blocks of ``model``; default :func:`~prunekit.llm.find_blocks`.
        inplace: modify ``model`` itself; by default a deep copy is modified and ``model`` is untouched.

    Returns:
        The model without those blocks (``model`` itself if ``inplace``). Its ``config`` (if any)
        has ``num_hidden_layers`` = the blocks left (and ``layer_types`` cut to them), and every
        module of the kept blocks that has a ``layer_idx`` (Hugging Face attention and decoder
        layers: the KV cache is indexed by it) is renumbered 0, 1, ... in order, so that
        forward passes and ``generate`` with a KV cache work.
    """
    check_model(model)
    inplace = check_bool("inplace", inplace)
    found = _check_blocks(model, blocks)
    drop = _check_indices(indices, len(found))
    path = next((name for name, mod in model.named_modules() if mod is found), None)
    if path is None:
        raise ValueError("blocks must be a submodule of model")
    target = model if inplace else copy.deepcopy(model)
    old = target.get_submodule(path)
    kept = [b for i, b in enumerate(old) if i not in drop]
    new = nn.ModuleList(kept)
    parent_path, _, attr = path.rpartition(".")
    setattr(target.get_submodule(parent_path) if parent_path else target, attr, new)
    for idx, block in enumerate(new):
        for mod in block.modules():
            if isinstance(getattr(mod, "layer_idx", None), Integral):
                mod.layer_idx = idx
    config = getattr(target, "config", None)
    if config is not None:
        if hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(new)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, (list, tuple)) and len(layer_types) == len(old):
            config.layer_types = [t for i, t in enumerate(layer_types) if i not in drop]
    return target
