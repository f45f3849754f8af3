"""The reconstruction procedures (prunekit.methods.after.reconstruction) return exactly the masks
they leave on the model, obs_prune's mode= (formerly scope=), and the old import paths.
Their numerics are tested in tests/criteria/test_reconstruction.py with the scores."""

import warnings

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.methods.after import reconstruction as rec


def conv_pair(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 6, 6, generator=g), torch.zeros(4, dtype=torch.long)) for _ in range(2)]


@pytest.mark.parametrize("call", [
    lambda m, d: rec.thinet_prune(m, "0.weight", 0.5, d),
    lambda m, d: rec.lasso_channel_prune(m, "0.weight", 0.5, d),
    lambda m, d: rec.obs_prune(m, "2.weight", 0.5, d),
], ids=["thinet", "lasso", "obs"])
def test_returned_masks_are_the_masks_now_applied_over_earlier_masks(call):
    model, d = conv_pair(), data()
    earlier = pk.prune(model, 0.3, "random", scope="layer")
    masks = call(model, d)
    on_model = pk.get_masks(model)
    assert masks and all(torch.equal(masks[n], on_model[n]) for n in masks)
    for n in masks:
        assert not (masks[n] & ~earlier[n]).any()             # never un-prunes
        assert torch.equal(dict(model.named_modules())[n.rsplit(".", 1)[0]].weight,
                           dict(model.named_parameters())[n.replace("weight", "weight_orig")] * masks[n])


def test_thinet_masks_the_filters_and_the_next_layers_slices():
    model, d = conv_pair(), data()
    masks = rec.thinet_prune(model, "0.weight", 0.5, d)
    assert sorted(masks) == ["0.weight", "2.weight"]
    removed = (~masks["0.weight"]).flatten(1).all(1)
    assert int(removed.sum()) == 3
    assert torch.equal((~masks["2.weight"]).all(0).all(-1).all(-1), removed)


def test_obs_mode_matrix_and_the_old_scope_keyword():
    torch.manual_seed(0)
    w, x = torch.randn(4, 10, dtype=torch.float64), torch.randn(40, 10, dtype=torch.float64)
    new_row, mask_row = rec.obs_prune_layer(w, x, 0.5, damp=0)
    assert ((~mask_row).sum(1) == 5).all()
    new_mat, mask_mat = rec.obs_prune_layer(w, x, 0.5, damp=0, mode="matrix")
    assert int((~mask_mat).sum()) == 20
    with pytest.warns(DeprecationWarning, match="mode='row' | 'matrix'"):
        old_new, old_mask = rec.obs_prune_layer(w, x, 0.5, damp=0, scope="layer")
    assert torch.equal(old_mask, mask_mat) and torch.equal(old_new, new_mat)
    model, d = conv_pair(), data()
    twin = conv_pair()
    with pytest.warns(DeprecationWarning, match="obs_prune"):
        a = rec.obs_prune(model, "2.weight", 0.5, d, scope="row")
    b = rec.obs_prune(twin, "2.weight", 0.5, d, mode="row")
    assert torch.equal(a["2.weight"], b["2.weight"])
    with pytest.raises(ValueError, match="mode"):
        rec.obs_prune_layer(w, x, 0.5, mode="layer")
    with pytest.raises(TypeError, match="unexpected keyword argument 'scop'"):
        rec.obs_prune_layer(w, x, 0.5, scop="row")


def test_the_old_import_paths_warn_and_forward():
    import prunekit.criteria.reconstruction as old
    for name in ("thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer"):
        with pytest.warns(DeprecationWarning, match="methods.after.reconstruction"):
            assert getattr(old, name) is getattr(rec, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from prunekit.criteria.reconstruction import contribution_gram, thinet_order  # noqa: F401
    assert pk.methods.after.thinet_prune is rec.thinet_prune
    assert not set(rec.__all__) & set(old.__all__)
