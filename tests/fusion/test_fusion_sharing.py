"""k-means weight sharing (Han et al. 2016): exactly 2**bits shared values, pruned entries stay zero."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.fusion import centroid_gradients, centroid_step, share_weights, shared_to_dense

values = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=80)
@given(st.lists(values, min_size=1, max_size=200), st.integers(1, 5), st.randoms(use_true_random=False))
def test_exactly_two_to_the_bits_values_and_pruned_zero(xs, bits, rnd):
    w = torch.tensor(xs, dtype=torch.float32)
    mask = torch.tensor([rnd.random() < 0.7 for _ in xs])
    codebook, idx = share_weights(w, bits, mask=mask)
    dense = shared_to_dense(codebook, idx)
    kept = w[mask]
    distinct = torch.unique(kept).numel()
    assert codebook.numel() == min(2 ** bits, distinct)
    assert torch.unique(dense[mask]).numel() == codebook.numel()      # every shared value is used
    assert bool((idx[~mask] == -1).all()) and bool((dense[~mask] == 0).all())
    assert bool((idx[mask] >= 0).all())
    assert bool((codebook[1:] > codebook[:-1]).all())                 # sorted, distinct
    if distinct <= 2 ** bits:                                          # exact
        assert torch.equal(dense[mask], kept)
    else:
        # a fixed point of Lloyd's algorithm: each centroid is the mean of its weights ...
        for j in range(codebook.numel()):
            members = kept.double()[idx[mask] == j]
            assert members.mean().item() == pytest.approx(codebook[j].item(), rel=1e-5, abs=1e-5)
        # ... and each weight is at its nearest centroid
        d = (kept.double()[:, None] - codebook.double()[None, :]).abs()
        own = d.gather(1, idx[mask][:, None]).squeeze(1)
        assert bool((own <= d.min(1).values + 1e-5).all())
    assert torch.equal(share_weights(w, bits, mask=mask)[1], idx)    # deterministic


def test_linear_initialisation_keeps_the_large_weight():
    # linear init puts the two centroids at min and max; a density-based init would not keep 10
    w = torch.tensor([-1.0, -0.9, 0.9, 1.0, 10.0])
    codebook, idx = share_weights(w, 1)
    assert torch.allclose(codebook, torch.tensor([0.0, 10.0]))
    assert idx.tolist() == [0, 0, 0, 0, 1]


def test_known_clusters_and_default_mask():
    w = torch.tensor([[1.0, 1.2, 0.0, 5.0], [5.2, 0.0, 0.8, 5.0]])
    codebook, idx = share_weights(w, 1)                 # mask=None keeps the non-zero entries
    assert torch.allclose(codebook, torch.tensor([1.0, 5.0 + 0.2 / 3]))
    assert idx.tolist() == [[0, 0, -1, 1], [1, -1, 0, 1]]
    # an explicit mask prunes non-zero entries too
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    codebook, idx = share_weights(w, 3, mask=mask)
    dense = shared_to_dense(codebook, idx)
    assert dense[0, 3] == 0 and idx[0, 3] == -1
    assert idx[0, 2] >= 0 and dense[0, 2] == 0          # a kept zero is clustered like any weight


def test_large_layer_has_exactly_256_values():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, generator=g)
    mask = torch.rand(300, 200, generator=g) > 0.9
    codebook, idx = share_weights(w, 8, mask=mask)
    dense = shared_to_dense(codebook, idx)
    assert torch.unique(dense[mask]).numel() == 256 and bool((dense[~mask] == 0).all())
    assert share_weights(w * mask, 8)[1].eq(idx).all()  # mask=None on the masked weight: same clusters


def test_all_pruned():
    codebook, idx = share_weights(torch.zeros(3, 3), 4)
    assert codebook.numel() == 0 and bool((idx == -1).all())
    assert torch.equal(shared_to_dense(codebook, idx), torch.zeros(3, 3))


@pytest.mark.parametrize("args,kwargs,exc,word", [
    (([1.0, 2.0], 2), {}, TypeError, "weight"),
    ((torch.tensor([1, 2]), 2), {}, TypeError, "weight"),
    ((torch.tensor([1.0, float("nan")]), 2), {}, ValueError, "weight"),
    ((torch.zeros(0), 2), {}, ValueError, "weight"),
    ((torch.ones(3), 0), {}, ValueError, "bits"),
    ((torch.ones(3), 17), {}, ValueError, "bits"),
    ((torch.ones(3), 2.0), {}, TypeError, "bits"),
    ((torch.ones(3), True), {}, TypeError, "bits"),
    ((torch.ones(3), 2), {"mask": torch.ones(4)}, ValueError, "mask"),
    ((torch.ones(3), 2), {"mask": torch.tensor([0, 1, 2])}, ValueError, "mask"),
    ((torch.ones(3), 2), {"mask": [1, 1, 1]}, TypeError, "mask"),
    ((torch.ones(3), 2), {"max_iter": 0}, ValueError, "max_iter"),
])
def test_bad_input(args, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        share_weights(*args, **kwargs)


def test_centroid_gradient_is_the_autograd_gradient_of_the_codebook():
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight[torch.rand(4, 6, generator=g) < 0.5] = 0
    codebook, idx = share_weights(lin.weight, 2)
    x = torch.randn(5, 6, generator=g)
    # reference: the weight as a function of the codebook, differentiated by autograd
    cb = codebook.clone().requires_grad_()
    (torch.nn.functional.linear(x, shared_to_dense(cb, idx), lin.bias) ** 2).sum().backward()
    with torch.no_grad():
        lin.weight.copy_(shared_to_dense(codebook, idx))
    (lin(x) ** 2).sum().backward()
    assert torch.allclose(centroid_gradients(lin.weight.grad, idx, codebook.numel()), cb.grad, atol=1e-5)

    before = codebook.clone()
    centroid_step(lin, {"weight": (codebook, idx)}, lr=0.1)
    assert torch.allclose(codebook, before - 0.1 * cb.grad, atol=1e-6)                # updated in place
    assert torch.equal(lin.weight.detach(), shared_to_dense(codebook, idx))
    assert bool((lin.weight[idx == -1] == 0).all())
    assert torch.unique(lin.weight[idx >= 0].detach()).numel() <= 4


def test_centroid_step_bad_input():
    lin = nn.Linear(3, 2)
    codebook, idx = share_weights(lin.weight, 1)
    with pytest.raises(TypeError, match="model"):
        centroid_step("lin", {}, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        centroid_step(lin, {"weight": (codebook, idx)}, lr=-1)
    with pytest.raises(ValueError, match="'nope'"):
        centroid_step(lin, {"nope": (codebook, idx)}, lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        centroid_step(lin, {"bias": (codebook, idx)}, lr=0.1)
    with pytest.raises(ValueError, match="indices"):
        centroid_step(lin, {"weight": (codebook[:1], idx)}, lr=0.1)
    with pytest.raises(TypeError, match="shared"):
        centroid_step(lin, [("weight", (codebook, idx))], lr=0.1)
