"""The public toolkit for writing a criterion (prunekit.criteria.api): a criterion written
with it and registered through it works with pk.score / pk.prune, and each helper does what
its docstring says."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from prunekit.criteria import api
from prunekit.models import SmallCNN
from prunekit.core.targets import find_targets


@pytest.fixture
def registry():
    """Names registered in a test are removed afterwards (other tests see the built-ins only)."""
    before = set(pk.criteria.available())
    yield
    for name in set(pk.criteria.available()) - before:
        api.unregister(name)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def batches(n=3, size=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=g), torch.randint(0, 3, (size,), generator=g))
            for _ in range(n)]


def register_grad_only():
    """The book's exercise: |dL/dw| alone, written with public names only."""

    @api.register("grad_only", description="|dL/dw| summed over batches", needs_data=True)
    def grad_only(model, targets, data, *, batches=None, loss_fn=None):
        with api.weight_leaves(targets) as leaves:
            acc = api.summed_over_batches(model, leaves, data, lambda g, w: g.abs(),
                                          batches=batches, loss_fn=loss_fn)
        return {t.name: a for t, a in zip(targets, acc)}

    return grad_only


def hand_grad_abs(model, data, loss_fn=F.cross_entropy):
    ws = [model[0].weight, model[2].weight]
    total = [torch.zeros_like(w) for w in ws]
    for x, y in data:
        for t, g in zip(total, torch.autograd.grad(loss_fn(model(x), y), ws)):
            t += g.abs()
    return {"0.weight": total[0], "2.weight": total[1]}


# ------------------------------------------------------------- a criterion of your own

def test_public_names_are_documented():
    assert pk.criteria.api is api
    for name in api.__all__:
        obj = getattr(api, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
    assert api.register is pk.criteria.register  # the old spelling keeps working


def test_user_criterion_works_with_score_and_prune(registry):
    register_grad_only()
    crit = pk.criteria.available()["grad_only"]
    assert crit.needs_data and crit.level == "weight" and not crit.needs_inputs
    model, data = mlp(), batches()
    scores = pk.score(model, "grad_only", data=data)
    expected = hand_grad_abs(model, data)
    assert list(scores) == ["0.weight", "2.weight"]
    for name in scores:
        torch.testing.assert_close(scores[name], expected[name])
        assert not scores[name].requires_grad
    # batches= and loss_fn= reach the helper
    one = pk.score(model, "grad_only", data=data, batches=1)
    torch.testing.assert_close(one["0.weight"], hand_grad_abs(model, data[:1])["0.weight"])

    def half_ce(out, y):
        return 0.5 * F.cross_entropy(out, y)

    half = pk.score(model, "grad_only", data=data, loss_fn=half_ce)
    torch.testing.assert_close(half["2.weight"], 0.5 * expected["2.weight"])
    # pk.prune removes the lowest scores: exactly the 12 smallest of the 42
    masks = pk.prune(model, 12 / 42, "grad_only", data=data)
    flat_scores = torch.cat([expected[n].flatten() for n in ("0.weight", "2.weight")])
    flat_masks = torch.cat([masks[n].flatten() for n in ("0.weight", "2.weight")])
    removed = set((~flat_masks).nonzero().flatten().tolist())
    assert removed == set(torch.argsort(flat_scores)[:12].tolist())
    with pytest.raises(ValueError, match="needs data"):
        pk.score(mlp(), "grad_only")


def test_user_criterion_leaves_the_model_as_it_was(registry):
    register_grad_only()
    model, data = mlp(), batches()
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pk.score(model, "grad_only", data=data)
    assert model.training
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[2].weight.grad is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_user_channel_criterion_with_per_channel(registry):
    @api.register("filter_taylor", description="(sum of g*w over a filter)^2", needs_data=True,
                  level="channel")
    def filter_taylor(model, targets, data, *, batches=None, loss_fn=None):
        with api.weight_leaves(targets) as leaves:
            acc = api.summed_over_batches(
                model, leaves, data, lambda g, w: api.per_channel(g * w).sum(1).pow(2),
                batches=batches, loss_fn=loss_fn)
        return {t.name: a for t, a in zip(targets, acc)}

    torch.manual_seed(0)
    model = SmallCNN(widths=(4, 8), hidden=8)
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(2)]
    mine = pk.score(model, "filter_taylor", data=data)
    ref = pk.score(model, "taylor_channel", data=data)
    assert mine.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(mine[name], ref[name])
    masks = pk.prune(model, 0.5, "filter_taylor", "channel", scope="layer", data=data,
                     include="features.4.weight")
    kept = masks["features.4.weight"].reshape(8, -1).any(1)
    top4 = set(torch.topk(ref["features.4.weight"], 4).indices.tolist())
    assert set(kept.nonzero().flatten().tolist()) == top4


def test_data_free_user_criterion_and_case_insensitive_names(registry):
    @api.register("Squared", description="w^2")
    def squared(model, targets):
        return {t.name: t.tensor.detach() ** 2 for t in targets}

    assert "squared" in pk.criteria.available() and "Squared" not in pk.criteria.available()
    model = mlp()
    a, b = pk.score(model, "SQUARED"), pk.score(model, "magnitude")
    assert all(torch.equal(torch.argsort(a[n].flatten()), torch.argsort(b[n].flatten()))
               for n in a)
    # registering the name again replaces the function only with replace=True
    with pytest.raises(ValueError, match="already registered"):
        api.register("squared", description="minus w^2")
    api.register("squared", description="minus w^2", replace=True)(
        lambda model, targets: {t.name: -t.tensor.detach() ** 2 for t in targets})
    assert torch.all(pk.score(model, "squared")["0.weight"] <= 0)


def test_register_checks_its_arguments(registry):
    with pytest.raises(ValueError, match="name"):
        api.register("", description="x")
    with pytest.raises(ValueError, match="description"):
        api.register("x", description="")
    with pytest.raises(ValueError, match="level"):
        api.register("x", description="x", level="filter")
    with pytest.raises(TypeError, match="decorates a function"):
        api.register("x", description="x")(42)
    assert "x" not in pk.criteria.available()


def test_unregister(registry):
    api.register("tmp", description="t")(lambda model, targets: {})
    api.unregister("TMP")
    assert "tmp" not in pk.criteria.available()
    with pytest.raises(ValueError, match="no criterion 'tmp'"):
        api.unregister("tmp")
    for built_in in ("magnitude", "grasp", "obs"):
        with pytest.raises(ValueError, match="comes with prunekit"):
            api.unregister(built_in)
        assert built_in in pk.criteria.available()
    with pytest.raises(TypeError):
        api.unregister(3)


# ----------------------------------------------------------------------- the helpers

def test_weight_leaves_give_gradients_of_the_effective_weight_and_restore():
    model, data = mlp(), batches(1)
    masks = pk.prune(model, 0.5)
    targets = find_targets(model)
    plain = mlp()
    with torch.no_grad():
        plain[0].weight.mul_(masks["0.weight"])
        plain[2].weight.mul_(masks["2.weight"])
    x, y = data[0]
    want = torch.autograd.grad(F.cross_entropy(plain(x), y), [plain[0].weight])[0]
    with api.weight_leaves(targets) as leaves:
        assert len(leaves) == 2 and all(w.requires_grad for w in leaves)
        torch.testing.assert_close(leaves[0].detach(), model[0].weight_orig * masks["0.weight"])
        got = torch.autograd.grad(F.cross_entropy(model(x), y), leaves)[0]
    torch.testing.assert_close(got, want)
    assert torch.any(got[~masks["0.weight"]] != 0)  # also at pruned positions
    # afterwards the model's forward is its own again (the leaves are not used)
    assert len(model[0]._forward_pre_hooks) == 1  # only torch's pruning hook
    torch.testing.assert_close(model(x), plain(x))

    unmasked = mlp()
    unmasked[0].weight.requires_grad_(False)
    with api.weight_leaves(find_targets(unmasked)) as leaves:
        assert leaves[0] is unmasked[0].weight and leaves[0].requires_grad
    assert not unmasked[0].weight.requires_grad


def test_summed_over_batches_sums_a_term_over_the_batches():
    model, data = mlp(), batches(3)
    targets = find_targets(model)
    with api.weight_leaves(targets) as leaves:
        total = api.summed_over_batches(model, leaves, data, lambda g, w: g.abs())
        first2 = api.summed_over_batches(model, leaves, data, lambda g, w: g.abs(), batches=2)
        ws = api.summed_over_batches(model, leaves, data[:1], lambda g, w: w)
    torch.testing.assert_close(total[0], hand_grad_abs(model, data)["0.weight"])
    torch.testing.assert_close(first2[1], hand_grad_abs(model, data[:2])["2.weight"])
    torch.testing.assert_close(ws[0], model[0].weight.detach())
    assert not ws[0].requires_grad


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batches": 0}, ValueError, "batches"),
    ({"batches": 1.5}, TypeError, "batches"),
    ({"loss_fn": "mse"}, TypeError, "loss_fn"),
    ({"term": None}, TypeError, "term"),
])
def test_summed_over_batches_checks_its_arguments(kwargs, error, match):
    model, data = mlp(), batches(1)
    term = kwargs.pop("term", lambda g, w: g)
    with api.weight_leaves(find_targets(model)) as leaves:
        with pytest.raises(error, match=match):
            api.summed_over_batches(model, leaves, data, term, **kwargs)
        with pytest.raises(ValueError, match="no batches"):
            api.summed_over_batches(model, leaves, [], lambda g, w: g)


def test_iter_batches_check_loss_fn_check_batches_per_channel():
    data = [(torch.full((2, 3), float(i)), torch.zeros(2)) for i in range(4)]
    got = list(api.iter_batches(data, batches=3))
    assert len(got) == 3 and torch.equal(got[2][0], data[2][0])
    assert len(list(api.iter_batches(data))) == 4
    assert list(api.iter_batches(data, device="cpu"))[0][0].device.type == "cpu"
    with pytest.raises(TypeError, match="iterable"):
        list(api.iter_batches(3))
    with pytest.raises(ValueError, match="pairs"):
        list(api.iter_batches([torch.zeros(2)]))
    with pytest.raises(ValueError, match="no batches"):
        list(api.iter_batches([]))

    assert api.check_loss_fn(None) is F.cross_entropy
    assert api.check_loss_fn(F.mse_loss) is F.mse_loss
    with pytest.raises(TypeError, match="loss_fn"):
        api.check_loss_fn(1)
    assert api.check_batches(None) is None and api.check_batches(3) == 3
    with pytest.raises(ValueError):
        api.check_batches(-1)
    with pytest.raises(TypeError):
        api.check_batches(True)

    assert api.per_channel(torch.zeros(5, 2, 3, 3)).shape == (5, 18)
    assert api.per_channel(torch.zeros(7)).shape == (7, 1)
