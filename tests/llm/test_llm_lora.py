"""Our LoRA (prunekit.llm.lora): exact start, frozen base, merge equals the adapted model."""

import copy
from functools import partial

import pytest
import torch
from torch import nn

import helpers
from prunekit.llm.lora import LoRALinear, add_lora, lora_parameters, merge_lora

transformers = pytest.importorskip("transformers")

tiny_llama = partial(helpers.tiny_llama, kv=2)


def tokens(n=3, seq=12, seed=1):
    return helpers.token_ids(n, seq, seed)


def train_a_bit(model, ids, steps=5):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(steps):
        logits = model(ids).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_at_init_outputs_are_unchanged_and_only_lora_parameters_train():
    model = tiny_llama()
    ids = tokens()
    with torch.no_grad():
        want = model(ids).logits
    names = add_lora(model, r=4, alpha=8)
    assert len(names) == 2 * 7 and all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora_parameters(model)}
    assert sum(p.numel() for p in lora_parameters(model)) == sum(4 * (m.in_features + m.out_features)
                                                                 for m in model.modules() if isinstance(m, LoRALinear))
    for m in model.modules():
        if isinstance(m, LoRALinear):
            assert (m.lora_B == 0).all() and m.lora_A.abs().sum() > 0 and m.scaling == 2.0


def test_training_moves_only_lora_and_merge_reproduces_the_adapted_outputs():
    model = tiny_llama()
    base = copy.deepcopy(model)
    ids = tokens()
    add_lora(model, r=2, alpha=4, targets=("q_proj", "v_proj"), dropout=0.0)
    train_a_bit(model, ids)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base.get_parameter(n.replace(".base.", ".")))
    with torch.no_grad():
        adapted = model(ids).logits
        assert not torch.allclose(adapted, base(ids).logits, atol=1e-4)
    merged = merge_lora(model)
    assert len(merged) == 4 and not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(base.state_dict())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, adapted, atol=1e-5)
    # only the targets' weights changed
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, base.get_parameter(n))}
    assert changed == {f"model.layers.{i}.self_attn.{t}.weight" for i in range(2) for t in ("q_proj", "v_proj")}


def test_lora_on_a_plain_linear_equals_the_formula():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    seq = nn.Sequential(lin)
    add_lora(seq, r=3, alpha=6, targets=("0",), dropout=0.0)
    lora = seq[0]
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 6)
    want = x @ lin.weight.T + lin.bias + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    assert torch.allclose(seq(x), want, atol=1e-6)


@pytest.mark.parametrize("kwargs,error", [({"r": 0}, ValueError), ({"alpha": 0}, ValueError),
                                          ({"dropout": 1.0}, ValueError), ({"targets": ("nope",)}, ValueError),
                                          ({"targets": ()}, TypeError), ({"r": 2.5}, TypeError)])
def test_bad_arguments_raise_and_change_nothing(kwargs, error):
    model = tiny_llama()
    with pytest.raises(error):
        add_lora(model, **kwargs)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_adding_twice_is_refused():
    model = tiny_llama()
    add_lora(model)
    with pytest.raises(ValueError, match="merge_lora"):
        add_lora(model)
