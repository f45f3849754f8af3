"""The criteria registry (prunekit.criteria.registry): names normalised at registration,
duplicates refused unless replace=True, unregister, and the scoped ``registered`` block."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.criteria import registry


def neg_magnitude(model, targets):
    return {t.name: -t.tensor.detach().abs() for t in targets}


def double_magnitude(model, targets):
    return {t.name: 2 * t.tensor.detach().abs() for t in targets}


@pytest.fixture
def clean():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def layer():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def test_the_package_re_exports_the_registry():
    for name in ("Criterion", "register", "registered", "unregister", "get", "available", "score"):
        assert getattr(pk.criteria, name) is getattr(registry, name), name
    assert pk.score is registry.score
    assert registry._BUILT_IN == set(pk.criteria.available())   # only built-ins at import
    assert len(registry._BUILT_IN) == 20


def test_a_name_is_normalised_at_registration(clean):
    pk.criteria.register("  MyCrit ", description="-|w|")(neg_magnitude)
    assert "mycrit" in pk.criteria.available()
    assert [n for n in pk.criteria.available() if n.lower() == "mycrit"] == ["mycrit"]
    net = layer()
    expected = -net.weight.detach().abs()
    for spelling in ("mycrit", "MyCrit", "MYCRIT", " mycrit"):
        assert torch.equal(pk.score(net, spelling)["weight"], expected), spelling
    assert pk.criteria.get("MyCrit").name == "mycrit"


def test_a_duplicate_raises_and_leaves_the_first(clean):
    pk.criteria.register("mycrit", description="-|w|")(neg_magnitude)
    with pytest.raises(ValueError, match="'mycrit' is already registered.*replace=True"):
        pk.criteria.register("MYCRIT", description="2|w|")(double_magnitude)
    with pytest.raises(ValueError, match="'magnitude' is already registered"):
        pk.criteria.register("Magnitude", description="2|w|")
    assert pk.criteria.get("mycrit").fn is neg_magnitude
    assert pk.criteria.get("magnitude").description.startswith("|w|")


def test_replace_true_replaces(clean):
    pk.criteria.register("mycrit", description="-|w|")(neg_magnitude)
    pk.criteria.register("MyCrit", description="2|w|", replace=True)(double_magnitude)
    crit = pk.criteria.get("mycrit")
    assert crit.fn is double_magnitude and crit.description == "2|w|"
    net = layer()
    assert torch.equal(pk.score(net, "mycrit")["weight"], 2 * net.weight.detach().abs())
    with pytest.raises(TypeError, match="replace must be a bool"):
        pk.criteria.register("other", description="x", replace="yes")


def test_unregister(clean):
    pk.criteria.register("mycrit", description="-|w|")(neg_magnitude)
    pk.criteria.unregister(" MyCrit")
    assert "mycrit" not in pk.criteria.available()
    with pytest.raises(ValueError, match="no criterion 'mycrit'"):
        pk.criteria.unregister("mycrit")
    with pytest.raises(ValueError, match="comes with prunekit"):
        pk.criteria.unregister("SNIP")
    with pytest.raises(TypeError, match="name must be a string"):
        pk.criteria.unregister(None)
    assert "snip" in pk.criteria.available()


def test_registered_adds_for_the_block_only():
    before = pk.criteria.available()
    net = layer()
    with pk.criteria.registered("MyCrit", neg_magnitude, description="-|w|") as crit:
        assert crit.name == "mycrit" and pk.criteria.get("MyCrit") is crit
        assert torch.equal(pk.score(net, "MyCrit")["weight"], -net.weight.detach().abs())
        with pytest.raises(ValueError, match="already registered"):
            pk.criteria.register("mycrit", description="x")
    assert pk.criteria.available() == before


def test_registered_restores_even_on_error():
    before = pk.criteria.available()
    with pytest.raises(RuntimeError, match="boom"):
        with pk.criteria.registered("mycrit", neg_magnitude, description="-|w|"):
            raise RuntimeError("boom")
    assert pk.criteria.available() == before
    # over a built-in, with replace=True: the built-in is back afterwards, also on error
    magnitude = pk.criteria.get("magnitude")
    with pytest.raises(RuntimeError, match="boom"):
        with pk.criteria.registered("magnitude", double_magnitude, description="2|w|", replace=True):
            net = layer()
            assert torch.equal(pk.score(net, "magnitude")["weight"], 2 * net.weight.detach().abs())
            raise RuntimeError("boom")
    assert pk.criteria.get("magnitude") is magnitude
    assert pk.criteria.available() == before


def test_registered_refuses_a_taken_name_without_replace_and_checks_first():
    before = pk.criteria.available()
    with pytest.raises(ValueError, match="already registered"):
        with pk.criteria.registered("snip", neg_magnitude, description="x"):
            pass
    with pytest.raises(TypeError, match="decorates a function"):
        with pk.criteria.registered("mycrit", 3, description="x"):
            pass
    with pytest.raises(ValueError, match="level"):
        with pk.criteria.registered("mycrit", neg_magnitude, description="x", level="filter"):
            pass
    assert pk.criteria.available() == before


def test_register_checks_before_decorating(clean):
    before = pk.criteria.available()
    with pytest.raises(TypeError, match="name must be a string"):
        pk.criteria.register(3, description="x")
    with pytest.raises(ValueError, match="non-empty"):
        pk.criteria.register("   ", description="x")
    with pytest.raises(TypeError, match="needs_data must be a bool"):
        pk.criteria.register("x", description="x", needs_data=1)
    assert pk.criteria.available() == before
