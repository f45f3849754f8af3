"""contrasts.transfer: prune upstream then transfer vs. transfer then prune downstream."""

from __future__ import annotations

import pytest
import torch

import prunekit as pk
from prunekit.experiments import runner
from prunekit.experiments.contrasts import GRID, transfer


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return runner.run(transfer.EXPERIMENT, quick=True, seeds=[0],
                      cache_dir=tmp_path_factory.mktemp("tr"), shipped=False, progress=False)


def test_downstream_loader():
    x_tr, y_tr, x_te, y_te = transfer.digits32_tensors()
    assert x_tr.shape == (1347, 3, 32, 32) and x_te.shape == (450, 3, 32, 32)
    assert x_tr.dtype == torch.float32 and 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    assert torch.equal(x_tr[:, 0], x_tr[:, 2])                      # replicated channels
    assert sorted(y_tr.unique().tolist()) == list(range(10)) and len(y_te) == 450
    from prunekit.data import digits_tensors
    _, y8, _, y8te = digits_tensors(standardize=False)
    assert torch.equal(y_tr, y8) and torch.equal(y_te, y8te)       # the same images, in order
    train_loader, _ = transfer.digits32_loaders(32)
    xb, yb = next(iter(train_loader))
    assert xb.shape == (32, 3, 32, 32) and yb.shape == (32,)


def test_rows_have_grid_both_sides_and_equal_steps(quick):
    rows = quick.rows()
    for s in GRID:
        assert {transfer.SIDE_OF[r["setting"]] for r in rows
                if r["sparsity"] == s and r["setting"] in transfer.SIDE_OF} == set(transfer.SIDES)
    steps = transfer.EXPERIMENT.configure(quick=True)["steps"]
    assert {r["steps"] for r in rows} == {steps}                     # equal downstream steps
    assert all(0.0 < r["overlap"] <= 1.0 for r in rows if r["setting"] == "prune downstream")


def test_masks_stay_fixed_during_transfer():
    cfg = transfer.EXPERIMENT.configure(quick=True)
    up = transfer.upstream_model(cfg, 0)
    loader, _ = transfer.digits32_loaders(cfg["batch_size"])
    model, masks, n = transfer.prune_upstream(up, 0.7, cfg, 0, loader)
    assert n == cfg["steps"]
    after = pk.get_masks(model)
    kept = sum(int(masks[k].sum()) for k in transfer.BACKBONE)
    total = sum(masks[k].numel() for k in transfer.BACKBONE)
    assert kept == round(0.3 * total)
    assert set(after) == set(masks) == set(transfer.BACKBONE)         # the new head is dense
    for k in transfer.BACKBONE:
        assert torch.equal(after[k], masks[k])                          # the upstream mask, kept
        w = model.get_submodule(k.rsplit(".", 1)[0]).weight
        assert torch.all(w[~masks[k]] == 0) and bool(w[masks[k]].ne(0).all())
    half, done = transfer.dense_half(up, cfg, 0, loader)
    down, dmasks, n2 = transfer.prune_downstream(half, done, 0.7, cfg, 0, loader)
    assert n2 == n and done == cfg["steps"] // 2
    assert sum(int(dmasks[k].sum()) for k in transfer.BACKBONE) == kept
    for k in transfer.BACKBONE:
        w = down.get_submodule(k.rsplit(".", 1)[0]).weight
        assert torch.all(w[~dmasks[k]] == 0)


def test_trial_is_deterministic(quick):
    cfg = transfer.EXPERIMENT.configure(quick=True)
    assert quick.same_as({0: runner.run_trial(transfer.EXPERIMENT, cfg, 0)})
