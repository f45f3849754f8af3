"""apply_masks is all-or-nothing (P19), and copy_model / pruning_hooks (P7)."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.core import masks as core_masks
from prunekit.core.masks import copy_model, pruning_hooks


def three_layers() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def state(model: nn.Module) -> dict:
    """Everything masking may change: slots, values, hooks, plain tensor attributes."""
    out = {}
    for name, m in model.named_modules():
        out[name] = (
            {k: (id(v), v.detach().clone()) for k, v in m._parameters.items()},
            {k: (id(v), v.clone()) for k, v in m._buffers.items()},
            list(m._forward_pre_hooks.items()),
            sorted(k for k, v in vars(m).items() if isinstance(v, torch.Tensor)),
        )
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        (pa, ba, ha, ta), (pb, bb, hb, tb) = a[name], b[name]
        assert pa.keys() == pb.keys() and ba.keys() == bb.keys(), name
        for k in pa:
            assert pa[k][0] == pb[k][0] and torch.equal(pa[k][1], pb[k][1]), (name, k)
        for k in ba:
            assert ba[k][0] == bb[k][0] and torch.equal(ba[k][1], bb[k][1]), (name, k)
        assert ha == hb and ta == tb, name


@pytest.mark.parametrize("premasked", [False, True])
def test_a_failure_on_the_second_of_three_parameters_rolls_back_exactly(monkeypatch, premasked):
    model = three_layers()
    if premasked:
        pk.apply_masks(model, {"0.weight": torch.rand(6, 4) > 0.5})
    before = state(model)
    x = torch.randn(2, 4)
    with torch.no_grad():
        y = model(x)
    real, calls = core_masks._mask_use, []

    def flaky(use, mask):
        calls.append(use)
        real(use, mask)
        if len(calls) == 2:  # two parameters are masked when this fails, the third is not
            raise RuntimeError("injected failure")

    monkeypatch.setattr(core_masks, "_mask_use", flaky)
    masks = {f"{i}.weight": torch.rand_like(model[i].weight) > 0.5 for i in (0, 2, 4)}
    with pytest.raises(RuntimeError, match="injected"):
        pk.apply_masks(model, masks)
    assert len(calls) == 2
    assert_same_state(state(model), before)
    monkeypatch.setattr(core_masks, "_mask_use", real)
    with torch.no_grad():
        assert torch.equal(model(x), y)
    assert torch_prune.is_pruned(model) == premasked
    pk.apply_masks(model, masks)  # and it still works afterwards
    assert all(pruning_hooks(model[i]) for i in (0, 2, 4))


def test_copy_model_keeps_or_folds_masks_and_leaves_the_model_alone():
    model = three_layers()
    pk.apply_masks(model, {"2.weight": torch.rand(5, 6) > 0.5})
    before = state(model)
    x = torch.randn(3, 4)
    with torch.no_grad():
        y = model(x)
    kept = copy_model(model, fold=False)
    folded = copy_model(model, fold=True)
    assert_same_state(state(model), before)
    assert pruning_hooks(kept[2]) and hasattr(kept[2], "weight_mask")
    assert not pruning_hooks(folded[2]) and not hasattr(folded[2], "weight_mask")
    assert not torch_prune.is_pruned(folded)
    assert isinstance(folded[2].weight, nn.Parameter)
    assert torch.equal(folded[2].weight, model[2].weight)
    assert folded[2].weight is not model[2].weight_orig
    with torch.no_grad():
        assert torch.equal(kept(x), y) and torch.equal(folded(x), y)


def test_copy_model_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        copy_model("not a model", fold=True)
    with pytest.raises(TypeError, match="fold"):
        copy_model(nn.Linear(2, 2), fold="yes")


def test_pruning_hooks_is_public_in_core_masks():
    lin = nn.Linear(3, 2)
    assert pruning_hooks(lin) == []
    pk.apply_masks(lin, {"weight": torch.ones(2, 3, dtype=torch.bool)})
    assert len(pruning_hooks(lin)) == 1 and pruning_hooks(lin, "bias") == []
    assert core_masks.pruning_hooks is pruning_hooks


def test_a_first_mask_is_the_same_reparametrisation_as_torch_custom_from_mask():
    ours, theirs = three_layers(), three_layers()
    mask = torch.rand(6, 4) > 0.5
    pk.apply_masks(ours, {"0.weight": mask})
    torch_prune.custom_from_mask(theirs[0], "weight", mask)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert [type(h) for h in ours[0]._forward_pre_hooks.values()] == [torch_prune.CustomFromMask]
    assert ours[0].weight_orig is not None and not isinstance(ours[0].weight, nn.Parameter)
    x = torch.randn(2, 4)
    assert torch.equal(ours(x), theirs(x))
    second = torch.rand(6, 4) > 0.5  # a second mask composes the torch way
    pk.apply_masks(ours, {"0.weight": second})
    assert [type(h) for h in ours[0]._forward_pre_hooks.values()] == [torch_prune.PruningContainer]
    assert torch.equal(ours[0].weight_mask.bool(), mask & second)
