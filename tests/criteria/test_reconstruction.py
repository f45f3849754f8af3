"""Reconstruction-based criteria against known answers: ThiNet (Luo et al. 2017), LASSO channel
selection (He et al. 2017) and layer-wise OBS (Hassibi & Stork 1993; OBC)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from helpers import assert_untouched, snapshot
from prunekit.criteria.reconstruction import (contribution_gram, lasso_order, lasso_select, next_layers,
                                              thinet_order, thinet_scaling)
from prunekit.methods.after.reconstruction import lasso_channel_prune, obs_prune, obs_prune_layer, thinet_prune
from prunekit.models import SmallCNN

torch.set_num_threads(1)


def batches_of(shape, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g), torch.zeros(shape[0], dtype=torch.long)) for _ in range(n)]


def conv_pair(seed=0, c=5, o=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, o, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(o, 2)).eval()


def consumer_io(model, consumer, data):
    """The consumer's inputs and its outputs without bias, concatenated over ``data``."""
    xs, ys = [], []

    def hook(module, args, out):
        xs.append(args[0].detach())
        ys.append(out.detach())

    h = consumer.register_forward_hook(hook)
    with torch.no_grad():
        for x, _ in data:
            model(x)
    h.remove()
    b = consumer.bias
    y = torch.cat(ys)
    if b is not None:
        y = y - b.detach().reshape((1, -1) + (1,) * (y.dim() - 2))
    return torch.cat(xs), y


def per_channel_contributions(model, consumer, data):
    """Slow, independent x̂: channel c's contribution = the consumer applied to channel c alone
    (F.conv2d / matmul on one input channel), one row per (image, output channel, location)."""
    x, _ = consumer_io(model, consumer, data)
    w = consumer.weight.detach()
    cols = []
    for c in range(x.shape[1]):
        if isinstance(consumer, nn.Conv2d):
            z = F.conv2d(x[:, c:c + 1], w[:, c:c + 1], stride=consumer.stride, padding=consumer.padding)
        else:
            z = x[:, c:c + 1] * w[:, c].reshape(1, -1)
        cols.append(z.reshape(-1).double())
    return torch.stack(cols, 1)  # [rows, C]


def algorithm1(xhat, n_remove):
    """ThiNet's Algorithm 1, literally: sums of squares over the samples, no Gram matrix."""
    removed, rest = [], list(range(xhat.shape[1]))
    while len(removed) < n_remove:
        values = [float(xhat[:, removed + [i]].sum(1).pow(2).sum()) for i in rest]
        best = rest[min(range(len(rest)), key=lambda k: values[k])]
        removed.append(best)
        rest.remove(best)
    return removed


def recon_error(model, consumer, data, reference):
    _, y = consumer_io(model, consumer, data)
    return float((y - reference).pow(2).sum())


# ------------------------------------------------------------------------------ ThiNet

def test_next_layer_is_found_through_bn_relu_pool_and_flatten():
    assert next_layers(conv_pair()) == {"0.weight": "3", "3.weight": "7", "7.weight": None}
    assert next_layers(SmallCNN(widths=(4, 8), hidden=8))["features.4.weight"] == "classifier.2"
    # a Linear on a conv's unflattened output reads the width axis, not the channels: not a next layer
    assert next_layers(nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Linear(4, 2)))["0.weight"] is None
    # a residual addition: not a single consumer
    assert next_layers(pk.models.ResNet(widths=(4, 8)))["layer1.0.conv2.weight"] is None


def test_thinet_removes_two_cancelling_channels_first_and_loses_nothing():
    """Channels 0 and 3 of the first Linear are identical and the next layer weighs them +v and -v:
    together they contribute exactly 0. Greedy takes 0 (smallest), then 3 (sum becomes 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight[3] = model[0].weight[0]
        model[0].bias[3] = model[0].bias[0]
        model[0].weight[[0, 3]] *= 10  # large filters: a filter-norm criterion keeps them
        model[0].bias[[0, 3]] *= 10
        model[2].weight[:, 1:3] = torch.randn(3, 2) * 20  # channels 1, 2 matter a lot
        model[2].weight[:, 3] = -model[2].weight[:, 0]
    data = batches_of((16, 6))
    s = pk.score(model, "thinet", data=data)["0.weight"]
    assert set(s.argsort()[:2].tolist()) == {0, 3}
    assert set(pk.score(model, "l1_filter")["0.weight"].argsort()[:2].tolist()).isdisjoint({0, 3})
    before = torch.cat([model(x) for x, _ in data]).detach()
    masks = thinet_prune(model, "0.weight", 0.5, data)
    assert masks["0.weight"][:, 0].tolist() == [False, True, True, False]
    assert masks["2.weight"][0].tolist() == [False, True, True, False]
    after = torch.cat([model(x) for x, _ in data]).detach()
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "flatten_linear", "linear"])
def test_contribution_gram_equals_the_per_channel_contributions(kind):
    torch.manual_seed(13)
    if kind == "conv":
        model, layer, consumer = conv_pair(seed=13), "0.weight", 3
        model[3].stride = (2, 2)
        data = batches_of((3, 3, 7, 7), seed=13)
    elif kind == "flatten_linear":  # channel c owns the features c*S .. (c+1)*S of the Linear
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 5))
        layer, consumer, data = "0.weight", 3, batches_of((4, 2, 4, 4), seed=13)
    else:
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        layer, consumer, data = "0.weight", 2, batches_of((9, 4), seed=13)
    g, name = contribution_gram(model, layer, data)
    assert name == str(consumer)
    m = model[consumer]
    if kind == "flatten_linear":
        x, _ = consumer_io(model, m, data)
        w = m.weight.detach().reshape(5, 3, 4)
        xhat = torch.einsum("ncs,ocs->noc", x.reshape(-1, 3, 4), w).reshape(-1, 3).double()
    else:
        xhat = per_channel_contributions(model, m, data)
    torch.testing.assert_close(g, xhat.T @ xhat, rtol=1e-5, atol=1e-6)


def test_greedy_order_equals_a_literal_algorithm_1_on_a_conv_pair():
    model, data = conv_pair(seed=1), batches_of((4, 3, 6, 6), seed=1)
    xhat = per_channel_contributions(model, model[3], data)
    expected = algorithm1(xhat, 5)
    s = pk.score(model, "thinet", data=data)["0.weight"]
    assert s.argsort().tolist() == expected
    assert thinet_order(xhat.T @ xhat) == expected


def test_greedy_is_the_brute_force_optimum_for_disjoint_contributions():
    """With contributions to disjoint output entries (G diagonal) greedy is optimal; brute force agrees."""
    torch.manual_seed(2)
    g = torch.diag(torch.rand(6))
    for k in range(1, 6):
        best = min(itertools.combinations(range(6), k), key=lambda t: float(g[list(t)][:, list(t)].sum()))
        assert sorted(thinet_order(g, k)) == sorted(best)


def test_thinet_scaling_is_least_squares_and_reduces_the_error():
    model, data = conv_pair(seed=3), batches_of((4, 3, 6, 6), seed=3)
    xhat = per_channel_contributions(model, model[3], data)
    keep = [1, 2, 4]
    w = thinet_scaling(xhat.T @ xhat, keep)
    ref = torch.linalg.lstsq(xhat[:, keep], xhat.sum(1, keepdim=True)).solution.reshape(-1)
    torch.testing.assert_close(w, ref, rtol=1e-6, atol=1e-8)

    _, y0 = consumer_io(model, model[3], data)
    errors = {}
    for rescale in (False, True):
        m = conv_pair(seed=3)
        thinet_prune(m, "0.weight", 0.4, data, rescale=rescale)
        errors[rescale] = recon_error(m, m[3], data, y0)
    assert errors[True] < errors[False]


def test_thinet_locations_sample_and_are_seeded():
    model, data = conv_pair(seed=4), batches_of((4, 3, 6, 6), seed=4)
    a = pk.score(model, "thinet", data=data, locations=3, seed=0)
    b = pk.score(model, "thinet", data=data, locations=3, seed=0)
    assert all(torch.equal(a[n], b[n]) for n in a)
    full, _ = contribution_gram(model, "0.weight", data)
    some, _ = contribution_gram(model, "0.weight", data, locations=3)
    assert torch.trace(some) < torch.trace(full)
    torch.testing.assert_close(contribution_gram(model, "0.weight", data, locations=36)[0], full)  # 6x6: all
    with pytest.raises(ValueError, match="locations"):
        pk.score(model, "thinet", data=data, locations=0)


def test_missing_next_layer_policies():
    model, data = conv_pair(), batches_of((4, 3, 6, 6))
    assert list(pk.score(model, "thinet", data=data, missing="skip")) == ["0.weight", "3.weight"]
    with pytest.raises(ValueError, match="7.weight"):
        pk.score(model, "lasso_channel", data=data, missing="error")
    # "self": a layer with no next layer is ordered by the energy of its own output channels
    s = pk.score(model, "thinet", data=data)["7.weight"]
    _, y = consumer_io(model, model[7], data)
    y = y + model[7].bias.detach()
    assert s.argsort().tolist() == y.pow(2).sum(0).argsort().tolist()


# --------------------------------------------------------------------- He et al. 2017

@pytest.mark.parametrize("dead", ["next_weights", "inputs"])
def test_lasso_selects_exactly_the_channels_the_output_depends_on(dead):
    """Channels 1 and 4 do not reach the output (zero next-layer weights, or a dead filter whose
    ReLU output is 0); their filters are the largest, so l1_filter would keep them."""
    model, data = conv_pair(seed=5, c=6), batches_of((4, 3, 6, 6), seed=5)
    model[1] = nn.Identity()  # conv -> relu -> conv, so a zero filter gives a zero input
    with torch.no_grad():
        model[0].weight[[1, 4]] *= 5
        if dead == "next_weights":
            model[3].weight[:, [1, 4]] = 0
        else:
            model[0].weight[[1, 4]] = 0
            model[0].bias[[1, 4]] = -1.0
    before = torch.cat([model(x) for x, _ in data]).detach()
    s = pk.score(model, "lasso_channel", data=data)["0.weight"]
    assert set(s.argsort()[:2].tolist()) == {1, 4}
    masks = lasso_channel_prune(model, "0.weight", 2 / 6, data)
    assert masks["0.weight"][:, 0, 0, 0].tolist() == [True, False, True, True, False, True]
    after = torch.cat([model(x) for x, _ in data]).detach()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_lasso_reconstruction_beats_l1_filter_on_random_data():
    data = batches_of((8, 3, 6, 6), seed=6)
    ref_model = conv_pair(seed=6, c=8)
    _, y0 = consumer_io(ref_model, ref_model[3], data)
    errors = {}
    for method in ("lasso", "thinet", "l1"):
        m = conv_pair(seed=6, c=8)
        if method == "lasso":
            lasso_channel_prune(m, "0.weight", 0.5, data)
        elif method == "thinet":
            thinet_prune(m, "0.weight", 0.5, data)
        else:
            keep = pk.score(m, "l1_filter")["0.weight"].argsort(descending=True)[:4]
            cols = torch.zeros(8, dtype=torch.bool)
            cols[keep] = True
            pk.apply_masks(m, {"3.weight": cols.reshape(1, 8, 1, 1).expand(4, 8, 3, 3)})
        errors[method] = recon_error(m, m[3], data, y0)
    assert errors["lasso"] < errors["l1"]
    assert errors["thinet"] < errors["l1"]


def test_lasso_reconstruction_is_the_least_squares_refit_of_the_next_layer():
    data = batches_of((6, 3, 6, 6), seed=14)
    model = conv_pair(seed=14, c=6)
    x, y0 = consumer_io(model, model[3], data)
    masks = lasso_channel_prune(model, "0.weight", 0.5, data)
    keep = masks["0.weight"][:, 0, 0, 0].nonzero().reshape(-1)
    cols = F.unfold(x[:, keep], 3, padding=1).transpose(1, 2).reshape(-1, len(keep) * 9).double()
    target = y0.movedim(1, -1).reshape(-1, 4).double()
    ls = torch.linalg.lstsq(cols, target).solution.T.reshape(4, len(keep), 3, 3)
    torch.testing.assert_close(model[3].weight[:, keep].double(), ls, rtol=1e-4, atol=1e-5)
    plain = conv_pair(seed=14, c=6)
    lasso_channel_prune(plain, "0.weight", 0.5, data, reconstruct=False)
    assert recon_error(model, model[3], data, y0) < recon_error(plain, plain[3], data, y0)


def test_lasso_select_hits_the_target_count_and_orders_by_path():
    torch.manual_seed(7)
    x = torch.randn(100, 6, dtype=torch.float64) * torch.tensor([1, 3, 0.5, 2, 0.1, 1.5], dtype=torch.float64)
    g = x.T @ x
    for k in range(1, 6):
        keep, t, beta = lasso_select(g, k)
        assert len(keep) == k and 0 < t < 1
    order = lasso_order(g)
    assert sorted(order) == list(range(6)) and order[0] == 4 and order[-1] == 1


# --------------------------------------------------------------------------------- OBS

def test_obs_single_weight_update_is_exact_least_squares():
    torch.manual_seed(8)
    x = torch.randn(40, 6, dtype=torch.float64)
    w = torch.randn(1, 6, dtype=torch.float64)
    new, mask = obs_prune_layer(w, x, 1 / 6, damp=0)
    q = int((~mask[0]).nonzero())
    keep = [i for i in range(6) if i != q]
    ls = torch.linalg.lstsq(x[:, keep], x @ w[0]).solution
    torch.testing.assert_close(new[0, keep], ls, rtol=1e-9, atol=1e-10)
    assert new[0, q] == 0
    # and q is the weight whose removal (with the best re-fit) costs least, by brute force
    cost = []
    for j in range(6):
        kj = [i for i in range(6) if i != j]
        fit = torch.linalg.lstsq(x[:, kj], x @ w[0]).solution
        cost.append(float((x[:, kj] @ fit - x @ w[0]).pow(2).sum()))
    assert q == min(range(6), key=cost.__getitem__)


def test_obs_criterion_is_the_exact_error_increase_of_removing_one_weight():
    """L_q = w_q²/(2[H⁻¹]_qq) with H = 2XᵀX/N equals ||X(w - w')||²/N after the best re-fit."""
    torch.manual_seed(9)
    lin = nn.Linear(5, 2)
    data = batches_of((30, 5), n=2, seed=9)
    s = pk.score(lin, "obs", data=data, damp=0)["weight"].double()
    x = torch.cat([b[0] for b in data]).double()
    w = lin.weight.detach().double()
    for r in range(2):
        for j in range(5):
            kj = [i for i in range(5) if i != j]
            fit = torch.linalg.lstsq(x[:, kj], x @ w[r]).solution
            cost = float((x[:, kj] @ fit - x @ w[r]).pow(2).sum()) / x.shape[0]
            assert float(s[r, j]) == pytest.approx(cost, rel=1e-4)


def test_obs_on_a_conv_equals_obs_on_the_equivalent_linear():
    """A conv whose kernel covers the whole input is a Linear on the flattened input."""
    torch.manual_seed(10)
    conv = nn.Conv2d(2, 3, 3)
    lin = nn.Linear(18, 3)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.reshape(3, 18))
    data = batches_of((20, 2, 3, 3), n=2, seed=10)
    a = pk.score(conv, "obs", data=data)["weight"]
    b = pk.score(lin, "obs", data=[(x.reshape(20, 18), y) for x, y in data])["weight"]
    torch.testing.assert_close(a.reshape(3, 18), b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scope", ["row", "matrix"])
def test_obs_beats_magnitude_and_the_bare_mask_and_refits_by_least_squares(scope):
    torch.manual_seed(11)
    x = torch.randn(60, 10, dtype=torch.float64) @ torch.randn(10, 10, dtype=torch.float64)  # correlated inputs
    w = torch.randn(4, 10, dtype=torch.float64)
    new, mask = obs_prune_layer(w, x, 0.5, damp=0, mode=scope)
    assert int((~mask).sum()) == 20
    if scope == "row":
        assert ((~mask).sum(1) == 5).all()
    err = lambda v: float((x @ w.T - x @ v.T).pow(2).sum())  # noqa: E731
    mag = w.abs() > w.abs().flatten().kthvalue(20).values if scope == "matrix" else \
        w.abs() >= w.abs().sort(1).values[:, 5:6]
    assert err(new) <= err(w * mask) + 1e-9
    assert err(new) <= err(w * mag)
    for r in range(4):  # the kept weights are the least-squares fit on the final mask
        keep = mask[r].nonzero().reshape(-1)
        ls = torch.linalg.lstsq(x[:, keep], x @ w[r]).solution
        torch.testing.assert_close(new[r, keep], ls, rtol=1e-7, atol=1e-8)


def test_obs_prune_on_a_model_prunes_and_updates_in_place():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    data = batches_of((32, 8), seed=12)
    x, y0 = consumer_io(model, model[2], data)
    w0 = model[2].weight.detach().clone()
    masks = obs_prune(model, "2.weight", 0.5, data)
    assert masks["2.weight"].sum() == 9 and torch.nn.utils.prune.is_pruned(model)
    assert torch.equal(model[2].weight, model[2].weight_orig * masks["2.weight"])
    _, y1 = consumer_io(model, model[2], data)
    bare = x @ (w0 * masks["2.weight"]).T  # the same mask without the OBS update
    assert (y1 - y0).pow(2).sum() < (bare - y0).pow(2).sum()


# ------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn", [thinet_prune, lasso_channel_prune, obs_prune])
@pytest.mark.parametrize("args, exc, word", [
    (("0.weight", 1.0), ValueError, "sparsity"),
    (("0.weight", -0.1), ValueError, "sparsity"),
    (("nope.weight", 0.5), ValueError, "layer"),
    (("0.weight", 0.5, None), ValueError, "data"),
    (("0.weight", 0.5, []), ValueError, "no batches"),
])
def test_bad_input_leaves_the_model_untouched(fn, args, exc, word):
    model, data = conv_pair(), batches_of((4, 3, 6, 6))
    if len(args) == 2:
        args = args + (data,)
    snap = snapshot(model)
    with pytest.raises(exc, match=word):
        fn(model, *args)
    assert_untouched(model, snap)


def test_a_layer_without_next_layer_is_refused():
    model, data = conv_pair(), batches_of((4, 3, 6, 6))
    snap = snapshot(model)
    with pytest.raises(ValueError, match="7.weight.*next layer"):
        thinet_prune(model, "7.weight", 0.5, data)
    assert_untouched(model, snap)
    with pytest.raises(ValueError, match="sparsity"):
        obs_prune_layer(torch.randn(2, 3), torch.randn(5, 3), 1.5)
    with pytest.raises(ValueError, match="inputs"):
        obs_prune_layer(torch.randn(2, 3), torch.randn(5, 4), 0.5)


# ------------------------------------------------------------------ registry and zoo

def test_registered_with_description_and_needs():
    avail = pk.criteria.available()
    for name, level in (("thinet", "channel"), ("lasso_channel", "channel"), ("obs", "weight")):
        assert avail[name].needs_data and avail[name].description and avail[name].level == level


def test_on_the_zoo_cnn_digits():
    model = pk.zoo.load("cnn-digits")
    train, _ = pk.zoo.loaders("cnn-digits")
    snap = snapshot(model)
    for name in ("thinet", "lasso_channel", "obs"):
        s = pk.score(model, name, data=train, batches=2)
        assert s["features.0.weight"].shape == ((16,) if name != "obs" else (16, 1, 3, 3))
    assert_untouched(model, snap)
    masks = pk.prune(model, 0.5, criterion="thinet", granularity="channel", scope="layer", data=train, batches=2)
    assert int(masks["features.0.weight"][:, 0, 0, 0].sum()) == 8
