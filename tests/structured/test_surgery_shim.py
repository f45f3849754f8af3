"""The old ``prunekit.surgery`` path still resolves every old public name and the private names
tests used, with a DeprecationWarning."""

import importlib
import sys

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.core.graph import channels

OLD_PUBLIC = ["compact", "zero_removed_channels", "plan_channels", "ChannelPlan"]
OLD_PRIVATE = ["_balance", "_settle", "_plan", "_copy", "_trace", "_Tracer", "_Space", "_kept_rows", "_shrink",
               "_zero", "_slice_param", "_shrink_grouped", "_fixed_defaults", "_check_inputs", "_shared_spaces"]


def _old():
    sys.modules.pop("prunekit.surgery", None)
    with pytest.warns(DeprecationWarning, match="prunekit.structured.compact"):
        return importlib.import_module("prunekit.surgery")


def test_prunekit_surgery_shim_warns_and_resolves_every_old_name():
    old = _old()
    compact_module = importlib.import_module("prunekit.structured.compact")
    for name in OLD_PUBLIC + OLD_PRIVATE:
        assert hasattr(old, name), name
    assert old.compact is pk.compact is compact_module.compact
    assert old.plan_channels is channels.plan_channels


def test_old_private_helpers_still_work():
    old = _old()
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    gm, modules = old._trace(model, torch.randn(1, 2))
    assert modules["0"] is model[0]
    assert old._copy(model)[0] is not model[0]
    with pytest.raises(TypeError):
        old._trace(model, "x")
