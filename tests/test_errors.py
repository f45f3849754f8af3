"""Bad input raises a clear error naming the argument, and leaves the model untouched."""

import math

import pytest
import torch
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn


@pytest.mark.parametrize("sparsity, exc, word", [
    (-0.1, ValueError, "sparsity"), (1.0, ValueError, "sparsity"), (1.5, ValueError, "sparsity"),
    (math.nan, ValueError, "sparsity"), ("0.5", TypeError, "sparsity"), (True, TypeError, "sparsity"),
    (None, TypeError, "sparsity"),
])
def test_bad_sparsity(sparsity, exc, word):
    model = tiny_cnn()
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        pk.prune(model, sparsity)
    with pytest.raises(exc, match=word):
        pk.make_masks({"w": torch.randn(3)}, sparsity)
    assert_untouched(model, snap)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"criterion": "magnitud"}, ValueError, "criterion"),
    ({"criterion": 3}, TypeError, "criterion"),
    ({"granularity": "weights"}, ValueError, "granularity"),
    ({"granularity": "2:4"}, ValueError, "granularity"),
    ({"granularity": None}, TypeError, "granularity"),
    ({"scope": "local"}, ValueError, "scope"),
    ({"include": ["nope.weight"]}, ValueError, "include"),
    ({"include": 5}, TypeError, "include"),
    ({"exclude": ["classifier"]}, ValueError, "exclude"),   # a module name, not a parameter name
    ({"criterion": "random", "seed": "x"}, TypeError, "seed"),
])
def test_bad_prune_arguments(kwargs, exc, word):
    model = tiny_cnn()
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        pk.prune(model, 0.5, **kwargs)
    assert_untouched(model, snap)


def test_error_lists_allowed_values():
    with pytest.raises(ValueError, match="magnitude"):
        pk.score(tiny_cnn(), "nope")
    with pytest.raises(ValueError, match="unstructured"):
        pk.make_masks({"w": torch.randn(4)}, 0.5, granularity="nope")


def test_model_with_nothing_to_prune():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    snap = snapshot(model)
    with pytest.raises(ValueError, match="nothing to prune"):
        pk.prune(model, 0.5)
    with pytest.raises(TypeError, match="model"):
        pk.prune("not a model", 0.5)
    assert_untouched(model, snap)


def test_masks_of_wrong_shape_or_name_leave_model_untouched():
    model = tiny_cnn()
    snap = snapshot(model)
    good = torch.ones(8, 3, 3, 3, dtype=torch.bool)
    bad_cases = [
        ({"0.weight": good, "3.weight": torch.ones(3, 3, dtype=torch.bool)}, ValueError, "shape"),
        ({"0.weight": good, "9.weight": good}, ValueError, "not a parameter"),
        ({"0.weight": good * 2.0}, ValueError, "bool"),
        ({"0.weight": [[1]]}, TypeError, "torch.Tensor"),
        ([good], TypeError, "dict"),
    ]
    for masks, exc, word in bad_cases:
        with pytest.raises(exc, match=word):
            pk.apply_masks(model, masks)
        assert_untouched(model, snap)


def test_bad_scores():
    with pytest.raises(ValueError, match="empty"):
        pk.make_masks({}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        pk.make_masks({"w": torch.tensor([1.0, math.nan])}, 0.5)
    with pytest.raises(TypeError, match="scores"):
        pk.make_masks([torch.ones(3)], 0.5)
    with pytest.raises(ValueError, match="sparsity dict"):
        pk.make_masks({"a": torch.ones(3)}, {"a": 0.5}, scope="global")
    with pytest.raises(ValueError, match="missing"):
        pk.make_masks({"a": torch.ones(3), "b": torch.ones(3)}, {"a": 0.5}, scope="layer")


def test_remove_masks_on_unmasked_name():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="not masked"):
        pk.remove_masks(model, ["0.weight"])


def test_latency_and_summary_arguments():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="threads"):
        pk.latency(model, torch.randn(1, 3, 8, 8), threads=0)
    with pytest.raises(TypeError, match="example_inputs"):
        pk.summary(model, [1, 2, 3])


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"granularity": "5:4"}, ValueError, ["granularity", "1 <= N <= M-1"]),
    ({"granularity": "4:4"}, ValueError, ["granularity", "N=4"]),
    ({"granularity": "block:0x4"}, ValueError, ["granularity", "R=0"]),
    ({"granularity": "block:3x3"}, ValueError, ["granularity", "'0.weight'", "[8, 27]"]),
    ({"granularity": "pattern", "sparsity": 0.7}, ValueError, ["3x3", "'6.weight'"]),
    ({"granularity": "pattern", "sparsity": 0.5}, ValueError, ["5/9"]),
    ({"granularity": "head"}, ValueError, ["granularity 'head'", "no attention heads", "channel"]),
    ({"granularity": "layer"}, ValueError, ["granularity 'layer'", "no skippable residual block"]),
    ({"granularity": "2:4", "sparsity": None}, ValueError, ["'0.weight'", "size 3", "M=4"]),
    ({"granularity": "2:4", "sparsity": 0.75}, ValueError, ["1 - N/M", "0.75"]),
    ({"granularity": "channel", "reduction": "max"}, ValueError, ["reduction", "'l2'"]),
])
def test_bad_granularity_leaves_model_untouched(kwargs, exc, words):
    model = tiny_cnn()
    kwargs = {"sparsity": 0.5, **kwargs}
    snap = snapshot(model)
    with pytest.raises(exc) as info:
        pk.prune(model, **kwargs)
    for w in words:
        assert w in str(info.value)
    assert_untouched(model, snap)


def test_channel_scores_for_a_finer_granularity():
    shapes = {"c.weight": (8, 4, 3, 3)}
    with pytest.raises(ValueError, match=r"scores\['c.weight'\] has shape \[8\].*finer granularity"):
        pk.make_masks({"c.weight": torch.rand(8)}, 0.5, "unstructured", shapes=shapes)
    with pytest.raises(TypeError, match="shapes"):
        pk.make_masks({"c.weight": torch.rand(8)}, 0.5, "channel", shapes=[(8, 4, 3, 3)])
