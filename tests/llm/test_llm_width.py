"""LLM-Pruner width pruning (prunekit.llm.width) on a tiny random LLaMA: compact == masked, exact counts."""

import copy
from functools import partial

import pytest
import torch

import helpers
from prunekit.llm.width import llm_pruner, taylor_importance

transformers = pytest.importorskip("transformers")

tiny_llama = partial(helpers.tiny_llama, layers=3)


def calib(n=4, seq=16, seed=1):
    return helpers.token_ids(n, seq, seed)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kv", [4, 2, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_compacted_model_equals_masked_model_and_loses_exactly_the_groups(kv, bias):
    model = tiny_llama(kv=kv, bias=bias)
    tokens = calib()
    compact, masked = copy.deepcopy(model), copy.deepcopy(model)
    head_s = 0.5 if kv > 1 else 0.0
    kept = llm_pruner(compact, tokens, head_sparsity=head_s, mlp_sparsity=0.25, keep_first=1)
    kept_m = llm_pruner(masked, tokens, head_sparsity=head_s, mlp_sparsity=0.25, keep_first=1, compact=False)
    assert set(kept) == {1, 2}
    for i in kept:
        assert torch.equal(kept[i]["heads"], kept_m[i]["heads"]) and torch.equal(kept[i]["channels"], kept_m[i]["channels"])
        assert kept[i]["heads"].numel() == kv - int(kv * head_s) and kept[i]["channels"].numel() == 48
    with torch.no_grad():
        out_c, out_m, out = compact(tokens).logits, masked(tokens).logits, model(tokens).logits
    assert torch.allclose(out_c, out_m, atol=1e-5)
    assert not torch.allclose(out_c, out, atol=1e-3)
    # exact sizes: a KV group = (4/kv) query heads of head_dim 8 + 1 key + 1 value head, + o_proj columns
    hd, hidden, per = 8, 32, 4 // kv
    group = (per * hd + 2 * hd) * (hidden + bias) + per * hd * hidden
    channel = 3 * hidden + 2 * bias
    removed = 2 * (int(kv * head_s) * group + 16 * channel)
    assert n_params(model) - n_params(compact) == removed
    assert n_params(masked) == n_params(model)
    # shapes, module attributes, the first block untouched
    attn = compact.model.layers[1].self_attn
    assert attn.q_proj.out_features == attn.o_proj.in_features == per * hd * kept[1]["heads"].numel()
    assert attn.k_proj.out_features == hd * kept[1]["heads"].numel()
    assert compact.model.layers[1].mlp.down_proj.in_features == 48 == compact.model.layers[1].mlp.intermediate_size
    assert compact.model.layers[0].mlp.gate_proj.out_features == 64
    # generation (KV cache) runs and agrees with the masked model
    prompt = tokens[:1, :5]
    assert torch.equal(compact.generate(prompt, max_new_tokens=6, do_sample=False),
                       masked.generate(prompt, max_new_tokens=6, do_sample=False))


def test_the_kept_groups_are_the_most_important_and_match_a_slow_reference():
    model = tiny_llama(kv=2)
    tokens = calib()
    imp = taylor_importance(model, tokens)
    # slow reference: |w * grad| summed per group, computed directly from autograd
    ref = copy.deepcopy(model)
    logits = ref(tokens).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), tokens[:, 1:].reshape(-1))
    loss.backward()
    for i, block in enumerate(ref.model.layers):
        a, m = block.self_attn, block.mlp
        s = {n: (getattr(a, n).weight * getattr(a, n).weight.grad).abs().double() for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        heads = torch.stack([s["q_proj"][g * 16:(g + 1) * 16].sum() + s["k_proj"][g * 8:(g + 1) * 8].sum()
                             + s["v_proj"][g * 8:(g + 1) * 8].sum() + s["o_proj"][:, g * 16:(g + 1) * 16].sum()
                             for g in range(2)])
        t = {n: (getattr(m, n).weight * getattr(m, n).weight.grad).abs().double() for n in ("gate_proj", "up_proj", "down_proj")}
        channels = t["gate_proj"].sum(1) + t["up_proj"].sum(1) + t["down_proj"].sum(0)
        assert torch.allclose(imp[i]["heads"], heads, rtol=1e-4)
        assert torch.allclose(imp[i]["channels"], channels, rtol=1e-4)
    # nothing of the model changed: no grads, flags kept
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    kept = llm_pruner(copy.deepcopy(model), tokens, head_sparsity=0.5, mlp_sparsity=0.5)
    for i in range(3):
        assert int(kept[i]["heads"]) == int(imp[i]["heads"].argmax())
        top = set(imp[i]["channels"].argsort(descending=True)[:32].tolist())
        assert set(kept[i]["channels"].tolist()) == top
    # gradient accumulation over batches gives the same importance
    imp_b = taylor_importance(model, tokens, batch_size=3)
    assert all(torch.allclose(x["channels"], y["channels"], rtol=1e-4) for x, y in zip(imp, imp_b))


def test_keep_first_and_last_and_zero_sparsity():
    model = tiny_llama(layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert llm_pruner(model, calib(), head_sparsity=0.0, mlp_sparsity=0.0) == {}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    kept = llm_pruner(model, calib(), head_sparsity=0.25, mlp_sparsity=0.5, keep_first=1, keep_last=2)
    assert set(kept) == {1}
    assert [b.mlp.up_proj.out_features for b in model.model.layers] == [64, 32, 64, 64]
    assert [b.self_attn.q_proj.out_features for b in model.model.layers] == [32, 24, 32, 32]


@pytest.mark.parametrize("kwargs,error", [({"head_sparsity": 1.0}, ValueError), ({"mlp_sparsity": -0.1}, ValueError),
                                          ({"mlp_sparsity": "0.5"}, ValueError), ({"keep_first": 5}, ValueError),
                                          ({"keep_first": 2, "keep_last": 2}, ValueError),
                                          ({"nsamples": 0}, ValueError), ({"compact": 1}, TypeError)])
def test_bad_arguments_raise_before_anything_changes(kwargs, error):
    model = tiny_llama(layers=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error):
        llm_pruner(model, calib(), **{"head_sparsity": 0.5, "mlp_sparsity": 0.5, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_model_without_llama_blocks_is_rejected():
    model = tiny_llama()
    del model.model.layers[0].mlp.up_proj
    with pytest.raises(ValueError, match="up_proj"):
        llm_pruner(model, calib(), mlp_sparsity=0.5)
