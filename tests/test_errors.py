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


# --- prunekit._validate: the one module of argument checks (issue 10, P4) -------------------

from fractions import Fraction  # noqa: E402

import numpy as np  # noqa: E402

from prunekit import _validate as v  # noqa: E402


@pytest.mark.parametrize("call, value, exc, words", [
    (lambda x: v.check_int("steps", x, minimum=1), 0, ValueError, ["steps", ">= 1", "0"]),
    (lambda x: v.check_int("steps", x, minimum=1), True, TypeError, ["steps", "an int"]),
    (lambda x: v.check_int("steps", x, minimum=1), 2.0, TypeError, ["steps"]),
    (lambda x: v.check_int("k", x, minimum=0, maximum=3), 4, ValueError, ["k", "<= 3"]),
    (lambda x: v.check_number("lr", x, low=0, low_open=True), 0, ValueError, ["lr", "(0, inf]"]),
    (lambda x: v.check_number("lr", x), float("inf"), ValueError, ["lr", "finite"]),
    (lambda x: v.check_number("lr", x), "1e-3", TypeError, ["lr", "str"]),
    (lambda x: v.check_number("lr", x), False, TypeError, ["lr"]),
    (lambda x: v.check_fraction("p", x), 1.0, ValueError, ["p", "[0, 1)"]),
    (lambda x: v.check_fraction("p", x, include_one=True), 1.5, ValueError, ["p", "[0, 1]"]),
    (lambda x: v.check_nonneg("weight_decay", x), -1, ValueError, ["weight_decay", ">= 0"]),
    (lambda x: v.check_positive("lr", x), 0, ValueError, ["lr", "> 0"]),
    (lambda x: v.check_choice("mode", x, ("eval", "train")), "test", ValueError, ["mode", "'eval', 'train'"]),
    (lambda x: v.check_choice("mode", x, ("eval", "train")), 1, TypeError, ["mode"]),
    (lambda x: v.check_names("include", x), 5, TypeError, ["include"]),
    (lambda x: v.check_names("include", x), ["a", 3], TypeError, ["include", "3"]),
    (lambda x: v.check_bool("normalize", x), 1, TypeError, ["normalize", "True or False"]),
    (lambda x: v.check_model(x), "net", TypeError, ["model", "torch.nn.Module", "str"]),
    (lambda x: v.check_scope(x), "local", ValueError, ["scope", "'global', 'layer'"]),
])
def test_validate_type_vs_value_errors_name_the_argument(call, value, exc, words):
    with pytest.raises(exc) as info:
        call(value)
    for w in words:
        assert w in str(info.value)


def test_validate_accepts_abstract_numbers_and_canonicalises():
    assert v.check_int("n", np.int64(3), minimum=1) == 3 and type(v.check_int("n", np.int64(3))) is int
    assert v.check_number("x", Fraction(1, 4), low=0, high=1) == 0.25
    assert v.check_number("x", np.float32(0.5)) == 0.5
    assert v.check_sparsity(np.float64(0.5)) == 0.5
    assert v.check_choice("scope", " GLOBAL ", ("global", "layer")) == "global"
    assert v.check_choice("reduction", None, ("l1",), allow_none=True) is None
    assert v.check_names("include", "a.weight") == ["a.weight"]
    assert v.check_names("include", ("a", "b")) == ["a", "b"]


def test_old_homes_of_the_checks_are_the_same_functions():
    """allocation.check_* were the checks before 0.2: they are now the ones of _validate."""
    assert pk.allocation.check_sparsity is v.check_sparsity
    assert pk.allocation.check_scope is v.check_scope
    assert pk.allocation.check_scores is v.check_scores
    assert pk.allocation.resolve_sparsity is v.resolve_sparsity
