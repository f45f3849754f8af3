"""Gradient and Hessian criteria against known answers: taylor, taylor_channel, snip, grasp, obd,
movement (+ MovementTracker), loss_change."""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import prunekit as pk
from prunekit.criteria.movement import MovementTracker
from prunekit.criteria.sensitivity import hessian_diagonal

NAMES = ["0.weight", "2.weight"]


def mlp2(seed=0, dtype=torch.float32):
    """A 2-layer MLP with a smooth nonlinearity (non-zero second derivatives everywhere)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def batches(n=2, size=6, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=g, dtype=dtype), torch.randint(0, 3, (size,), generator=g))
            for _ in range(n)]


def batch_grads(model, data):
    """Hand-written: per-batch gradient of the mean cross-entropy w.r.t. the two weights."""
    ws = [model[0].weight, model[2].weight]
    return [torch.autograd.grad(F.cross_entropy(model(x), y), ws) for x, y in data], ws


def hessian_blocks(model, data):
    """Full Hessian of the average batch loss w.r.t. (W1, W2) with torch.autograd.functional.hessian."""
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()

    def loss(a, b):
        return sum(F.cross_entropy(functional_call(model, {"0.weight": a, "2.weight": b}, (x,)), y)
                   for x, y in data) / len(data)

    return torch.autograd.functional.hessian(loss, (w1, w2)), (w1, w2)


def flat_hessian(model, data, mean=True):
    """Full Hessian of the (average or summed) batch loss over all target weights, flattened."""
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    n1 = w1.numel()

    def loss(flat):
        a, b = flat[:n1].view_as(w1), flat[n1:].view_as(w2)
        total = sum(F.cross_entropy(functional_call(model, {"0.weight": a, "2.weight": b}, (x,)), y) for x, y in data)
        return total / len(data) if mean else total

    theta = torch.cat([w1.flatten(), w2.flatten()])
    return torch.autograd.functional.hessian(loss, theta), torch.autograd.functional.jacobian(loss, theta), theta


# --------------------------------------------------------------------------- first order

def test_snip_is_abs_grad_times_weight_on_one_batch():
    model, data = mlp2(), batches(1)
    (gs,), ws = batch_grads(model, data)
    s = pk.score(model, "snip", data=data)
    assert list(s) == NAMES
    for n, g, w in zip(NAMES, gs, ws):
        torch.testing.assert_close(s[n], (g * w).abs().detach())
    # not |g| alone, not g*w signed
    assert not torch.allclose(s["0.weight"], gs[0].abs())


def test_snip_sums_gradients_over_batches_and_batches_limits_them():
    model, data = mlp2(), batches(3)
    per_batch, ws = batch_grads(model, data)
    s = pk.score(model, "snip", data=data)
    for i, (n, w) in enumerate(zip(NAMES, ws)):
        g = sum(pb[i] for pb in per_batch)
        torch.testing.assert_close(s[n], (g * w).abs().detach())
    one = pk.score(model, "snip", data=data, batches=1)
    torch.testing.assert_close(one["0.weight"], (per_batch[0][0] * ws[0]).abs().detach())


def test_taylor_is_sum_over_batches_of_squared_grad_times_weight():
    model, data = mlp2(), batches(3)
    per_batch, ws = batch_grads(model, data)
    s = pk.score(model, "taylor", data=data)
    for i, (n, w) in enumerate(zip(NAMES, ws)):
        expected = sum((pb[i] * w).pow(2) for pb in per_batch).detach()
        torch.testing.assert_close(s[n], expected)
        # (sum g * w)^2 would be a different number
        assert not torch.allclose(s[n], (sum(pb[i] for pb in per_batch) * w).pow(2).detach())


def test_taylor_channel_squares_the_channel_sum_per_batch():
    model, data = mlp2(), batches(2)
    per_batch, ws = batch_grads(model, data)
    s = pk.score(model, "taylor_channel", data=data)
    for i, (n, w) in enumerate(zip(NAMES, ws)):
        expected = sum((pb[i] * w).sum(1).pow(2) for pb in per_batch).detach()
        assert s[n].shape == (w.shape[0],)
        torch.testing.assert_close(s[n], expected)


def test_movement_is_minus_grad_times_weight_summed():
    model, data = mlp2(), batches(2)
    per_batch, ws = batch_grads(model, data)
    s = pk.score(model, "movement", data=data)
    for i, (n, w) in enumerate(zip(NAMES, ws)):
        torch.testing.assert_close(s[n], -sum(pb[i] * w for pb in per_batch).detach())


def test_movement_tracker_accumulates_over_training_steps():
    model, data = mlp2(), batches(3)
    twin = mlp2()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.5)
    expected = [torch.zeros_like(twin[0].weight), torch.zeros_like(twin[2].weight)]
    with MovementTracker(model) as tracker:
        for x, y in data:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            # the same step by hand on a twin
            twin_opt.zero_grad()
            F.cross_entropy(twin(x), y).backward()
            for e, m in zip(expected, (twin[0], twin[2])):
                e -= (m.weight.grad * m.weight).detach()
            twin_opt.step()
    assert tracker.steps == 3
    s = tracker.scores()
    for n, e in zip(NAMES, expected):
        torch.testing.assert_close(s[n], e)
    # hooks are gone after the with-block
    opt.zero_grad()
    F.cross_entropy(model(data[0][0]), data[0][1]).backward()
    assert torch.equal(tracker.scores()["0.weight"], s["0.weight"])


def test_movement_tracker_counts_gradient_accumulation_once_per_pass():
    model, (b1, b2) = mlp2(), batches(2)
    tracker = MovementTracker(model)
    for x, y in (b1, b2):  # two backward passes, no step: weights unchanged
        F.cross_entropy(model(x), y).backward()
    tracker.remove()
    expected = -(model[0].weight.grad * model[0].weight).detach()  # .grad holds the sum of both
    torch.testing.assert_close(tracker.scores()["0.weight"], expected)


def test_movement_tracker_on_masked_model_scores_masked_weights_zero():
    model, data = mlp2(), batches(1)
    masks = pk.prune(model, 0.5)
    tracker = MovementTracker(model)
    F.cross_entropy(model(data[0][0]), data[0][1]).backward()
    tracker.remove()
    s = tracker.scores()
    assert torch.all(s["0.weight"][~masks["0.weight"]] == 0)
    assert torch.any(s["0.weight"][masks["0.weight"]] != 0)


# --------------------------------------------------------------------------- second order

def test_grasp_is_minus_the_papers_score_with_an_explicit_hessian():
    model, data = mlp2(dtype=torch.float64), batches(2, dtype=torch.float64)
    H, g, theta = flat_hessian(model, data, mean=False)  # L = sum_b L_b
    paper_S = -theta * (H @ g)  # Wang et al. 2020: S(-theta) = -theta * Hg; they remove the LARGEST S
    s = pk.score(model, "grasp", data=data)
    ours = torch.cat([s["0.weight"].flatten(), s["2.weight"].flatten()])
    torch.testing.assert_close(ours, -paper_S)
    # so keeping our highest scores removes exactly the paper's top-p of S
    k = 9
    removed_by_paper = set(torch.topk(paper_S, k).indices.tolist())
    masks = pk.make_masks(s, sparsity=k / theta.numel(), scope="global")
    flat_mask = torch.cat([masks["0.weight"].flatten(), masks["2.weight"].flatten()])
    assert set((~flat_mask).nonzero().flatten().tolist()) == removed_by_paper


def grasp_reference_removed(model, data, n_remove):
    """The authors' procedure (Wang et al. 2020, their released pruner), written out: g from a
    first pass without graph, Hg as the gradient of z = sum(g.detach() * grad_f) from a second
    pass, S = -theta * Hg, and the n_remove weights with the LARGEST S removed."""
    ws = [model[0].weight, model[2].weight]
    g = [torch.zeros_like(w) for w in ws]
    for x, y in data:
        for acc, gi in zip(g, torch.autograd.grad(F.cross_entropy(model(x), y), ws)):
            acc += gi
    hg = [torch.zeros_like(w) for w in ws]
    for x, y in data:
        grad_f = torch.autograd.grad(F.cross_entropy(model(x), y), ws, create_graph=True)
        z = sum((gi.detach() * gf).sum() for gi, gf in zip(g, grad_f))
        for acc, h in zip(hg, torch.autograd.grad(z, ws)):
            acc += h
    S = torch.cat([(-w.detach() * h).flatten() for w, h in zip(ws, hg)])
    return set(torch.topk(S, n_remove).indices.tolist()), S


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grasp_prune_removes_what_the_papers_rule_removes(seed):
    """pk.prune(..., "grasp") removes the weights with the largest S = -w * Hg (the paper's
    rule), not the smallest: the "higher = kept" score is w * Hg, not -w * Hg."""
    model, data = mlp2(seed, dtype=torch.float64), batches(2, seed=seed + 1, dtype=torch.float64)
    n = sum(p.numel() for n_, p in model.named_parameters() if n_.endswith("weight"))
    k = 11
    removed, S = grasp_reference_removed(model, data, k)
    masks = pk.prune(model, k / n, "grasp", data=data)
    flat = torch.cat([masks["0.weight"].flatten(), masks["2.weight"].flatten()])
    assert set((~flat).nonzero().flatten().tolist()) == removed
    # the opposite sign (keeping the largest S, "anti-GraSP") removes other weights
    assert set(torch.topk(-S, k).indices.tolist()).isdisjoint(removed)
    assert "removed when large" in pk.criteria.get("grasp").description


def test_grasp_on_a_masked_model_uses_the_gradient_of_the_live_weights():
    """On a masked model: score = w_eff * H (mask * g), H and g w.r.t. the effective weights."""
    model, data = mlp2(dtype=torch.float64), batches(2, dtype=torch.float64)
    masks = pk.prune(model, 0.4)
    plain = mlp2(dtype=torch.float64)  # same forward as the masked model
    with torch.no_grad():
        plain[0].weight.mul_(masks["0.weight"])
        plain[2].weight.mul_(masks["2.weight"])
    H, g, theta = flat_hessian(plain, data, mean=False)
    m = torch.cat([masks["0.weight"].flatten(), masks["2.weight"].flatten()]).to(g)
    s = pk.score(model, "grasp", data=data)
    ours = torch.cat([s["0.weight"].flatten(), s["2.weight"].flatten()])
    torch.testing.assert_close(ours, theta * (H @ (m * g)))
    assert not torch.allclose(ours, theta * (H @ g))


def test_grasp_score_predicts_the_change_of_gradient_flow():
    """Shrinking w_q by a factor (1 - eps) changes g.g by about -2 eps * score_q (finite differences)."""
    model, data = mlp2(dtype=torch.float64), batches(2, dtype=torch.float64)
    s = pk.score(model, "grasp", data=data)["0.weight"]

    def grad_norm2(m):
        g1, g2 = torch.autograd.grad(sum(F.cross_entropy(m(x), y) for x, y in data), [m[0].weight, m[2].weight])
        return float((g1 ** 2).sum() + (g2 ** 2).sum())

    base, eps = grad_norm2(model), 1e-5
    for q in [(0, 0), (2, 3), (4, 1)]:
        m = mlp2(dtype=torch.float64)
        with torch.no_grad():
            m[0].weight[q] *= 1 - eps
        change = grad_norm2(m) - base
        assert change == pytest.approx(-2 * eps * float(s[q]), rel=1e-3, abs=1e-12)


def test_obd_exact_diagonal_matches_autograd_hessian():
    model, data = mlp2(), batches(2)
    H, (w1, w2) = hessian_blocks(model, data)
    h1 = H[0][0].reshape(w1.numel(), w1.numel()).diagonal().view_as(w1)
    h2 = H[1][1].reshape(w2.numel(), w2.numel()).diagonal().view_as(w2)
    s = pk.score(model, "obd", data=data, hessian="exact")
    torch.testing.assert_close(s["0.weight"], 0.5 * h1 * w1 ** 2)
    torch.testing.assert_close(s["2.weight"], 0.5 * h2 * w2 ** 2)
    d = hessian_diagonal(model, data, hessian="exact")
    torch.testing.assert_close(d["0.weight"], h1)


def test_obd_hutchinson_approximates_the_exact_diagonal():
    """Unbiased, with the known per-probe variance sum_{j != i} H_ij^2: within 4.5 standard errors."""
    model, data = mlp2(), batches(1)
    H, _, _ = flat_hessian(model, data)
    probes = 2000
    stderr = (H - torch.diag(H.diagonal())).pow(2).sum(1).sqrt() / probes ** 0.5
    est = hessian_diagonal(model, data, hessian="hutchinson", probes=probes, seed=0)
    flat = torch.cat([est[n].flatten() for n in NAMES])
    assert torch.all((flat - H.diagonal()).abs() <= 4.5 * stderr)
    s = pk.score(model, "obd", data=data, hessian="hutchinson", probes=probes, seed=0)
    torch.testing.assert_close(s["0.weight"], 0.5 * est["0.weight"] * model[0].weight.detach() ** 2)
    few = hessian_diagonal(model, data, hessian="hutchinson", probes=1, seed=0)
    assert not torch.allclose(few["0.weight"], est["0.weight"], atol=1e-3)


def test_obd_fisher_is_mean_squared_per_sample_gradient():
    model, data = mlp2(), batches(2, size=3)
    ws = [model[0].weight, model[2].weight]
    sq = [torch.zeros_like(w) for w in ws]
    n = 0
    for x, y in data:
        for i in range(len(x)):
            gs = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), ws)
            for a, g in zip(sq, gs):
                a += g ** 2
            n += 1
    s = pk.score(model, "obd", data=data)  # hessian="fisher" is the default
    for name, a, w in zip(NAMES, sq, ws):
        torch.testing.assert_close(s[name], (0.5 * a / n * w ** 2).detach())


def test_obd_fisher_approximates_the_hessian_of_a_softmax_regression():
    """With labels drawn from the model, E[g g^T] = Hessian for linear softmax regression."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3, bias=False))
    x = torch.randn(3000, 3)
    with torch.no_grad():
        y = torch.multinomial(torch.softmax(model(x), 1), 1).squeeze(1)
    data = [(x[i:i + 500], y[i:i + 500]) for i in range(0, 3000, 500)]
    exact = hessian_diagonal(model, data, hessian="exact")["0.weight"]
    fisher = hessian_diagonal(model, data, hessian="fisher")["0.weight"]
    assert (fisher - exact).abs().max() < 0.1 * exact.abs().max()


def test_obd_rejects_unknown_hessian():
    with pytest.raises(ValueError, match="hessian"):
        pk.score(mlp2(), "obd", data=batches(1), hessian="diag")


# --------------------------------------------------------------------------- loss change

def test_loss_change_is_the_measured_loss_increase():
    model, data = mlp2(), batches(2, size=5)

    def mean_loss(m):
        with torch.no_grad():
            return sum(F.cross_entropy(m(x), y) * len(x) for x, y in data) / sum(len(x) for x, _ in data)

    s = pk.score(model, "loss_change", data=data)
    assert s["0.weight"].shape == (5,) and s["2.weight"].shape == (3,)
    base = mean_loss(model)
    for layer, name in ((0, "0.weight"), (2, "2.weight")):
        for c in range(model[layer].out_features):
            m = mlp2()
            with torch.no_grad():
                m[layer].weight[c] = 0
                m[layer].bias[c] = 0
            assert float(s[name][c]) == pytest.approx(float(mean_loss(m) - base), abs=1e-6)


def test_loss_change_on_masked_model_starts_from_the_masked_loss():
    model, data = mlp2(), batches(1)
    masks = pk.prune(model, 0.4)
    s = pk.score(model, "loss_change", data=data)
    plain = mlp2()
    with torch.no_grad():
        for layer, name in ((0, "0.weight"), (2, "2.weight")):
            plain[layer].weight.mul_(masks[name])
    torch.testing.assert_close(s, pk.score(plain, "loss_change", data=data))
