"""The prune-quantize-order experiment: fp32, PTQ and QAT rows of a channel-pruned CNN."""

import pytest
import torch
from torch import nn

from prunekit.experiments import fusion, quant_order, runner
from prunekit.experiments.contrasts.common import pretrained

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run("prune-quantize-order", quick=True, seeds=[0], cache_dir=tmp_path_factory.mktemp("c"),
                      shipped=False, progress=False)


def test_registered_by_the_runner():
    assert "prune-quantize-order" in runner.available()
    assert runner.get("prune-quantize-order") is quant_order.EXPERIMENT
    assert quant_order.CONFIG["sparsities"] == [0.5, 0.7, 0.9] and quant_order.CONFIG["seeds"] == [0, 1, 2]


def test_quick_rows(quick):
    assert quick.misses == 1
    rows = quick.trials[0]
    assert [r["setting"] for r in rows] == list(quant_order.SETTINGS)
    assert {r["sparsity"] for r in rows} == {0.5}
    by = {r["setting"]: r for r in rows}
    fp32, ptq, qat = (by[s] for s in quant_order.SETTINGS)
    # both int8 models are smaller on disk than the float one, and the same size as each other
    assert ptq["bytes"] < fp32["bytes"] and qat["bytes"] == ptq["bytes"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert ptq["accuracy"] > 0.5                     # PTQ of a fine-tuned float model keeps it working


def test_l1_channels_removes_the_filters():
    dense = pretrained(0)
    small = fusion.l1_channels(dense, 0.5)
    convs = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [m.out_channels // 2 for m in dense.modules() if isinstance(m, nn.Conv2d)]


def test_deterministic(quick):
    live = runner.run_trial("prune-quantize-order", quick.config, seed=0)
    assert quick.same_as({0: live})


def test_calibration_batches_are_fixed_by_the_seed():
    a, b = quant_order.calibration_batches(2, 3), quant_order.calibration_batches(2, 3)
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
