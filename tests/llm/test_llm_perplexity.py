"""Sliding-window perplexity (prunekit.llm.perplexity): known answers."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import helpers
from prunekit.llm import perplexity


class Uniform(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.vocab) + 0 * self.w


class Unigram(nn.Module):
    """Ignores the context: the same distribution at every position."""

    def __init__(self, logp):
        super().__init__()
        self.logp = logp

    def forward(self, ids):
        return self.logp.expand(*ids.shape, -1)


class Counter(nn.Module):
    """Knows the sequence x_{t+1} = x_t + 1 mod V, but only once it has seen ``need`` tokens."""

    def __init__(self, vocab, need=1, margin=60.0):
        super().__init__()
        self.vocab, self.need, self.margin = vocab, need, margin

    def forward(self, ids):
        out = torch.zeros(*ids.shape, self.vocab)
        nxt = (ids + 1) % self.vocab
        sure = torch.arange(ids.shape[1]) + 1 >= self.need            # position p has seen p + 1 tokens
        out.scatter_(-1, nxt.unsqueeze(-1), self.margin * sure.to(out.dtype).expand_as(ids).unsqueeze(-1))
        return out


@pytest.mark.parametrize("seq_len,stride", [(16, 16), (16, 8), (16, 1), (200, 200), (7, 3)])
def test_a_uniform_model_has_perplexity_the_vocabulary_size(seq_len, stride):
    tokens = torch.randint(0, 37, (101,), generator=torch.Generator().manual_seed(0))
    assert perplexity(Uniform(37), tokens, seq_len=seq_len, stride=stride) == pytest.approx(37, rel=1e-12)


def test_a_model_that_knows_the_sequence_has_perplexity_one():
    tokens = torch.arange(300) % 50
    assert perplexity(Counter(50), tokens, seq_len=32, stride=16) == pytest.approx(1.0, abs=1e-9)


@given(total=st.integers(2, 60), seq_len=st.integers(2, 20), stride_frac=st.floats(0.01, 1.0), seed=st.integers(0, 50))
@settings(max_examples=60)
def test_every_token_but_the_first_is_scored_exactly_once(total, seq_len, stride_frac, seed):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(11, generator=g, dtype=torch.float64), dim=0)
    tokens = torch.randint(0, 11, (total,), generator=g)
    stride = max(1, round(stride_frac * seq_len))
    expected = math.exp(-float(logp[tokens[1:]].sum()) / (total - 1))
    got = perplexity(Unigram(logp), tokens, seq_len=seq_len, stride=stride)
    if stride == seq_len and total > seq_len:                      # disjoint windows skip each window's first token
        scored = torch.ones(total, dtype=torch.bool)
        scored[::seq_len] = False
        expected = math.exp(-float(logp[tokens[scored]].sum()) / int(scored.sum()))
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seq_len,stride", [(16, 4), (16, 8), (10, 7)])
def test_scored_tokens_after_the_first_window_see_at_least_seq_len_minus_stride_tokens(seq_len, stride):
    vocab, total = 13, 200
    tokens = torch.arange(total) % vocab
    need = seq_len - stride                                       # context length the model requires to be sure
    ppl = perplexity(Counter(vocab, need=need), tokens, seq_len=seq_len, stride=stride)
    # only the tokens 1..need-1 of the first window are predicted without enough context (uniformly)
    expected = math.exp((need - 1) * math.log(vocab) / (total - 1))
    assert ppl == pytest.approx(expected, rel=1e-6)


def test_hugging_face_causal_lm_single_window_equals_its_own_loss():
    pytest.importorskip("transformers")
    model = helpers.tiny_llama().train()
    ids = torch.randint(0, 64, (40,))
    with torch.no_grad():
        loss = model.eval()(ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss
    model.train()
    assert perplexity(model, ids) == pytest.approx(math.exp(float(loss)), rel=1e-5)   # seq_len from the config
    assert model.training                                          # mode restored
    # sliding windows on a longer stream: finite, and at least as good with more context
    long = torch.randint(0, 64, (150,))
    assert math.isfinite(perplexity(model, long, seq_len=32, stride=16))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(tokens=torch.tensor([1.0, 2.0])), TypeError, "tokens"),
    (dict(tokens=[1, 2, 3]), TypeError, "tokens"),
    (dict(tokens=torch.tensor([1])), ValueError, "tokens"),
    (dict(tokens=torch.zeros(2, 5, dtype=torch.long)), ValueError, "tokens"),
    (dict(tokens=torch.tensor([1, -2, 3])), ValueError, "tokens"),
    (dict(seq_len=1), ValueError, "seq_len"),
    (dict(seq_len=8, stride=9), ValueError, "stride"),
    (dict(seq_len=8, stride=0), ValueError, "stride"),
    (dict(seq_len=None), ValueError, "seq_len"),
    (dict(tokens=torch.tensor([1, 99, 3])), ValueError, "vocabulary"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(tokens=torch.tensor([1, 2, 3, 4]), seq_len=8)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        perplexity(Uniform(10), args.pop("tokens"), **args)


def test_a_model_that_is_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match="model"):
        perplexity(lambda ids: ids, torch.tensor([1, 2, 3]), seq_len=4)
