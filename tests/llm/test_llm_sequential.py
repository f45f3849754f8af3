"""The sequential driver (prunekit.llm.prune_sequential) on a tiny random LLaMA and on a plain module."""

import copy

import pytest
import torch
from torch import nn

from helpers import PlainLM
import helpers
from prunekit.llm import find_blocks, prune_sequential, wanda_prune_layer
from prunekit.llm.sequential import _groups

transformers = pytest.importorskip("transformers")

tiny_llama = helpers.tiny_llama


def calib(n=6, seq=16, seed=1):
    return helpers.token_ids(n, seq, seed)

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]


def block_inputs(model, tokens, index):
    """The hidden states the model's forward pass hands to block ``index``, per sequence."""
    seen = []
    h = model.model.layers[index].register_forward_pre_hook(lambda m, a, k: seen.append(
        (a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True)
    with torch.no_grad():
        for row in tokens:
            model(row.unsqueeze(0))
    h.remove()
    return seen


def linear_inputs(model, tokens, name):
    seen = []
    h = model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for row in tokens:
            model(row.unsqueeze(0))
    h.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_linear_of_every_block_gets_exactly_its_sparsity(method):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune_sequential(model, calib(), method, 0.5, progress=False)
    expected = {f"model.layers.{i}.{n}.weight" for i in range(2) for n in LINEARS}
    assert set(masks) == expected
    for name, keep in masks.items():
        w = model.get_parameter(name).detach()
        assert keep.shape == w.shape and keep.dtype == torch.bool
        assert int((~keep).sum()) == w.numel() // 2               # 32 and 64 columns: every count is exact
        assert (w[~keep] == 0).all()
    # embeddings, norms and the LM head are untouched
    for k, v in model.state_dict().items():
        if k not in masks:
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_for_every_method(method, n, m):
    model = tiny_llama()
    masks = prune_sequential(model, calib(), method, None, prunen=n, prunem=m, progress=False)
    for name, keep in masks.items():
        assert (keep.reshape(keep.shape[0], -1, m).sum(-1) == n).all(), name
        assert (model.get_parameter(name).detach()[~keep] == 0).all()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_block_two_is_calibrated_on_the_pruned_block_ones_outputs(method):
    dense = tiny_llama()
    model = copy.deepcopy(dense)
    tokens = calib()
    seen = []                                                     # what the driver hands to block 2
    spy = model.model.layers[1].register_forward_pre_hook(
        lambda m, a, k: seen.append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True)
    prune_sequential(model, tokens, method, 0.5, progress=False)
    spy.remove()
    pruned_outputs = block_inputs(model, tokens, 1)               # block 1 pruned, as in the final model
    dense_outputs = block_inputs(dense, tokens, 1)
    assert len(seen) >= len(tokens)
    for got, want, dense_want in zip(seen[-len(tokens):], pruned_outputs, dense_outputs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got, dense_want, rtol=1e-3, atol=1e-4)   # so the test can tell


def test_wanda_masks_equal_the_layer_function_on_inputs_from_the_pruned_prefix():
    """Wanda's reference captures all Linears of a block at once, from the block's dense weights fed
    by the pruned earlier blocks: rebuild exactly that model and compare masks."""
    dense, tokens = tiny_llama(), calib()
    model = copy.deepcopy(dense)
    masks = prune_sequential(model, tokens, "wanda", 0.5, progress=False)
    probe = copy.deepcopy(dense)
    probe.model.layers[0].load_state_dict(model.model.layers[0].state_dict())   # pruned block 1, dense block 2
    for i, mdl in ((0, dense), (1, probe)):
        for n in LINEARS:
            name = f"model.layers.{i}.{n}"
            layer = copy.deepcopy(dense.get_submodule(name))
            keep = wanda_prune_layer(layer, linear_inputs(mdl, tokens, name), 0.5)
            assert torch.equal(keep, masks[name + ".weight"]), name


def test_true_sequential_groups_are_those_of_the_reference():
    model = tiny_llama()
    block = model.model.layers[0]
    batch = []
    h = block.register_forward_pre_hook(lambda m, a, k: batch.append((a[0], tuple(a[1:]), dict(k))), with_kwargs=True)
    with torch.no_grad():
        model(calib(1))
    h.remove()
    linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    expected = [sorted(LINEARS[:3]), [LINEARS[3]], sorted(LINEARS[4:6]), [LINEARS[6]]]
    for _ in range(30):      # freed activations' memory is reused: the grouping must not depend on it
        assert [sorted(g) for g in _groups(block, linears, batch[0])] == expected


@pytest.mark.slow
def test_sparsegpt_on_the_tiny_lm_is_deterministic():
    """Regression: grouping Linears by the address of inputs that were already freed let a later
    activation reuse the address, so the true-sequential groups (and the weights) varied between runs."""
    from prunekit import zoo
    from prunekit.llm import tinylm
    base = zoo.load("tinylm")
    tokens = tinylm.calibration(tinylm.tokens("train"), 32, 128, seed=0)
    runs = []
    for _ in range(3):
        model = copy.deepcopy(base)
        prune_sequential(model, tokens, "sparsegpt", None, prunen=2, prunem=4, progress=False)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_sparsegpt_true_sequential_on_and_off_differ_only_after_the_first_group():
    tokens = calib()
    a, b = tiny_llama(), tiny_llama()
    ma = prune_sequential(a, tokens, "sparsegpt", 0.5, true_sequential=True, progress=False)
    mb = prune_sequential(b, tokens, "sparsegpt", 0.5, true_sequential=False, progress=False)
    for n in LINEARS[:3]:                                         # the first group sees the same inputs either way
        assert torch.equal(ma[f"model.layers.0.{n}.weight"], mb[f"model.layers.0.{n}.weight"])
    assert any(not torch.equal(ma[k], mb[k]) for k in ma)


def test_nsamples_uses_the_first_sequences_and_batching_does_not_change_the_result():
    tokens = calib(8)
    a, b, c = tiny_llama(), tiny_llama(), tiny_llama()
    ma = prune_sequential(a, tokens, "wanda", 0.5, nsamples=4, progress=False)
    mb = prune_sequential(b, tokens[:4], "wanda", 0.5, batch_size=2, progress=False)
    mc = prune_sequential(c, tokens, "wanda", 0.5, progress=False)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert any(not torch.equal(ma[k], mc[k]) for k in ma)


def test_one_sparsity_per_block():
    model = tiny_llama()
    masks = prune_sequential(model, calib(), "wanda", [0.25, 0.75], progress=False)
    for name, keep in masks.items():
        s = 0.25 if ".layers.0." in name else 0.75
        assert int((~keep).sum()) == int(keep.shape[1] * s) * keep.shape[0]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_a_plain_module_with_blocks(method):
    torch.manual_seed(0)
    model = PlainLM()
    head = model.head.weight.detach().clone()
    assert find_blocks(model) is model.blocks
    masks = prune_sequential(model, torch.randint(0, 20, (4, 10)), method, 0.5, progress=False)
    assert set(masks) == {f"blocks.{i}.mlp.{j}.weight" for i in range(3) for j in (0, 2)}
    assert all(int((~k).sum()) == k.numel() // 2 for k in masks.values())
    assert torch.equal(model.head.weight, head)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(method="obs"), ValueError, "method"),
    (dict(sparsity=1.0), ValueError, "sparsity"),
    (dict(sparsity=[0.5]), ValueError, "sparsity"),
    (dict(sparsity="half"), TypeError, "sparsity"),
    (dict(sparsity=0.5, prunen=4, prunem=4), ValueError, "prunen"),
    (dict(sparsity=None, prunen=2, prunem=4, blocksize=6), ValueError, "blocksize"),
    (dict(calib_tokens=torch.rand(2, 8)), TypeError, "calib_tokens"),
    (dict(calib_tokens=torch.zeros(8, dtype=torch.long)), ValueError, "calib_tokens"),
    (dict(nsamples=0), ValueError, "nsamples"),
    (dict(nsamples=99), ValueError, "nsamples"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(true_sequential="yes"), TypeError, "true_sequential"),
    (dict(blocks=nn.Linear(2, 2)), TypeError, "blocks"),
])
def test_bad_input_leaves_the_model_untouched(kwargs, exc, match):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = dict(calib_tokens=calib(), method="wanda", sparsity=0.5, progress=False)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        prune_sequential(model, args.pop("calib_tokens"), args.pop("method"), args.pop("sparsity"), **args)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_model_without_blocks_asks_for_blocks():
    with pytest.raises(ValueError, match="blocks="):
        prune_sequential(nn.Linear(4, 4), torch.zeros(1, 4, dtype=torch.long), "wanda", 0.5, progress=False)
