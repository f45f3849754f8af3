"""apply_masks / remove_masks behave like torch.nn.utils.prune."""

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from helpers import tiny_cnn


def random_masks(model, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(w.shape, generator=g) > p for n, w in model.named_parameters() if n.endswith("weight") and w.dim() > 1}


def test_reparametrisation_is_torch_prune_compatible():
    model = tiny_cnn()
    masks = random_masks(model)
    pk.apply_masks(model, masks)
    assert torch_prune.is_pruned(model)
    conv = model[0]
    assert "weight_orig" in dict(conv.named_parameters())
    assert "weight_mask" in dict(conv.named_buffers())
    assert "weight" not in dict(conv.named_parameters())
    assert torch.equal(conv.weight, conv.weight_orig * masks["0.weight"])
    # torch's own remove() undoes our reparametrisation
    torch_prune.remove(conv, "weight")
    assert isinstance(conv.weight, nn.Parameter)
    assert torch.equal(conv.weight == 0, ~masks["0.weight"] | (conv.weight == 0))


def test_forward_equals_manually_masked_weights():
    model, ref = tiny_cnn(), tiny_cnn()
    masks = random_masks(model)
    pk.apply_masks(model, masks)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    x = torch.randn(4, 3, 8, 8)
    model.eval(), ref.eval()
    assert torch.allclose(model(x), ref(x), atol=1e-6)


def test_applying_twice_composes_like_pruning_container():
    model = tiny_cnn()
    a, b = random_masks(model, seed=1), random_masks(model, seed=2)
    pk.apply_masks(model, a)
    pk.apply_masks(model, b)
    got = pk.get_masks(model)
    for n in a:
        assert torch.equal(got[n], a[n] & b[n])
    # the same thing done with torch's API gives the same buffers
    ref = tiny_cnn()
    for n, m in ref.named_modules():
        if f"{n}.weight" in a:
            torch_prune.custom_from_mask(m, "weight", a[f"{n}.weight"])
            torch_prune.custom_from_mask(m, "weight", b[f"{n}.weight"])
            assert torch.equal(m.weight_mask.bool(), got[f"{n}.weight"])


def test_remove_masks_makes_zeros_permanent():
    model = tiny_cnn()
    masks = pk.prune(model, 0.8)
    pk.remove_masks(model)
    assert not torch_prune.is_pruned(model)
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.all(params[n][~m] == 0)


def test_fine_tuning_keeps_pruned_weights_at_zero():
    model = tiny_cnn()
    masks = pk.prune(model, 0.6)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3, 8, 8)).square().mean().backward()
        opt.step()
    model(torch.randn(1, 3, 8, 8))  # the pre-hook refreshes weight
    for n, t in pk.targets.all_parameters(model).items():
        if n in masks:
            assert torch.all(t.tensor[~masks[n]] == 0)
            assert torch.all(getattr(t.module, "weight")[~masks[n]] == 0)


def test_iterative_prune_reaches_total_sparsity_and_never_unprunes():
    model = tiny_cnn()
    first = pk.prune(model, 0.5, criterion="random", seed=3)
    second = pk.prune(model, 0.75, criterion="random", seed=4)
    total = sum(m.numel() for m in second.values())
    assert sum(int((~m).sum()) for m in second.values()) == round(0.75 * total)
    for n in first:
        assert not (second[n] & ~first[n]).any()
    assert torch.equal(pk.get_masks(model)[n], second[n])


def test_include_exclude_choose_parameters():
    model = tiny_cnn()
    masks = pk.prune(model, 0.5, exclude=["6.weight"])
    assert list(masks) == ["0.weight", "3.weight"]
    assert not hasattr(model[6], "weight_mask")
    masks = pk.prune(tiny_cnn(), 0.5, include="0.*")
    assert set(masks) == {"0.weight", "0.bias"}
