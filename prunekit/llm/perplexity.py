"""Perplexity of a causal language model on a token stream, with sliding windows.

The standard evaluation of pruned LLMs (SparseGPT's and Wanda's tables: WikiText-2, windows of
the model's context length). The procedure is the one of Hugging Face's guide *Perplexity of
fixed-length models*: windows of ``seq_len`` tokens start every ``stride`` tokens; each
window scores only the tokens not scored by an earlier window, so every token but the first is
scored exactly once, and with ``stride < seq_len`` each scored token sees at least
``seq_len - stride`` tokens of context. ``stride = seq_len`` gives disjoint windows (the
first token of each window is then not scored, as in the SparseGPT and Wanda evaluations).

    perplexity = exp( - (1/T) Σ_t log p(x_t | context) )  over the T scored tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_int, check_model

__all__ = ["perplexity", "logits_of"]


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: ``output.logits`` (Hugging Face), a tensor, or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the model must return logits [batch, seq, vocab] (a tensor, a tuple starting with one, or an "
                    f"object with .logits), got {type(output).__name__}")


def _default_seq_len(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, *, seq_len: int | None = None, stride: int | None = None,
               progress: bool = False) -> float:
    """Sliding-window perplexity of ``model`` on ``tokens``.

    Args:
        model: a causal LM: ``model(input_ids)`` with ``input_ids`` of shape ``[1, L]`` returns
            logits ``[1, L, vocab]`` (a Hugging Face ``...ForCausalLM``, whose ``.logits`` is used,
            or any ``nn.Module`` returning the tensor). It is put in eval mode for the call and
            restored after.
        tokens: the token ids, a 1-D integer tensor (or ``[1, T]``), at least 2 tokens.
        seq_len: window length; default ``model.config.max_position_embeddings`` (required for a
            model without a config).
        stride: distance between window starts, ``1 <= stride <= seq_len``; default ``seq_len``
            (disjoint windows).
        progress: show a tqdm bar over the windows.

    Returns:
        ``exp`` of the mean negative log-likelihood (natural log) of the scored tokens.

    >>> import torch, torch.nn as nn
    >>> class Uniform(nn.Module):
    ...     def forward(self, ids):
    ...         return torch.zeros(*ids.shape, 50)
    >>> round(perplexity(Uniform(), torch.randint(0, 50, (100,)), seq_len=16, stride=8), 6)
    50.0
    """
    check_model(model)
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a 1-D integer torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.dim() == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D (or [1, T]), got shape {list(tokens.shape)}")
    total = tokens.numel()
    if total < 2:
        raise ValueError(f"tokens must hold at least 2 tokens (the first is never scored), got {total}")
    if tokens.min() < 0:
        raise ValueError("tokens must be non-negative token ids")
    if seq_len is None:
        seq_len = _default_seq_len(model)
        if seq_len is None:
            raise ValueError("seq_len is required: the model has no config.max_position_embeddings")
    seq_len = check_int("seq_len", seq_len, minimum=2)
    stride = seq_len if stride is None else check_int("stride", stride, minimum=1, maximum=seq_len)

    starts = []
    prev_end = 0
    for begin in range(0, total, stride):
        end = min(begin + seq_len, total)
        first = max(prev_end, begin + 1)                          # first token this window scores
        if first < end:
            starts.append((begin, end, first))
        prev_end = end
        if end == total:
            break

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = tokens.device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    windows = starts
    if progress:
        from tqdm.auto import tqdm
        windows = tqdm(starts, desc="perplexity")
    try:
        for begin, end, first in windows:
            ids = tokens[begin:end].to(device).unsqueeze(0)
            logits = logits_of(model(ids))
            if logits.dim() != 3 or logits.shape[:2] != ids.shape:
                raise ValueError(f"the model must return logits of shape [1, {ids.shape[1]}, vocab] for input "
                                 f"[1, {ids.shape[1]}], got {list(logits.shape)}")
            pred = logits[0, first - begin - 1:end - begin - 1].double()   # position p predicts token p + 1
            target = ids[0, first - begin:end - begin]
            if target.max() >= logits.shape[-1]:
                raise ValueError(f"token id {int(target.max())} is out of the model's vocabulary of "
                                 f"{logits.shape[-1]}")
            nll += float(F.cross_entropy(pred, target, reduction="sum"))
            count += target.numel()
    finally:
        model.train(was_training)
    return math.exp(nll / count)
