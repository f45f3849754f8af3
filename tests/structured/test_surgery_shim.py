"""The old surgery module paths still resolve every old public name and the private names tests used."""

import importlib
import warnings

import pytest

OLD_PUBLIC = ["compact", "zero_removed_channels", "plan_channels", "ChannelPlan"]
OLD_PRIVATE = ["_balance", "_settle", "_plan", "_copy", "_trace", "_Tracer", "_Space", "_kept_rows", "_shrink",
               "_zero", "_slice_param", "_shrink_grouped", "_fixed_defaults", "_check_inputs", "_shared_spaces"]


def test_structured_surgery_re_exports_the_split_modules():
    channels = importlib.import_module("prunekit.core.graph.channels")
    compact_module = importlib.import_module("prunekit.structured.compact")
    surgery = importlib.import_module("prunekit.structured.surgery")
    for name in OLD_PUBLIC + OLD_PRIVATE:
        assert hasattr(surgery, name), name
    assert surgery.compact is compact_module.compact and surgery.plan_channels is channels.plan_channels


def test_prunekit_surgery_shim_warns_and_resolves():
    import prunekit as pk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("prunekit.surgery")
        for name in OLD_PUBLIC + OLD_PRIVATE:
            assert getattr(old, name) is getattr(pk.structured.surgery, name), name
    assert pk.compact is old.compact


def test_old_private_helpers_still_work():
    import torch
    from torch import nn
    from prunekit.structured.surgery import _copy, _trace
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    gm, modules = _trace(model, torch.randn(1, 2))
    assert modules["0"] is model[0]
    assert _copy(model)[0] is not model[0]
    with pytest.raises(TypeError):
        _trace(model, "x")
