"""Iterative SynFlow (prunekit.methods.before.synflow.prune_synflow): the exponential schedule,
the masks it returns are the masks on the model, validation before any change, and the old
import path."""

import warnings

import pytest
import torch

import prunekit as pk
import prunekit.methods.before.synflow as before_synflow
from helpers import assert_untouched, snapshot
from prunekit.methods.before import prune_synflow
from prunekit.models import MLP, SmallCNN


def test_prune_synflow_reaches_the_sparsity_with_the_exponential_schedule(monkeypatch):
    torch.manual_seed(0)
    model = MLP(16, (32, 32), 4)
    seen = []
    real = before_synflow.make_masks

    def spy(scores, sparsity, **kw):
        seen.append(sparsity)
        return real(scores, sparsity, **kw)

    monkeypatch.setattr(before_synflow, "make_masks", spy)
    masks = prune_synflow(model, 0.9, iterations=4)
    assert seen == pytest.approx([1 - 0.1 ** (k / 4) for k in range(1, 5)])
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.9 * total)
    assert torch.equal(pk.get_masks(model)["fc1.weight"], masks["fc1.weight"])


def test_prune_synflow_one_iteration_is_one_shot_synflow():
    torch.manual_seed(0)
    a, b = MLP(16, (16,), 4), MLP(16, (16,), 4)
    b.load_state_dict(a.state_dict())
    ma = prune_synflow(a, 0.5, iterations=1)
    mb = pk.prune(b, 0.5, criterion="synflow")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)


def test_iterative_synflow_avoids_layer_collapse():
    """At extreme sparsity every layer keeps some weights (Tanaka et al.'s motivation)."""
    torch.manual_seed(0)
    model = MLP(64, (256, 16), 10)
    masks = prune_synflow(model, 0.995, iterations=20)
    assert all(int(m.sum()) > 0 for m in masks.values())


def test_prune_synflow_validates_before_touching_the_model():
    model = SmallCNN(widths=(4,), hidden=None)
    snap = snapshot(model)
    with pytest.raises(ValueError, match="sparsity"):
        prune_synflow(model, 1.0, example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="iterations"):
        prune_synflow(model, 0.5, iterations=0, example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="example_inputs"):
        prune_synflow(model, 0.5)
    assert_untouched(model, snap)


def test_returned_masks_are_the_masks_on_the_model_after_earlier_pruning():
    """A model already masked at 50%: prune_synflow returns what is applied, never un-prunes."""
    torch.manual_seed(0)
    model = MLP(16, (32,), 4)
    earlier = pk.prune(model, 0.5, "random", scope="layer")
    masks = prune_synflow(model, 0.3, iterations=3)
    on_model = pk.get_masks(model)
    assert set(masks) == set(earlier)
    for n in masks:
        assert torch.equal(masks[n], on_model[n])
        assert not (masks[n] & ~earlier[n]).any()        # earlier pruned weights stay pruned
    assert pk.masks.sparsity_of(masks) == pytest.approx(0.5, abs=0.01)   # 30% < the 50% already there


def test_sparsity_zero_applies_all_true_masks_and_keeps_earlier_ones():
    torch.manual_seed(0)
    model = MLP(16, (32,), 4)
    earlier = pk.prune(model, 0.5, "magnitude", scope="layer")
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = prune_synflow(model, 0.0)
    assert all(torch.equal(masks[n], earlier[n]) for n in earlier)       # not all-True: the masks on the model
    assert all(torch.equal(masks[n], m) for n, m in pk.get_masks(model).items())
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    fresh = MLP(16, (32,), 4)
    masks = prune_synflow(fresh, 0.0)
    assert all(m.all() for m in masks.values()) and torch.nn.utils.prune.is_pruned(fresh)
    assert set(masks) == set(pk.get_masks(fresh))


def test_the_old_import_path_warns_and_forwards():
    import prunekit.criteria.synflow as old
    with pytest.warns(DeprecationWarning, match="methods.before.synflow"):
        fn = old.prune_synflow
    assert fn is prune_synflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from prunekit.criteria.synflow import synflow  # noqa: F401  (the score itself does not warn)
    with pytest.raises(AttributeError):
        old.no_such_name
