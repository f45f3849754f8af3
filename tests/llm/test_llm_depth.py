"""ShortGPT depth pruning (prunekit.llm.depth): Block Influence and drop_blocks on a tiny random LLaMA."""

from functools import partial

import pytest
import torch

import helpers
from prunekit.llm.depth import block_influence, drop_blocks, least_influential

transformers = pytest.importorskip("transformers")

tiny_llama = partial(helpers.tiny_llama, layers=4, kv=2)


def make_identity(model, i):
    with torch.no_grad():
        model.model.layers[i].self_attn.o_proj.weight.zero_()
        model.model.layers[i].mlp.down_proj.weight.zero_()


def calib(n=4, seq=16, seed=1):
    return helpers.token_ids(n, seq, seed)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_identity_block_has_zero_influence_and_the_others_do_not():
    model = tiny_llama()
    make_identity(model, 2)
    bi = block_influence(model, calib())
    assert bi.shape == (4,) and bi.dtype == torch.float64
    assert abs(float(bi[2])) < 1e-12
    assert (bi[[0, 1, 3]] > 1e-4).all()
    assert least_influential(bi, 1) == [2]


def test_influence_matches_a_direct_computation_and_does_not_depend_on_batching():
    model = tiny_llama()
    tokens = calib()
    with torch.no_grad():
        hs = model(tokens, output_hidden_states=True).hidden_states    # embeddings, then each block's output
    # the last entry is after the final norm in HF: compute block outputs with hooks instead for the last one
    outs = []
    hooks = [b.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for b in model.model.layers]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    ins = [hs[0]] + outs[:-1]
    expected = torch.stack([1 - torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean()
                            for a, b in zip(ins, outs)])
    bi = block_influence(model, tokens)
    assert torch.allclose(bi, expected, atol=1e-10)
    assert torch.allclose(block_influence(model, tokens, batch_size=3), bi, atol=1e-10)
    assert torch.allclose(block_influence(model, tokens, nsamples=2), block_influence(model, tokens[:2]))


def test_dropping_an_identity_block_leaves_outputs_and_generation_unchanged():
    model = tiny_llama()
    make_identity(model, 1)
    tokens = calib()
    pruned = drop_blocks(model, [1])
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4      # a copy by default
    assert len(pruned.model.layers) == 3 and pruned.config.num_hidden_layers == 3
    assert [b.self_attn.layer_idx for b in pruned.model.layers] == [0, 1, 2]
    with torch.no_grad():
        assert torch.allclose(pruned(tokens).logits, model(tokens).logits, atol=1e-5)
    prompt = tokens[:1, :5]
    want = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(pruned.generate(prompt, max_new_tokens=8, do_sample=False), want)


def test_generation_with_the_kv_cache_equals_generation_without_after_dropping_middle_blocks():
    model = drop_blocks(tiny_llama(layers=5), [1, 3])
    prompt = calib()[:1, :6]
    cached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True)
    plain = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)


def test_parameter_count_drops_by_exactly_the_blocks_counts():
    model = tiny_llama(layers=5)
    per_block = [n_params(b) for b in model.model.layers]
    pruned = drop_blocks(model, [0, -1])
    assert n_params(model) - n_params(pruned) == per_block[0] + per_block[4]
    total = n_params(model)
    same = drop_blocks(model, [2], inplace=True)
    assert same is model and len(model.model.layers) == 4 and model.config.num_hidden_layers == 4
    assert total - n_params(model) == per_block[2]


def test_dropping_the_last_blocks_equals_truncating_the_model():
    model = tiny_llama(layers=4)
    tokens = calib()
    pruned = drop_blocks(model, [2, 3])
    outs = []
    hook = model.model.layers[1].register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(tokens)
        hook.remove()
        want = model.lm_head(model.model.norm(outs[0]))
        assert torch.allclose(pruned(tokens).logits, want, atol=1e-5)


@pytest.mark.parametrize("indices,error", [([4], ValueError), ([-5], ValueError), ([1, 1], ValueError),
                                           ([0, 1, 2, 3], ValueError), ([1.0], TypeError), ("1", TypeError),
                                           (3, TypeError), ([True], TypeError)])
def test_bad_indices_raise_and_leave_the_model_untouched(indices, error):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error):
        drop_blocks(model, indices, inplace=True)
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bad_arguments_of_block_influence():
    model = tiny_llama()
    with pytest.raises(TypeError):
        block_influence(model, calib().float())
    with pytest.raises(ValueError):
        block_influence(model, calib(), nsamples=99)
    with pytest.raises(TypeError):
        block_influence("model", calib())
    with pytest.raises(ValueError):
        least_influential(torch.zeros(4), 4)
