"""A tiny LLaMA trained from scratch on Python's own documentation: the book's language model.

Everything is local: the text is ``pydoc_data.topics`` (the help topics that ship with every
CPython, about 465k characters of English prose and code), split by topic into a training
part and a held-out part (every tenth topic in sorted order) that is never used for
calibration; the tokenizer is a byte-level BPE of :data:`VOCAB_SIZE` tokens trained here with
Hugging Face ``tokenizers`` on the training part (deterministic, under a second); the model is a
Hugging Face ``LlamaForCausalLM`` (RMSNorm, rotary attention with q/k/v/o projections, a SwiGLU
MLP with gate/up/down projections: the layer names of the LLM pruning literature) with a tiny
:func:`config`. ``python -m prunekit.zoo build tinylm`` trains it (:func:`train_lm`) in a few
minutes on one CPU thread; ``prunekit.zoo.load("tinylm")`` loads the shipped weights.

Needs ``transformers`` and ``tokenizers`` (``pip install prunekit[llm]``), imported on use.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_choice, check_int, check_number
from .perplexity import logits_of

__all__ = ["VOCAB_SIZE", "TINY_CONFIG", "corpus_text", "tokenizer", "tokens", "decode", "config", "tiny_llama",
           "calibration", "train_lm", "generate", "next_token_accuracy"]

VOCAB_SIZE = 512
#: The architecture of the zoo's "tinylm" (about 0.79M parameters, 3 MB in float32).
TINY_CONFIG: dict[str, Any] = {"vocab_size": VOCAB_SIZE, "hidden_size": 128, "intermediate_size": 256,
                               "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
                               "max_position_embeddings": 256, "tie_word_embeddings": False}
SPLITS = ("train", "test")
HELD_OUT_FROM = 0.9


def corpus_text(split: str = "train") -> str:
    """The text of ``pydoc_data.topics``, topics in sorted order, joined by blank lines; ``"test"``
    holds the topics that start in the last 10% of the characters (``typesmethods`` to ``yield``
    in CPython 3.11: about 8% of the text), ``"train"`` all the others."""
    split = check_choice("split", split, SPLITS)
    from pydoc_data.topics import topics
    keys = sorted(topics)
    total = sum(len(topics[k]) for k in keys)
    chosen, start = [], 0
    for k in keys:
        if (start >= HELD_OUT_FROM * total) == (split == "test"):
            chosen.append(k)
        start += len(topics[k])
    return "\n\n".join(topics[k].strip() for k in chosen) + "\n"


@lru_cache(maxsize=4)
def tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``vocab_size`` tokens (256 bytes + merges),
    trained on the training split only."""
    vocab_size = check_int("vocab_size", vocab_size, minimum=257)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(corpus_text("train").split("\n\n"), trainer=trainer)
    return tok


@lru_cache(maxsize=4)
def _tokens(split: str, vocab_size: int) -> torch.Tensor:
    return torch.tensor(tokenizer(vocab_size).encode(corpus_text(split)).ids, dtype=torch.long)


def tokens(split: str = "train", vocab_size: int = VOCAB_SIZE) -> torch.Tensor:
    """The token ids of a split, one long 1-D tensor (a copy)."""
    return _tokens(check_choice("split", split, SPLITS), check_int("vocab_size", vocab_size, minimum=257)).clone()


def decode(ids: torch.Tensor | list[int], vocab_size: int = VOCAB_SIZE) -> str:
    """Text of token ids."""
    return tokenizer(vocab_size).decode([int(i) for i in ids])


def config(**overrides: Any):
    """A ``transformers.LlamaConfig`` of :data:`TINY_CONFIG` with ``overrides``."""
    from transformers import LlamaConfig
    return LlamaConfig(**{**TINY_CONFIG, **overrides})


def tiny_llama(**overrides: Any) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` of :func:`config` (seed torch first)."""
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM(config(**overrides))


def calibration(ids: torch.Tensor, nsamples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``[nsamples, seq_len]`` windows at random starts of ``ids``, as the references sample C4/WikiText."""
    nsamples = check_int("nsamples", nsamples, minimum=1)
    seq_len = check_int("seq_len", seq_len, minimum=1)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.numel() <= seq_len:
        raise ValueError(f"ids must be a 1-D tensor longer than seq_len={seq_len}")
    g = torch.Generator().manual_seed(check_int("seed", seed))
    starts = torch.randint(0, ids.numel() - seq_len, (nsamples,), generator=g)
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])


def train_lm(model: nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int = 16, seq_len: int = 128,
             lr: float = 3e-3, warmup: int = 50, weight_decay: float = 0.0, seed: int = 0,
             callback: Callable[[int, float], None] | None = None, progress: bool = True) -> list[float]:
    """Next-token training on random windows of ``ids`` (AdamW, linear warm-up then cosine decay to 0,
    gradient clipping at 1). Returns the training loss of every step."""
    steps = check_int("steps", steps, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seq_len = check_int("seq_len", seq_len, minimum=2)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    warmup = check_int("warmup", warmup, minimum=0)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) *
                                              0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
    model.train()
    history: list[float] = []
    it: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="training tinylm")
    for step in it:
        starts = torch.randint(0, ids.numel() - seq_len - 1, (batch_size,), generator=g)
        batch = torch.stack([ids[s:s + seq_len + 1] for s in starts.tolist()])
        logits = logits_of(model(batch[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        history.append(value)
        if callback is not None:
            callback(step, value)
        if progress and step % 20 == 0:
            it.set_postfix(loss=f"{value:.3f}")
    model.eval()
    return history


@torch.no_grad()
def next_token_accuracy(model: nn.Module, ids: torch.Tensor, seq_len: int = 128) -> float:
    """Top-1 next-token accuracy over disjoint windows of ``ids``."""
    was = model.training
    model.eval()
    hit = total = 0
    for b in range(0, ids.numel() - 1, seq_len):
        chunk = ids[b:b + seq_len + 1]
        if chunk.numel() < 2:
            break
        pred = logits_of(model(chunk[:-1].unsqueeze(0)))[0].argmax(-1)
        hit += int((pred == chunk[1:]).sum())
        total += chunk.numel() - 1
    model.train(was)
    return hit / total


@torch.no_grad()
def generate(model: nn.Module, prompt: str, max_new_tokens: int = 60, vocab_size: int = VOCAB_SIZE) -> str:
    """Greedy continuation of ``prompt`` (deterministic), the prompt included."""
    ids = torch.tensor(tokenizer(vocab_size).encode(prompt).ids, dtype=torch.long)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", 10 ** 9)
    was = model.training
    model.eval()
    for _ in range(check_int("max_new_tokens", max_new_tokens, minimum=0)):
        logits = logits_of(model(ids[-limit:].unsqueeze(0)))
        ids = torch.cat([ids, logits[0, -1].argmax().reshape(1)])
    model.train(was)
    return decode(ids, vocab_size)
