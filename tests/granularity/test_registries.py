"""The granularity registry and the head/layer adapter registries (issue 10, P5, P12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.granularity import heads as gheads
from prunekit.granularity import layers as glayers


def test_parse_gives_one_object_per_kind():
    got = {name: type(pk.granularity.parse(name)).__name__ for name in
           ("unstructured", "channel", "2:4", "block:2x4", "pattern", "head", "layer")}
    assert got == {"unstructured": "Unstructured", "channel": "Channel", "2:4": "NM", "block:2x4": "BlockTiles",
                   "pattern": "Pattern", "head": "Heads", "layer": "Layers"}
    g = pk.granularity.parse(" 2:8 ")
    assert (g.name, g.kind, g.n, g.m, g.fixed_sparsity()) == ("2:8", "nm", 2, 8, 0.75)
    assert pk.granularity.parse(g) is g and g == pk.granularity.parse("2:8")
    assert pk.granularity.SCOPES_SUPPORTED["layer"] == ("global",)
    assert pk.granularity.MODEL_UNITS == ("head", "layer")
    assert pk.granularity.DEFAULT_REDUCTION == {"channel": "l2", "block": "l2", "pattern": "sum", "head": "l2",
                                                "layer": "l2"}


def test_tile_scores_is_the_new_name_of_block_scores():
    s = torch.arange(16.0).reshape(4, 4)
    assert pk.granularity.block_scores is pk.granularity.tile_scores
    assert pk.granularity.tile_scores(s, 2, 2, "sum").tolist() == [[10.0, 18.0], [42.0, 50.0]]


def test_pattern_kernel_count_moved_with_an_alias():
    assert pk.allocation.pattern_kernel_count is pk.granularity.pattern.pattern_kernel_count


def test_a_registered_granularity_reaches_make_masks():
    """A new kind is one class and one register call; make_masks composes it unchanged."""
    from prunekit.granularity.base import Granularity, register

    class Rows(Granularity):  # whole rows, ranked by their sum: "channel" without normalisation
        kind = "rows"

        def units(self, scores, req):
            return {n: s.reshape(s.shape[0], -1).sum(1) for n, s in scores.items()}

        def expand(self, keep, req, scores):
            return {n: keep[n][:, None].expand(req.shapes[n]).clone() for n in scores}

    register("rows", lambda key, given: Rows() if key == "rows" else None)
    try:
        m = pk.make_masks({"w": torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.0, 0.5]])}, 1 / 3, "Rows")["w"]
        assert m.all(1).tolist() == [True, True, False]
    finally:
        pk.granularity.base._REGISTRY.pop("rows")
    with pytest.raises(ValueError, match="unknown granularity 'rows'"):
        pk.make_masks({"w": torch.rand(2, 2)}, 0.5, "rows")


class MyAttention(nn.Module):
    """A reader's own attention: fused qkv [3E, E] and an output projection [E, E]."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)


def my_heads(name, m):
    join = (name + ".") if name else ""
    return gheads.AttentionHeads(name, m, m.heads, m.dim // m.heads, (
        gheads.HeadSlice(join + "qkv.weight", 0, (0, m.dim, 2 * m.dim)), gheads.HeadSlice(join + "out.weight", 1)))


@pytest.fixture
def registered():
    gheads.register(MyAttention, my_heads)
    yield
    gheads._ADAPTERS.pop(MyAttention, None)


def test_a_readers_attention_module_takes_part_once_registered(registered):
    model = nn.Sequential(MyAttention(), nn.ReLU())
    assert [(a.name, a.num_heads, a.head_dim) for a in gheads.find_heads(model)] == [("0", 2, 4)]
    torch.manual_seed(0)
    with torch.no_grad():
        model[0].out.weight[:, :4] = 0.01  # head 0 is weak: its out columns and its q, k, v rows
        model[0].qkv.weight.reshape(3, 2, 4, 8)[:, 0] = 0.01
    masks = pk.make_masks(pk.score(model, "magnitude"), 0.5, "head", "layer", model=model)
    assert masks["0.out.weight"][:, :4].sum() == 0 and masks["0.out.weight"][:, 4:].all()
    qkv = masks["0.qkv.weight"].reshape(3, 2, 4, 8)  # [q/k/v, head, row, in]
    assert not qkv[:, 0].any() and qkv[:, 1].all()


def test_unregistered_attention_is_not_found():
    with pytest.raises(ValueError, match="no attention heads"):
        pk.make_masks({"0.out.weight": torch.rand(8, 8)}, 0.5, "head", model=nn.Sequential(MyAttention()))


class Residual(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.body = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.body(self.norm(x))


def test_a_readers_residual_block_takes_part_once_registered():
    torch.manual_seed(0)
    model = nn.Sequential(Residual(), Residual(), nn.Linear(4, 2))
    assert glayers.find_blocks(model) == []
    glayers.register(Residual, glayers.pre_norm(("body", "norm")))
    try:
        assert [b.name for b in glayers.find_blocks(model)] == ["0.body", "1.body"]
        with torch.no_grad():
            model[1].body.weight.mul_(0.001)
        masks = pk.make_masks(pk.score(model, "magnitude"), 0.5, "layer", model=model)
        assert not masks["1.body.weight"].any() and masks["0.body.weight"].all()
        assert set(masks) == {f"{i}.{p}" for i in (0, 1) for p in ("norm.weight", "norm.bias", "body.weight",
                                                                     "body.bias")}
    finally:
        glayers._ADAPTERS.pop(Residual, None)


def test_adapter_registration_is_checked():
    with pytest.raises(TypeError, match="module_type"):
        gheads.register(int, my_heads)
    with pytest.raises(TypeError, match="adapter"):
        glayers.register(Residual, "not callable")


def test_the_library_never_imports_the_books_models():
    import ast
    from pathlib import Path
    root = Path(pk.__file__).parent / "granularity"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                ours = node.level > 0 or (node.module or "").startswith("prunekit")
                assert not (ours and "models" in (node.module or "").split(".")), path
