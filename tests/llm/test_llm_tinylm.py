"""The book's tiny language model (prunekit.llm.tinylm) and its zoo entry "tinylm"."""

import hashlib

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from prunekit import zoo  # noqa: E402
from prunekit.llm import perplexity, prune_sequential, tinylm  # noqa: E402


def test_the_splits_partition_the_topics_and_the_held_out_part_is_about_a_tenth():
    from pydoc_data.topics import topics
    train, test = tinylm.corpus_text("train"), tinylm.corpus_text("test")
    parts = set(train.strip().split("\n\n")) | set(test.strip().split("\n\n"))
    for text in topics.values():
        assert (text.strip() in train) != (text.strip() in test)
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.15
    assert parts


def test_tokenizer_is_deterministic_byte_level_and_round_trips():
    tok = tinylm.tokenizer()
    assert tok.get_vocab_size() == tinylm.VOCAB_SIZE
    tinylm.tokenizer.cache_clear()
    assert tinylm.tokenizer().to_str() == tok.to_str()           # trained again: the same merges
    text = tinylm.corpus_text("test")[:2000] + " naïve ünïcode → ok"
    assert tinylm.decode(tinylm.tokenizer().encode(text).ids) == text
    ids = tinylm.tokens("test")
    assert ids.dtype == torch.long and ids.dim() == 1 and 0 <= int(ids.min()) and int(ids.max()) < 512


def test_calibration_windows_are_slices_of_the_given_ids():
    ids = torch.arange(1000)
    c = tinylm.calibration(ids, 8, 32, seed=3)
    assert c.shape == (8, 32)
    assert ((c[:, 1:] - c[:, :-1]) == 1).all()
    assert torch.equal(c, tinylm.calibration(ids, 8, 32, seed=3))
    with pytest.raises(ValueError, match="seq_len"):
        tinylm.calibration(ids[:10], 2, 32)


def test_train_lm_lowers_the_loss_of_a_tiny_model():
    torch.manual_seed(0)
    model = tinylm.tiny_llama(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    ids = tinylm.tokens("train")[:20000]
    before = perplexity(model, ids[:2000], seq_len=64)
    hist = tinylm.train_lm(model, ids, steps=30, batch_size=8, seq_len=64, lr=1e-2, warmup=5, progress=False)
    assert len(hist) == 30 and not model.training
    assert perplexity(model, ids[:2000], seq_len=64) < before
    assert tinylm.generate(model, "The", 5).startswith("The")


def test_the_zoo_recipe_uses_the_tiny_config():
    assert zoo.RECIPES["tinylm"]["model_kwargs"] == tinylm.TINY_CONFIG
    assert zoo.RECIPES["tinylm"]["dataset_kwargs"]["vocab_size"] == tinylm.VOCAB_SIZE


shipped = pytest.mark.skipif("tinylm" not in zoo.available(), reason="tinylm checkpoint not built")


@shipped
def test_the_shipped_tinylm_loads_and_reproduces_its_recorded_numbers():
    entry = zoo.info("tinylm")
    model = zoo.load("tinylm")
    train_ids, test_ids = zoo.loaders("tinylm")
    assert test_ids.numel() == entry["test_tokens"] and train_ids.numel() == entry["train_tokens"]
    assert hashlib.sha256(tinylm.tokenizer().to_str().encode()).hexdigest() == entry["tokenizer_sha256"]
    ppl = perplexity(model, test_ids, seq_len=entry["recipe"]["seq_len"])
    assert ppl == pytest.approx(entry["test_perplexity"], rel=1e-4)
    assert ppl < 30
    assert tinylm.generate(model, zoo.LM_PROMPT, 40) == entry["sample"]


@shipped
@pytest.mark.slow
def test_tinylm_orderings_at_50_percent():
    """The chapter's claims on the tiny LM: dense < SparseGPT <= min(Wanda, magnitude) at 50%, and
    4:8 <= 2:4 for SparseGPT, with 32 calibration sequences of the training split."""
    train_ids, test_ids = zoo.loaders("tinylm")
    calib = tinylm.calibration(train_ids, 32, 128, seed=0)
    ppl = {"dense": perplexity(zoo.load("tinylm"), test_ids, seq_len=128)}
    for method, s, n, m in [("magnitude", 0.5, 0, 0), ("wanda", 0.5, 0, 0), ("sparsegpt", 0.5, 0, 0),
                            ("sparsegpt", None, 2, 4), ("sparsegpt", None, 4, 8)]:
        model = zoo.load("tinylm")
        prune_sequential(model, calib, method, s, prunen=n, prunem=m, progress=False)
        ppl[method if not m else f"{method} {n}:{m}"] = perplexity(model, test_ids, seq_len=128)
    assert ppl["dense"] < ppl["sparsegpt"] <= min(ppl["wanda"], ppl["magnitude"])
    assert ppl["sparsegpt 4:8"] <= ppl["sparsegpt 2:4"]
