"""Truncated-SVD factorisation of Linear layers: exact at full rank, Eckart-Young error below it."""

import pytest
import torch
from torch import nn

from prunekit.fusion import LowRankPlusSparse, low_rank, low_rank_params, low_rank_plus_sparse, rank_for_budget, tucker2


@pytest.mark.parametrize("out_f,in_f,bias", [(5, 8, True), (8, 5, False), (6, 6, True)])
def test_full_rank_reproduces_the_layer(out_f, in_f, bias):
    torch.manual_seed(0)
    lin = nn.Linear(in_f, out_f, bias=bias)
    before = lin.weight.detach().clone()
    seq = low_rank(lin, min(out_f, in_f))
    x = torch.randn(10, in_f)
    assert torch.allclose(seq(x), lin(x), atol=1e-5)
    assert torch.equal(lin.weight.detach(), before)                       # not modified
    first, second = seq
    assert first.bias is None and first.weight.shape == (min(out_f, in_f), in_f)
    assert second.weight.shape == (out_f, min(out_f, in_f))
    assert (second.bias is None) == (not bias)
    if bias:
        assert torch.equal(second.bias.detach(), lin.bias.detach())
    assert sum(p.numel() for p in seq.parameters()) == low_rank_params(lin, min(out_f, in_f))


@pytest.mark.parametrize("rank", [1, 2, 4, 6])
def test_eckart_young(rank):
    torch.manual_seed(1)
    lin = nn.Linear(7, 9).double()
    seq = low_rank(lin, rank)
    approx = seq[1].weight @ seq[0].weight
    sigma = torch.linalg.svdvals(lin.weight.detach())
    err2 = ((lin.weight - approx) ** 2).sum().item()
    assert err2 == pytest.approx((sigma[rank:] ** 2).sum().item(), rel=1e-9, abs=1e-12)
    assert seq[0].weight.dtype == torch.float64
    # the output error is the discarded part of W applied to x
    x = torch.randn(3, 7, dtype=torch.float64)
    assert torch.allclose(lin(x) - seq(x), x @ (lin.weight - approx).T)
    assert low_rank_params(lin, rank) == rank * 16 + 9


def test_gradients_flow():
    seq = low_rank(nn.Linear(4, 3), 2)
    seq(torch.randn(2, 4)).sum().backward()
    assert all(p.grad is not None for p in seq.parameters())


@pytest.mark.parametrize("linear,rank,exc,word", [
    (nn.Conv2d(2, 2, 1), 1, TypeError, "linear"),
    ("lin", 1, TypeError, "linear"),
    (nn.Linear(4, 3), 0, ValueError, "rank"),
    (nn.Linear(4, 3), 4, ValueError, "rank"),
    (nn.Linear(4, 3), 2.0, TypeError, "rank"),
    (nn.LazyLinear(3), 1, ValueError, "linear"),
])
def test_bad_input(linear, rank, exc, word):
    with pytest.raises(exc, match=word):
        low_rank(linear, rank)
    with pytest.raises(exc, match=word):
        low_rank_params(linear, rank)


# --- Tucker-2 of convolutions --------------------------------------------------------------

def reconstruct(seq):
    first, core, last = seq
    return torch.einsum("rskl,or,si->oikl", core.weight, last.weight[:, :, 0, 0], first.weight[:, :, 0, 0])


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding=2, dilation=2, bias=False),
                                    dict(padding=1, padding_mode="reflect")])
def test_tucker2_full_rank_reproduces_the_conv(kwargs):
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 7, 3, **kwargs)
    seq = tucker2(conv, 7, 5)
    x = torch.randn(2, 5, 11, 11)
    assert torch.allclose(seq(x), conv(x), atol=1e-5)
    first, core, last = seq
    assert first.kernel_size == (1, 1) and last.kernel_size == (1, 1) and core.kernel_size == (3, 3)
    assert (first.bias, core.bias) == (None, None) and (last.bias is None) == (conv.bias is None)


def test_tucker2_error_and_hooi():
    torch.manual_seed(3)
    conv = nn.Conv2d(12, 16, 3).double()
    w = conv.weight.detach()
    errors = []
    for it in (0, 1, 5):
        seq = tucker2(conv, 5, 4, iterations=it)
        err = ((w - reconstruct(seq)) ** 2).sum().item()
        # orthonormal factors: the error is what the core does not keep
        assert err == pytest.approx((w ** 2).sum().item() - (seq[1].weight ** 2).sum().item(), rel=1e-9)
        assert torch.allclose(seq[0].weight[:, :, 0, 0] @ seq[0].weight[:, :, 0, 0].T, torch.eye(4, dtype=torch.float64))
        errors.append(err)
    assert errors[0] >= errors[1] - 1e-12 >= errors[2] - 2e-12         # HOOI never increases the error
    x = torch.randn(2, 12, 6, 6, dtype=torch.float64)
    seq = tucker2(conv, 5, 4)
    assert torch.allclose(conv(x) - seq(x), torch.nn.functional.conv2d(x, w - reconstruct(seq)))


@pytest.mark.parametrize("conv,ranks,kwargs,exc,word", [
    (nn.Linear(3, 3), (1, 1), {}, TypeError, "conv"),
    (nn.Conv2d(4, 4, 3, groups=2), (1, 1), {}, ValueError, "groups"),
    (nn.Conv2d(4, 6, 3), (7, 1), {}, ValueError, "out_rank"),
    (nn.Conv2d(4, 6, 3), (1, 0), {}, ValueError, "in_rank"),
    (nn.Conv2d(4, 6, 3), (1, 1.0), {}, TypeError, "in_rank"),
    (nn.Conv2d(4, 6, 3), (1, 1), {"iterations": -1}, ValueError, "iterations"),
])
def test_tucker2_bad_input(conv, ranks, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        tucker2(conv, *ranks, **kwargs)


# --- rank for a budget, low rank + sparse ----------------------------------------------------

def test_rank_for_budget():
    assert rank_for_budget(100, 50, 0.3) == 10          # 10 * 150 = 1500 = 0.3 * 5000
    assert rank_for_budget(100, 50, 0.29) == 9
    assert rank_for_budget(100, 50, 1.0) == 33          # floor(5000 / 150)
    assert rank_for_budget(1000, 2, 1.0) == 1           # never above min(in, out)... nor below 1
    assert rank_for_budget(4, 4, 1.0) == 2
    assert rank_for_budget(100, 50, 0.001) == 1         # at least 1
    for frac in (0.05, 0.2, 0.5):
        r = rank_for_budget(64, 32, frac)
        assert r * 96 <= frac * 64 * 32 < (r + 1) * 96 or r == 1
    with pytest.raises(ValueError, match="fraction"):
        rank_for_budget(4, 4, 0)
    with pytest.raises(TypeError, match="in_features"):
        rank_for_budget(4.0, 4, 0.5)


@pytest.mark.parametrize("granularity", ["element", "column"])
def test_low_rank_plus_sparse(granularity):
    torch.manual_seed(4)
    lin = nn.Linear(12, 8).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    full = low_rank_plus_sparse(lin, 2, 0.0, granularity=granularity)
    assert isinstance(full, LowRankPlusSparse) and full.sparse.bias is None
    assert torch.allclose(full(x), lin(x))                                    # nothing pruned: exact
    only_low = low_rank_plus_sparse(lin, 2, 1.0, granularity=granularity)
    assert torch.allclose(only_low(x), low_rank(lin, 2)(x)) and bool((only_low.sparse.weight == 0).all())
    half = low_rank_plus_sparse(lin, 2, 0.5, granularity=granularity)
    residual = full.sparse.weight.detach()
    kept = half.sparse.weight.detach() != 0
    if granularity == "element":
        assert int(kept.sum()) == 48
        assert residual.abs()[kept].min() >= residual.abs()[~kept].max()      # the largest entries stay
    else:
        cols = kept.any(0)
        assert int(cols.sum()) == 6 and torch.equal(kept, cols[None, :].expand_as(kept))
        norms = residual.norm(dim=0)
        assert norms[cols].min() >= norms[~cols].max()
    assert torch.equal(half.sparse.weight[kept], residual[kept])
    # better than low rank alone, worse than exact
    err = lambda m: ((m(x) - lin(x)) ** 2).sum().item()
    assert err(full) < 1e-20 < err(half) < err(only_low)


def test_low_rank_plus_sparse_bad_input():
    with pytest.raises(ValueError, match="sparsity"):
        low_rank_plus_sparse(nn.Linear(4, 4), 1, 1.5)
    with pytest.raises(ValueError, match="granularity"):
        low_rank_plus_sparse(nn.Linear(4, 4), 1, 0.5, granularity="row")
    with pytest.raises(ValueError, match="rank"):
        low_rank_plus_sparse(nn.Linear(4, 4), 5, 0.5)
