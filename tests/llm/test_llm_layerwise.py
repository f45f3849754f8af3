"""Known answers for the layer-wise LLM pruners (prunekit.llm.layerwise): magnitude, Wanda, SparseGPT."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.llm import magnitude_prune_layer, sparsegpt_prune_layer, wanda_prune_layer


def layer_and_inputs(out=16, inp=32, tokens=256, seed=0, dtype=torch.float64, correlated=True):
    """A random Linear and inputs whose features are correlated and of unequal scale (as in LLMs)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(inp, out, bias=True).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out, inp, generator=g, dtype=dtype))
        layer.bias.copy_(torch.randn(out, generator=g, dtype=dtype))
    x = torch.randn(tokens, inp, generator=g, dtype=dtype)
    if correlated:
        mix = torch.randn(inp, inp, generator=g, dtype=dtype) / math.sqrt(inp) + torch.eye(inp, dtype=dtype)
        scale = torch.exp(torch.randn(inp, generator=g, dtype=dtype))        # a few large ("outlier") features
        x = (x @ mix) * scale
    return layer, x


def recon_error(w_dense, layer, x):
    return float(((x @ w_dense.T - x @ layer.weight.detach().T) ** 2).sum())


def assert_nm(keep, weight, n, m):
    groups = keep.reshape(keep.shape[0], -1, m)
    assert (groups.sum(dim=-1) == n).all()
    assert (weight.detach()[~keep] == 0).all()


# --- magnitude -----------------------------------------------------------------------------

@given(out=st.integers(1, 12), inp=st.integers(1, 12), sparsity=st.floats(0, 0.99), seed=st.integers(0, 99))
@settings(max_examples=40)
def test_magnitude_prunes_exactly_int_numel_times_sparsity_smallest(out, inp, sparsity, seed):
    layer, _ = layer_and_inputs(out, inp, 1, seed)
    w = layer.weight.detach().clone()
    keep = magnitude_prune_layer(layer, sparsity)
    k = int(w.numel() * sparsity)
    assert keep.dtype == torch.bool and keep.shape == w.shape
    assert int((~keep).sum()) == k
    assert torch.equal(layer.weight.detach(), w * keep)
    if 0 < k < w.numel():
        assert w.abs()[~keep].max() <= w.abs()[keep].min()      # one threshold over the whole layer


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_magnitude_nm_keeps_largest_n_of_every_m(n, m):
    layer, _ = layer_and_inputs(8, 16)
    w = layer.weight.detach().abs().clone()
    keep = magnitude_prune_layer(layer, None, prunen=n, prunem=m)
    assert_nm(keep, layer.weight, n, m)
    kg, wg = keep.reshape(8, -1, m), w.reshape(8, -1, m)
    dropped_max = wg.masked_fill(kg, -1).max(-1).values
    kept_min = wg.masked_fill(~kg, math.inf).min(-1).values
    assert (dropped_max <= kept_min).all()


# --- Wanda ---------------------------------------------------------------------------------

def wanda_slow(w, x, sparsity):
    """The formula, one weight at a time: S_ij = |W_ij| · sqrt(sum_t x_tj²); per row, prune the
    int(in · sparsity) lowest (ties: lower column first)."""
    out, inp = w.shape
    norms = [math.sqrt(sum(float(x[t, j]) ** 2 for t in range(x.shape[0]))) for j in range(inp)]
    keep = torch.ones(out, inp, dtype=torch.bool)
    k = int(inp * sparsity)
    for i in range(out):
        scores = sorted((abs(float(w[i, j])) * norms[j], j) for j in range(inp))
        for _, j in scores[:k]:
            keep[i, j] = False
    return keep


@given(out=st.integers(1, 6), inp=st.integers(1, 10), tokens=st.integers(1, 6), sparsity=st.floats(0, 0.99),
       seed=st.integers(0, 99))
@settings(max_examples=40)
def test_wanda_mask_equals_slow_reference_of_the_formula(out, inp, tokens, sparsity, seed):
    layer, x = layer_and_inputs(out, inp, tokens, seed)
    w = layer.weight.detach().clone()
    keep = wanda_prune_layer(layer, x, sparsity)
    assert torch.equal(keep, wanda_slow(w, x, sparsity))
    assert ((~keep).sum(dim=1) == int(inp * sparsity)).all()  # exact count in every row
    assert torch.equal(layer.weight.detach(), w * keep)


def test_wanda_uses_input_norms_not_just_magnitude():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    x = torch.tensor([[10.0, 1.0]])                              # feature 0 is 10x larger
    assert wanda_prune_layer(layer, x, 0.5).tolist() == [[True, False]]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_wanda_nm_keeps_the_n_best_scores_per_group(n, m):
    layer, x = layer_and_inputs(8, 16)
    w = layer.weight.detach().clone()
    keep = wanda_prune_layer(layer, x, 1 - n / m, prunen=n, prunem=m)
    assert_nm(keep, layer.weight, n, m)
    score = (w.abs() * x.pow(2).sum(0).sqrt()).reshape(8, -1, m)
    kg = keep.reshape(8, -1, m)
    assert (score.masked_fill(kg, -1).max(-1).values <= score.masked_fill(~kg, math.inf).min(-1).values).all()


# --- SparseGPT -----------------------------------------------------------------------------

@pytest.mark.parametrize("dead", [False, True])
def test_sparsegpt_sparsity_zero_leaves_the_layer_unchanged(dead):
    layer, x = layer_and_inputs()
    if dead:
        x[:, 3] = 0
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    keep = sparsegpt_prune_layer(layer, x, 0.0)
    assert keep.all()
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("pattern,blocksize", [((0.5, 0, 0), 128), ((0.6, 0, 0), 128), ((None, 2, 4), 16),
                                               ((None, 2, 4), 128), ((None, 4, 8), 16), ((None, 4, 8), 128)])
def test_sparsegpt_reconstruction_error_at_most_magnitude_and_wanda(seed, pattern, blocksize):
    """On correlated inputs with unequal feature scales. (Not a theorem: the OBS updates are greedy,
    column by column, and at 70% on such small layers SparseGPT sometimes loses to Wanda.)"""
    s, n, m = pattern
    errors, counts = {}, {}
    for name, fn in [("magnitude", lambda l, x: magnitude_prune_layer(l, s, prunen=n, prunem=m)),
                     ("wanda", lambda l, x: wanda_prune_layer(l, x, s, prunen=n, prunem=m)),
                     ("sparsegpt", lambda l, x: sparsegpt_prune_layer(l, x, s, prunen=n, prunem=m,
                                                                      blocksize=blocksize))]:
        layer, x = layer_and_inputs(24, 64, 512, seed)
        w = layer.weight.detach().clone()
        keep = fn(layer, x)
        errors[name], counts[name] = recon_error(w, layer, x), int((~keep).sum())
        assert (layer.weight.detach()[~keep] == 0).all()
        if m:
            assert_nm(keep, layer.weight, n, m)
    if not m:                                                    # one block of 64 columns here
        assert counts["magnitude"] == counts["sparsegpt"] == int(24 * 64 * s)
        assert counts["wanda"] == 24 * int(64 * s)
    assert errors["sparsegpt"] <= errors["magnitude"]
    assert errors["sparsegpt"] <= errors["wanda"]


def sequential_lstsq(x, w, keep_row):
    """The OBS sequence written out: for each column j in order, zero w_j if pruned, then re-fit all
    columns right of j (the left ones are final) to the dense output X w by least squares."""
    target = x @ w
    out = w.clone()
    cols = w.numel()
    for j in range(cols):
        if not keep_row[j]:
            out[j] = 0
            if j + 1 < cols:
                rhs = (target - x[:, :j + 1] @ out[:j + 1]).unsqueeze(1)
                out[j + 1:] = torch.linalg.lstsq(x[:, j + 1:], rhs).solution.squeeze(1)
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("blocksize,pattern", [(12, (0.5, 0, 0)), (4, (0.5, 0, 0)), (12, (None, 2, 4)),
                                               (4, (None, 1, 4))])
def test_sparsegpt_weights_equal_the_sequential_least_squares_for_its_mask(seed, blocksize, pattern):
    """Given the mask SparseGPT chose, its weights (Cholesky rows, lazy batch updates) equal the
    column-by-column least-squares re-fits computed directly (no dampening, full-rank inputs)."""
    s, n, m = pattern
    layer, x = layer_and_inputs(4, 12, 100, seed)
    w = layer.weight.detach().clone()
    keep = sparsegpt_prune_layer(layer, x, s, prunen=n, prunem=m, blocksize=blocksize, percdamp=0.0)
    for r in range(4):
        torch.testing.assert_close(layer.weight.detach()[r], sequential_lstsq(x, w[r], keep[r]),
                                   rtol=1e-7, atol=1e-8)


def constrained_lstsq(x, w, q):
    """argmin ||X ŵ - X w||² over ŵ with ŵ_q = 0 and ŵ_j = w_j for j < q (columns left of q are final
    when SparseGPT reaches column q), solved directly with lstsq."""
    free = torch.arange(q + 1, w.numel())
    rhs = x @ w - x[:, :q] @ w[:q]
    sol = torch.linalg.lstsq(x[:, free], rhs.unsqueeze(1)).solution.squeeze(1)
    out = w.clone()
    out[q] = 0
    out[free] = sol
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("force_first", [True, False])
def test_sparsegpt_one_pruned_weight_gets_the_least_squares_update(seed, force_first):
    rows, cols = 3, 10
    layer, x = layer_and_inputs(rows, cols, 200, seed)
    if force_first:                                              # column 0: every other weight of the row is free
        with torch.no_grad():
            layer.weight[1, 0] = 1e-3
    w = layer.weight.detach().clone()
    s = 1.5 / w.numel()                                          # int(rows · cols · s) = 1 weight pruned
    keep = sparsegpt_prune_layer(layer, x, s, blocksize=cols, percdamp=0.0)
    (r,), (q,) = torch.nonzero(~keep, as_tuple=True)
    if force_first:
        assert (int(r), int(q)) == (1, 0)
    new = layer.weight.detach()
    others = torch.arange(rows) != r
    assert torch.equal(new[others], w[others])                   # the other rows are untouched
    expected = constrained_lstsq(x, w[r], int(q))
    torch.testing.assert_close(new[r], expected, rtol=1e-8, atol=1e-9)
    # and it is optimal: no other completion of the row does better on the calibration data
    err_new = float(((x @ (w[r] - new[r])) ** 2).sum())
    err_zero_only = float(((x[:, q] * w[r, q]) ** 2).sum())
    assert err_new <= err_zero_only


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_sparsegpt_lazy_batch_updates_equal_one_block(n, m):
    """With N:M the mask does not depend on the block size, so blocks of m columns with lazy
    updates must give the same weights as one block over all columns."""
    results = []
    for bs in (m, 2 * m, 64):
        layer, x = layer_and_inputs(8, 64, 300, seed=3)
        keep = sparsegpt_prune_layer(layer, x, None, prunen=n, prunem=m, blocksize=bs)
        assert_nm(keep, layer.weight, n, m)
        results.append((keep, layer.weight.detach().clone()))
    for keep, w in results[1:]:
        assert torch.equal(keep, results[0][0])
        torch.testing.assert_close(w, results[0][1], rtol=1e-9, atol=1e-10)


@given(out=st.integers(1, 6), cols=st.integers(1, 12), blocksize=st.integers(1, 12), sparsity=st.floats(0, 0.95),
       seed=st.integers(0, 99))
@settings(max_examples=30)
def test_sparsegpt_prunes_int_block_times_sparsity_in_every_block(out, cols, blocksize, sparsity, seed):
    layer, x = layer_and_inputs(out, cols, 40, seed)
    keep = sparsegpt_prune_layer(layer, x, sparsity, blocksize=blocksize)
    for i1 in range(0, cols, blocksize):
        block = keep[:, i1:i1 + blocksize]
        assert int((~block).sum()) == int(block.numel() * sparsity)
    assert (layer.weight.detach()[~keep] == 0).all()
    assert torch.isfinite(layer.weight).all()


def test_sparsegpt_float32_layer_stays_float32_and_handles_dead_inputs():
    layer, x = layer_and_inputs(8, 16, 100, dtype=torch.float32)
    x[:, 5] = 0
    keep = sparsegpt_prune_layer(layer, x, 0.5)
    assert layer.weight.dtype == torch.float32
    assert (layer.weight.detach()[:, 5] == 0).all()             # no information about input 5: weight removed
    assert int((~keep).sum()) == int(8 * 16 * 0.5)


# --- bad input: an error naming the argument, the layer untouched ---------------------------

BAD = [
    (lambda f, l, x: f(l, x, 1.0), ValueError, "sparsity"),
    (lambda f, l, x: f(l, x, -0.1), ValueError, "sparsity"),
    (lambda f, l, x: f(l, x, math.nan), ValueError, "sparsity"),
    (lambda f, l, x: f(l, x, "0.5"), TypeError, "sparsity"),
    (lambda f, l, x: f(l, x, None), ValueError, "sparsity"),
    (lambda f, l, x: f(l, x, 0.5, prunen=4, prunem=4), ValueError, "prunen"),
    (lambda f, l, x: f(l, x, None, prunen=5, prunem=4), ValueError, "prunen"),
    (lambda f, l, x: f(l, x, None, prunen=0, prunem=4), ValueError, "prunen"),
    (lambda f, l, x: f(l, x, None, prunen=-1, prunem=4), ValueError, "prunen"),
    (lambda f, l, x: f(l, x, None, prunen=2.0, prunem=4), TypeError, "prunen"),
    (lambda f, l, x: f(l, x, None, prunen=1, prunem=3), ValueError, "prunem"),     # 3 does not divide 16
    (lambda f, l, x: f(l, x, 0.75, prunen=2, prunem=4), ValueError, "sparsity"),
    (lambda f, l, x: f(l, x[:, :-1], 0.5), ValueError, "inputs"),
    (lambda f, l, x: f(l, x[:0], 0.5), ValueError, "inputs"),
    (lambda f, l, x: f(l, x.numpy(), 0.5), TypeError, "inputs"),
    (lambda f, l, x: f(l, x.long(), 0.5), TypeError, "inputs"),
    (lambda f, l, x: f(l, torch.full_like(x, math.nan), 0.5), ValueError, "inputs"),
]


def call_with(name):
    if name == "magnitude":
        return lambda l, x, *a, **k: magnitude_prune_layer(l, *a, **k)
    return {"wanda": wanda_prune_layer, "sparsegpt": sparsegpt_prune_layer}[name]


CASES = [(method, case) for method in ("magnitude", "wanda", "sparsegpt") for case in range(len(BAD))
         if not (method == "magnitude" and BAD[case][2] == "inputs")]       # magnitude takes no inputs


@pytest.mark.parametrize("method,case", CASES)
def test_bad_input_raises_naming_the_argument_and_leaves_the_layer_untouched(method, case):
    call, exc, arg = BAD[case]
    layer, x = layer_and_inputs(4, 16, 8, dtype=torch.float32)
    before = layer.weight.detach().clone()
    with pytest.raises(exc, match=arg):
        call(call_with(method), layer, x)
    assert torch.equal(layer.weight.detach(), before)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("bad_layer", [nn.Conv2d(2, 2, 1), nn.Embedding(4, 4), "linear", None])
def test_a_layer_that_is_not_linear_is_a_type_error(method, bad_layer):
    with pytest.raises(TypeError, match="layer"):
        call_with(method)(bad_layer, torch.randn(4, 2), 0.5)


@pytest.mark.parametrize("bad", [dict(blocksize=0), dict(blocksize=2.5), dict(percdamp=-0.01),
                                 dict(percdamp=math.inf), dict(prunen=2, prunem=4, blocksize=6)])
def test_sparsegpt_bad_blocksize_or_percdamp(bad):
    layer, x = layer_and_inputs(4, 16, 8, dtype=torch.float32)
    before = layer.weight.detach().clone()
    kw = dict(bad)
    s = None if "prunen" in kw else 0.5
    with pytest.raises((TypeError, ValueError), match="blocksize" if "blocksize" in bad else "percdamp"):
        sparsegpt_prune_layer(layer, x, s, **kw)
    assert torch.equal(layer.weight.detach(), before)


def test_sparsegpt_singular_hessian_without_dampening_is_a_value_error_naming_percdamp():
    layer, x = layer_and_inputs(4, 16, 3)                        # 3 tokens: XᵀX has rank 3 < 16
    x[:, 0] = 1.0
    before = layer.weight.detach().clone()
    with pytest.raises(ValueError, match="percdamp"):
        sparsegpt_prune_layer(layer, x, 0.5, percdamp=0.0)
    assert torch.equal(layer.weight.detach(), before)
