"""Issue 14, masks and targets: hostile input to apply/remove/get_masks, and shared (tied) weights.

* applying masks is all-or-nothing (validated first, rolled back on any failure);
* remove_masks/get_masks reject odd arguments clearly; duplicates count once;
* a layer's own ``weight_mask``/``weight_orig`` is neither taken for a mask nor overwritten;
* weights computed by weight_norm/spectral_norm are skipped with a warning, never silently;
* one Parameter used by several modules is one target with one mask, applied for every use,
  counted once in a budget; remove_masks and compact keep the modules tied.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations
from torch.nn.utils import prune as torch_prune

import prunekit as pk
import prunekit.core.masks as pk_masks
from helpers import assert_untouched, snapshot
from prunekit.core.targets import all_parameters, find_targets


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def strict_snapshot(model: nn.Module) -> dict:
    """``helpers.snapshot`` plus hook objects, attributes, training flags and requires_grad."""
    snap = snapshot(model)
    snap["hook_objects"] = [list(m._forward_pre_hooks.values()) for m in model.modules()]
    snap["attrs"] = [sorted(k for k, v in vars(m).items() if isinstance(v, torch.Tensor)) for m in model.modules()]
    snap["training"] = [m.training for m in model.modules()]
    snap["requires_grad"] = [p.requires_grad for p in model.parameters()]
    snap["param_ids"] = [id(p) for p in model.parameters()]
    return snap


def assert_strictly_untouched(model: nn.Module, snap: dict) -> None:
    assert_untouched(model, snap)
    now = strict_snapshot(model)
    for key in ("attrs", "training", "requires_grad", "param_ids"):
        assert now[key] == snap[key], key
    assert all(a == b for a, b in zip(now["hook_objects"], snap["hook_objects"])), "hooks"


def random_mask(shape, seed: int, keep: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < keep


# --------------------------------------------------------------------- all-or-nothing apply_masks

def test_a_meta_mask_is_rejected_before_anything_is_masked():
    m = mlp()
    snap = strict_snapshot(m)
    masks = {"0.weight": random_mask((8, 6), 0), "2.weight": torch.ones(5, 8, dtype=torch.bool, device="meta")}
    with pytest.raises(ValueError, match=r"masks\['2.weight'\].*meta"):
        pk.apply_masks(m, masks)
    assert_strictly_untouched(m, snap)
    assert not torch_prune.is_pruned(m)


@given(premasked=st.lists(st.booleans(), min_size=3, max_size=3), fail_at=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_a_failure_while_applying_rolls_every_layer_back(premasked, fail_at, seed):
    m = mlp(seed)
    names = ["0.weight", "2.weight", "4.weight"]
    pre = {n: random_mask(all_parameters(m)[n].shape, seed + i) for i, n in enumerate(names) if premasked[i]}
    pk.apply_masks(m, pre)
    x = torch.randn(4, 6)
    before = m(x)
    snap = strict_snapshot(m)
    calls = []
    real = pk_masks._mask_use

    def flaky(use, mask):
        calls.append(use.name)
        if len(calls) > fail_at:
            raise RuntimeError("boom")
        real(use, mask)

    masks = {n: random_mask(all_parameters(m)[n].shape, seed + 10 + i) for i, n in enumerate(names)}
    pk_masks._mask_use = flaky
    try:
        with pytest.raises(RuntimeError, match="boom"):
            pk.apply_masks(m, masks)
    finally:
        pk_masks._mask_use = real
    assert_strictly_untouched(m, snap)
    assert pk.get_masks(m).keys() == pre.keys()
    assert torch.equal(m(x), before)
    pk.apply_masks(m, masks)  # and the model still takes masks normally
    for n in names:
        expected = masks[n] & pre[n] if n in pre else masks[n]
        assert torch.equal(pk.get_masks(m)[n], expected)


@pytest.mark.parametrize("bad, error, match", [
    (lambda: torch.ones(8, 6, dtype=torch.bool, device="meta"), ValueError, "meta"),
    (lambda: torch.ones(6, 8, dtype=torch.bool), ValueError, "shape"),
    (lambda: torch.full((8, 6), 0.5), ValueError, "only 0 and 1"),
    (lambda: torch.ones(8, 6, dtype=torch.complex64), ValueError, "only 0 and 1"),
    (lambda: [[True] * 6] * 8, TypeError, "torch.Tensor"),
])
def test_any_bad_mask_leaves_the_model_untouched(bad, error, match):
    m = mlp()
    pk.apply_masks(m, {"4.weight": random_mask((3, 5), 1)})
    snap = strict_snapshot(m)
    with pytest.raises(error, match=match):
        pk.apply_masks(m, {"2.weight": random_mask((5, 8), 2), "4.weight": random_mask((3, 5), 3), "0.weight": bad()})
    assert_strictly_untouched(m, snap)


# ------------------------------------------------------------------------ remove_masks / get_masks

def test_remove_masks_drops_duplicate_names():
    m, ref = mlp(), mlp()
    masks = {"0.weight": random_mask((8, 6), 0), "2.weight": random_mask((5, 8), 1)}
    pk.apply_masks(m, masks)
    pk.apply_masks(ref, masks)
    pk.remove_masks(m, ["0.weight", "0.weight"])
    pk.remove_masks(ref, ["0.weight"])
    assert pk.get_masks(m).keys() == {"2.weight"}
    x = torch.randn(3, 6)
    assert torch.equal(m(x), ref(x))
    assert torch.equal(m[0].weight, ref[0].weight)


def test_remove_masks_takes_one_name_as_a_string():
    m = mlp()
    pk.apply_masks(m, {"0.weight": random_mask((8, 6), 0), "2.weight": random_mask((5, 8), 1)})
    pk.remove_masks(m, "2.weight")
    assert pk.get_masks(m).keys() == {"0.weight"}


@pytest.mark.parametrize("names, error, match", [
    (5, TypeError, r"names must be a string or a list of strings.*got int"),
    ([0], TypeError, r"names must contain strings"),
    (["0.weight", "nope"], ValueError, r"not masked parameters"),
    ("0.weigh", ValueError, r"not masked parameters"),
])
def test_remove_masks_rejects_bad_names_before_removing_any(names, error, match):
    m = mlp()
    pk.apply_masks(m, {"0.weight": random_mask((8, 6), 0), "2.weight": random_mask((5, 8), 1)})
    snap = strict_snapshot(m)
    with pytest.raises(error, match=match):
        pk.remove_masks(m, names)
    assert_strictly_untouched(m, snap)


@pytest.mark.parametrize("fn", [pk.get_masks, pk.remove_masks, lambda m: pk.apply_masks(m, {})])
def test_mask_functions_want_a_module(fn):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got NoneType"):
        fn(None)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module.*state_dict.*load_state_dict"):
        fn(mlp().state_dict())


# --------------------------------------------------- a layer's own weight_mask / weight_orig

class OwnMaskLinear(nn.Linear):
    """A custom layer with its own ``weight_mask`` buffer (not torch.nn.utils.prune's)."""

    def __init__(self, i, o):
        super().__init__(i, o)
        self.register_buffer("weight_mask", torch.ones(o, i))

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.weight_mask, self.bias)


class OwnOrigLinear(nn.Linear):
    """A custom layer with a user Parameter named ``weight_orig``."""

    def __init__(self, i, o):
        super().__init__(i, o)
        self.weight_orig = nn.Parameter(torch.randn(o, i))

    def forward(self, x):
        return nn.functional.linear(x, self.weight + self.weight_orig, self.bias)


@pytest.mark.parametrize("layer", [OwnMaskLinear, OwnOrigLinear])
def test_a_layers_own_mask_or_orig_is_not_a_mask_and_is_not_overwritten(layer):
    torch.manual_seed(0)
    m = nn.Sequential(layer(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert pk.get_masks(m) == {}  # not AttributeError: no hook, so not masked
    t = all_parameters(m)["0.weight"]
    assert not t.is_masked and t.parameter is m[0].weight and t.tensor is m[0].weight
    scores = pk.score(m, "magnitude")
    assert scores.keys() == {"0.weight", "2.weight"}
    pk.summary(m, torch.randn(1, 4))
    snap = strict_snapshot(m)
    with pytest.raises(ValueError, match=r"masks\['0.weight'\].*module '0' \(" + layer.__name__ + r"\) already has"):
        pk.apply_masks(m, {"2.weight": random_mask((2, 3), 0), "0.weight": random_mask((3, 4), 1)})
    assert_strictly_untouched(m, snap)
    pk.apply_masks(m, {"2.weight": random_mask((2, 3), 0)})  # the other layers can still be masked
    assert pk.get_masks(m).keys() == {"2.weight"}


# ------------------------------------------------------------ weight_norm / spectral_norm layers

def normed_model(kind: str) -> nn.Sequential:
    torch.manual_seed(0)
    wrap = {"weight_norm": parametrizations.weight_norm, "spectral_norm": parametrizations.spectral_norm,
            "old_weight_norm": nn.utils.weight_norm, "old_spectral_norm": nn.utils.spectral_norm}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old-style hooks
        return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), wrap(nn.Linear(6, 3)))


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "old_weight_norm", "old_spectral_norm"])
def test_parametrized_weights_are_skipped_with_a_warning_naming_them(kind):
    m = normed_model(kind)
    name = kind.replace("old_", "")
    with pytest.warns(UserWarning, match=rf"not pruning '2.weight' \(computed by .*{name}.*remove"):
        targets = find_targets(m)
    assert [t.name for t in targets] == ["0.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [t.name for t in find_targets(m, exclude="2.weight")] == ["0.weight"]  # silenced on purpose
    with pytest.warns(UserWarning, match="not pruning '2.weight'"):
        masks = pk.prune(m, 0.5)
    assert masks.keys() == {"0.weight"}
    snap = strict_snapshot(m)
    with pytest.raises(ValueError, match=rf"'2.weight' \(computed by .*{name}.*\) cannot be masked"):
        pk.apply_masks(m, {"2.weight": random_mask((3, 6), 0)})
    with pytest.raises(ValueError, match=rf"include pattern '2.weight'.*computed by .*{name}"):
        find_targets(m, include="2.weight")
    assert_strictly_untouched(m, snap)


def test_a_model_with_only_parametrized_weights_says_why_nothing_is_prunable():
    m = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"nothing to prune.*'0.weight' \(computed by"):
        find_targets(m)


# ------------------------------------------------------------------------- shared (tied) weights

class TiedLM(nn.Module):
    """Token embedding and output head share one matrix (GPT-2 style weight tying)."""

    def __init__(self, vocab: int = 12, dim: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim)
        self.mid = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.mid(self.emb(tokens))))


def twice_used(seed: int = 0) -> nn.Sequential:
    """One Linear called twice."""
    torch.manual_seed(seed)
    lin = nn.Linear(5, 5)
    return nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(5, 2))


def shared_weight(seed: int = 0) -> nn.Sequential:
    """Two Linears (own biases) sharing one ``weight``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    net[2].weight = net[0].weight
    return net


TOKENS = torch.randint(0, 12, (3, 7), generator=torch.Generator().manual_seed(0))
X5 = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))


def test_a_tied_parameter_is_one_target_with_all_its_names():
    m = TiedLM()
    params = all_parameters(m)
    assert "head.weight" not in params  # named as model.named_parameters() names it
    t = params["emb.weight"]
    assert t.aliases == ("emb.weight", "head.weight")
    assert [(u.module, u.attr) for u in t.uses] == [(m.emb, "weight"), (m.head, "weight")]
    assert [t.name for t in find_targets(m)] == ["emb.weight", "mid.weight"]  # the head makes it a target
    assert [t.name for t in find_targets(m, include=["emb.weight", "head.weight"])] == ["emb.weight"]
    assert [t.name for t in find_targets(m, exclude="head.weight")] == ["mid.weight"]  # any name protects it
    assert pk.metrics.count_params(m) == sum(p.numel() for p in m.parameters())  # counted once
    u = twice_used()
    assert all_parameters(u)["0.weight"].aliases == ("0.weight", "2.weight")
    assert len(all_parameters(u)["0.weight"].uses) == 1
    assert [t.name for t in find_targets(u)] == ["0.weight", "4.weight"]
    s = shared_weight()
    assert [t.name for t in find_targets(s)] == ["0.weight", "4.weight"]
    assert [u.name for u in all_parameters(s)["0.weight"].uses] == ["0.weight", "2.weight"]


def assert_tied_masked(m: TiedLM, mask: torch.Tensor) -> None:
    """Embedding and head see the same mask and the same masked weight."""
    assert torch.equal(m.emb.weight_mask.bool(), mask) and torch.equal(m.head.weight_mask.bool(), mask)
    assert m.emb.weight_orig is m.head.weight_orig
    assert torch.equal(m.emb.weight, m.head.weight)
    assert torch.equal(m.emb.weight, m.emb.weight_orig * mask)


@given(sparsity=st.floats(0.0, 0.95), seed=st.integers(0, 2 ** 16), criterion=st.sampled_from(["random", "magnitude"]))
def test_prune_masks_a_tied_parameter_once_for_every_use(sparsity, seed, criterion):
    m = TiedLM(seed=seed)
    torch.manual_seed(seed)
    masks = pk.prune(m, sparsity, criterion=criterion, include=["emb.weight", "head.weight", "mid.weight"])
    assert masks.keys() == {"emb.weight", "mid.weight"}
    n = 12 * 6 + 6 * 6
    assert sum(int((~mk).sum()) for mk in masks.values()) == round(sparsity * n)  # the budget counts it once
    assert_tied_masked(m, masks["emb.weight"])
    assert pk.get_masks(m).keys() == {"emb.weight", "mid.weight"}
    ref = TiedLM(seed=seed)
    with torch.no_grad():
        ref.emb.weight.mul_(masks["emb.weight"])
        ref.mid.weight.mul_(masks["mid.weight"])
    masked = m(TOKENS)
    torch.testing.assert_close(masked, ref(TOKENS), rtol=0, atol=0)
    pk.remove_masks(m)
    assert m.head.weight is m.emb.weight and isinstance(m.emb.weight, nn.Parameter)
    assert not torch_prune.is_pruned(m)
    assert torch.equal(m(TOKENS), masked)


def test_default_prune_masks_the_embedding_with_the_head():
    m = TiedLM()
    masks = pk.prune(m, 0.5)
    assert masks.keys() == {"emb.weight", "mid.weight"}
    assert_tied_masked(m, masks["emb.weight"])
    masked = m(TOKENS)
    pk.remove_masks(m, "head.weight")  # any name of it removes it for every use
    assert pk.get_masks(m).keys() == {"mid.weight"}
    assert m.head.weight is m.emb.weight
    assert torch.equal(m(TOKENS), masked)


def test_a_mask_keyed_by_any_name_of_a_tied_parameter_is_applied_for_every_use():
    m = TiedLM()
    mask = random_mask((12, 6), 0)
    pk.apply_masks(m, {"head.weight": mask})
    assert_tied_masked(m, mask)
    second = random_mask((12, 6), 1)
    pk.apply_masks(m, {"emb.weight": second})  # composes, the same for both uses
    assert_tied_masked(m, mask & second)
    snap = strict_snapshot(m)
    with pytest.raises(ValueError, match=r"names the same parameter twice.*'emb.weight'.*'head.weight'"):
        pk.apply_masks(m, {"emb.weight": mask, "head.weight": mask})
    assert_strictly_untouched(m, snap)


def test_a_tied_parameter_masked_for_one_use_only_gets_one_mask_for_all():
    m = TiedLM()
    first = random_mask((12, 6), 0)
    torch_prune.custom_from_mask(m.head, "weight", first)  # the user's own torch pruning, head only
    assert torch.equal(all_parameters(m)["emb.weight"].mask, first)
    second = random_mask((12, 6), 1)
    pk.apply_masks(m, {"emb.weight": second})
    assert_tied_masked(m, first & second)


@pytest.mark.parametrize("make, x", [(twice_used, X5), (shared_weight, X5)])
def test_a_parameter_used_twice_counts_once_and_gets_one_mask(make, x):
    m = make()
    masks = pk.prune(m, 0.6, criterion="random")
    assert masks.keys() == {"0.weight", "4.weight"}
    assert sum(int((~mk).sum()) for mk in masks.values()) == round(0.6 * (25 + 10))
    for lin in {id(m[0]): m[0], id(m[2]): m[2]}.values():
        assert torch.equal(lin.weight_mask.bool(), masks["0.weight"])
    assert m[0].weight_orig is m[2].weight_orig
    masked = m(x)
    pk.remove_masks(m)
    assert m[2].weight is m[0].weight
    assert torch.equal(m(x), masked)


@pytest.mark.parametrize("granularity, scope", [("unstructured", "global"), ("channel", "layer")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_keeps_tied_weights_tied(granularity, scope, seed):
    m = TiedLM(seed=seed)
    torch.manual_seed(seed)
    pk.prune(m, 0.5, criterion="random", granularity=granularity, scope=scope)
    masked = m(TOKENS)
    small = pk.compact(m, TOKENS)
    assert small.head.weight is small.emb.weight
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in m.parameters())
    torch.testing.assert_close(small(TOKENS), masked)


def test_compact_keeps_two_layers_sharing_a_weight_tied():
    m = shared_weight()
    pk.prune(m, 0.5, criterion="random", granularity="channel", scope="layer", include=["0.weight"])
    masked = m(X5)
    small = pk.compact(m, X5)
    assert small[2].weight is small[0].weight
    torch.testing.assert_close(small(X5), masked)


class TiedLMDeeper(TiedLM):
    def __init__(self):
        super().__init__()
        self.mid2 = nn.Linear(6, 6)

    def forward(self, tokens):
        return self.head(self.mid2(torch.relu(self.mid(self.emb(tokens)))))


def test_compact_still_removes_channels_away_from_a_tied_parameter():
    m = TiedLMDeeper()
    pk.apply_masks(m, {"mid.weight": (torch.arange(6)[:, None] % 2 == 0).expand(6, 6)})
    masked = m(TOKENS)
    small = pk.compact(m, TOKENS)
    assert small.mid.out_features == 3 and small.mid2.in_features == 3  # mid's channels reach no tie
    assert small.head.weight is small.emb.weight
    torch.testing.assert_close(small(TOKENS), masked)


def test_prune_refuses_a_modules_own_weight_orig_before_scoring(monkeypatch):
    """prune checks that masking will not overwrite a module's own weight_orig before the
    (possibly expensive) criterion runs."""
    import prunekit.pipeline as pruning

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].register_buffer("weight_mask", torch.ones(4, 4))
    model[0].weight_orig = nn.Parameter(torch.zeros(4, 4))
    calls = []
    monkeypatch.setattr(pruning, "score", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="weight_orig"):
        pk.prune(model, 0.5)
    assert calls == []


@pytest.mark.parametrize("criterion", ["snip", "taylor"])
def test_gradient_scores_of_a_masked_tied_weight_count_every_use(criterion):
    """With an all-ones mask the model computes exactly what it computed before, so a
    gradient criterion must give the same scores: the gradient of a shared weight sums the
    contributions of every module that uses it (the embedding and the head)."""
    m = TiedLM(seed=1)
    data = [(TOKENS, torch.randint(0, 12, (3,), generator=torch.Generator().manual_seed(1)))]

    def loss_fn(out, y):
        return F.cross_entropy(out[:, -1], y)

    before = pk.score(m, criterion, data=data, loss_fn=loss_fn)
    pk.apply_masks(m, {"emb.weight": torch.ones(12, 6, dtype=torch.bool)})
    after = pk.score(m, criterion, data=data, loss_fn=loss_fn)
    assert set(before) == set(after)
    for name in before:
        assert torch.allclose(before[name], after[name], atol=1e-6), name


def test_summary_and_layer_sparsity_see_every_user_of_a_tied_weight():
    m = TiedLM()
    pk.prune(m, 0.5, include=["emb.weight"])
    s = pk.summary(m, TOKENS[:1])
    rows = {r.name: r for r in s.layers}
    assert {"emb", "mid", "head"} <= set(rows)
    assert rows["head"].params == 0 and rows["emb"].params == 12 * 6   # counted once
    assert s.params == pk.count_params(m)
    assert rows["head"].macs > 0 and rows["head"].effective_macs == round(rows["head"].macs / 2)
    assert pk.layer_sparsity(m)["emb.weight"] == pytest.approx(0.5)


def test_a_masked_model_can_be_deep_copied_and_still_trains():
    """torch.nn.utils.prune leaves a weight with autograd history that deepcopy refuses;
    prunekit's masked models copy right away, and read-only calls keep them copyable."""
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    pk.prune(model, 0.5)
    twin = copy.deepcopy(model)
    pk.summary(model, torch.zeros(1, 6))
    copy.deepcopy(model)
    assert torch.equal(twin(X5[:, :5].repeat(1, 2)[:, :6]), model(X5[:, :5].repeat(1, 2)[:, :6]))
    # gradients still reach weight_orig through the mask, and pruned entries stay zero
    loss = model(torch.randn(4, 6)).pow(2).sum()
    loss.backward()
    g = model[0].weight_orig.grad
    assert g is not None and torch.all(g[~model[0].weight_mask.bool()] == 0)
