"""OWL (prunekit.llm.owl): outlier ratios against a direct computation, and the sparsity mapping."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import PlainLM
from prunekit.llm import outlier_ratios, owl_sparsities, prune_sequential


def direct_ratios(model, tokens, m):
    """Hooks on the dense model's own forward pass: pooled |W|·||X_j|| per block, % above m × mean."""
    sq = {}
    hooks = [lin.register_forward_hook(lambda mod, a, o: sq.__setitem__(
        mod, sq.get(mod, 0) + a[0].reshape(-1, a[0].shape[-1]).pow(2).sum(0)))
        for b in model.blocks for lin in b.mlp if isinstance(lin, nn.Linear)]
    with torch.no_grad():
        for row in tokens:
            model(row.unsqueeze(0))
    for h in hooks:
        h.remove()
    out = []
    for b in model.blocks:
        pooled = torch.cat([(lin.weight.abs() * sq[lin].sqrt()).flatten() for lin in b.mlp if isinstance(lin, nn.Linear)])
        out.append(100 * float((pooled > m * pooled.mean()).float().mean()))
    return out


@pytest.mark.parametrize("m", [1.0, 2.0, 5.0])
def test_outlier_ratios_equal_a_direct_computation_and_leave_the_model_untouched(m):
    torch.manual_seed(0)
    model = PlainLM()
    with torch.no_grad():                                        # one outlier input feature in block 1
        model.blocks[1].mlp[0].weight[:, 3] *= 20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 20, (5, 12))
    got = outlier_ratios(model, tokens, m=m)
    assert got == pytest.approx(direct_ratios(model, tokens, m), abs=1e-9)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@given(ratios=st.lists(st.floats(0, 50), min_size=1, max_size=12), s=st.floats(0.25, 0.75),
       lam=st.floats(0, 0.1))
@settings(max_examples=50)
def test_owl_sparsities_lie_in_the_band_average_to_the_target_and_follow_the_ratios(ratios, s, lam):
    out = owl_sparsities(ratios, s, lam=lam)
    assert len(out) == len(ratios)
    assert sum(out) / len(out) == pytest.approx(s, abs=1e-9)
    assert all(s - 2 * lam - 1e-9 <= x <= s + 2 * lam + 1e-9 for x in out)
    if max(ratios) > min(ratios):
        assert max(out) - min(out) == pytest.approx(2 * lam, abs=1e-9)
        order = sorted(range(len(ratios)), key=lambda i: ratios[i])
        assert all(out[i] >= out[j] - 1e-12 for i, j in zip(order, order[1:]))   # more outliers, less pruning
    else:
        assert out == [s] * len(ratios)


def test_owl_known_values():
    assert owl_sparsities([0.0, 1.0, 2.0], 0.5, lam=0.1) == pytest.approx([0.6, 0.5, 0.4])


@pytest.mark.parametrize("args,exc,match", [
    (([1.0, 2.0], 0.95, 0.08), ValueError, "lam"),
    (([1.0, 2.0], 0.05, 0.08), ValueError, "lam"),
    (([0.0, 0.0, 1.0], 0.1, 0.08), ValueError, "lam"),
    (([1.0, 2.0], 1.0, 0.0), ValueError, "sparsity"),
    (([1.0, 2.0], 0.5, -0.1), ValueError, "lam"),
    (([], 0.5, 0.08), TypeError, "ratios"),
    (("12", 0.5, 0.08), TypeError, "ratios"),
    (([1.0, -2.0], 0.5, 0.08), ValueError, "ratios"),
])
def test_owl_bad_input(args, exc, match):
    ratios, s, lam = args
    with pytest.raises(exc, match=match):
        owl_sparsities(ratios, s, lam=lam)


def test_owl_feeds_prune_sequential_and_keeps_the_overall_sparsity():
    torch.manual_seed(1)
    model = PlainLM(d=32)
    tokens = torch.randint(0, 20, (4, 16))
    sp = owl_sparsities(outlier_ratios(model, tokens, m=3.0), 0.5, lam=0.1)
    masks = prune_sequential(model, tokens, "wanda", sp, progress=False)
    pruned = [int((~k).sum()) for k in masks.values()]
    assert sum(pruned) == sum(int(k.shape[1] * s) * k.shape[0] for k, s in zip(masks.values(), [x for x in sp for _ in (0, 1)]))
    with pytest.raises(ValueError, match="m"):
        outlier_ratios(model, tokens, m=0)
