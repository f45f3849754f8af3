"""EViT token pruning: exact token counts per location, keep_rate=1 is exact, a slow reference, MACs, errors."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from prunekit.blocks import ViTBlock
from prunekit.methods.runtime.tokens import EViTBlock, evit, evit_macs, kept_tokens
from prunekit.models import TinyViT


def _vit(seed=0, depth=3):
    torch.manual_seed(seed)
    return TinyViT(image_size=8, patch_size=2, depth=depth).eval()   # 16 patch tokens + class token


def _x(n=4, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_kept_tokens_is_ceil_with_float_guard():
    assert [kept_tokens(0.5, 16), kept_tokens(0.5, 9), kept_tokens(0.7, 16), kept_tokens(0.7, 13)] == [8, 5, 12, 10]
    assert kept_tokens(0.28, 25) == 7 and 0.28 * 25 > 7    # not ceil(7.000000000000001) = 8
    assert kept_tokens(0.01, 16) == 1 and kept_tokens(1.0, 16) == 16


@pytest.mark.parametrize("keep_rate, counts", [
    (0.5, [1 + 8 + 1, 1 + 5 + 1]),      # n=16 -> ceil(8)=8; then n = 8 + 1 fused = 9 -> ceil(4.5)=5
    (0.7, [1 + 12 + 1, 1 + 10 + 1]),    # ceil(11.2)=12; n=13 -> ceil(9.1)=10
    (0.25, [1 + 4 + 1, 1 + 2 + 1]),     # ceil(4)=4; n=5 -> ceil(1.25)=2
])
def test_token_count_after_each_location(keep_rate, counts):
    model = evit(_vit(), keep_rate, locations=[1, 2])
    seen = []
    for blk in model.blocks[1:]:
        blk.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    model(_x())
    assert seen == counts == [model.blocks[1].last_tokens, model.blocks[2].last_tokens]
    assert model.blocks[1].last_kept.shape == (4, counts[0] - 2)


def test_without_fusion_no_extra_token():
    model = evit(_vit(), 0.5, locations=[1, 2], fuse=False)
    model(_x())
    assert [model.blocks[1].last_tokens, model.blocks[2].last_tokens] == [1 + 8, 1 + 4]


def test_keep_rate_one_gives_exactly_the_original_outputs():
    base = _vit()
    x = _x()
    with torch.no_grad():
        assert torch.equal(evit(base, 1.0, locations=[0, 1, 2])(x), base(x))
    assert not any(isinstance(m, EViTBlock) for m in base.modules())   # original untouched


def _reference_block(block, x, keep_rate):
    """A slow EViT block: per sample, ranks with Python's sorted, fuses with an explicit loop."""
    att = block.attn
    h = block.norm1(x)
    b, n, _ = h.shape
    q = att.q(h).reshape(b, n, att.num_heads, att.head_dim).transpose(1, 2)
    k = att.k(h).reshape(b, n, att.num_heads, att.head_dim).transpose(1, 2)
    v = att.v(h).reshape(b, n, att.num_heads, att.head_dim).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(att.head_dim), dim=-1)
    x = x + att.proj((w @ v).transpose(1, 2).reshape(b, n, -1))
    outs = []
    for i in range(b):
        a = w[i, :, 0, 1:].mean(0).tolist()
        order = sorted(range(n - 1), key=lambda j: -a[j])
        kk = math.ceil(round(keep_rate * (n - 1), 9))
        kept, rest = order[:kk], order[kk:]
        fused = sum(a[j] * x[i, 1 + j] for j in rest)
        outs.append(torch.stack([x[i, 0]] + [x[i, 1 + j] for j in kept] + [fused]))
    y = torch.stack(outs)
    return y + block.mlp(block.norm2(y))


def test_block_matches_a_slow_reference():
    torch.manual_seed(0)
    block = ViTBlock(16, 4).eval()
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        torch.testing.assert_close(EViTBlock(block, 0.6)(x), _reference_block(block, x, 0.6))


def test_macs_decrease_with_keep_rate():
    base = _vit()
    macs = evit_macs(base, _x(1), [1.0, 0.8, 0.6, 0.4, 0.2], locations=[1, 2])
    values = list(macs.values())
    assert all(a > b for a, b in itertools.pairwise(values))
    # 0.9 keeps ceil(14.4) = 15 of 16 tokens + 1 fused: 17 tokens, as many as before, so no saving
    assert evit_macs(base, _x(1), [0.9])[0.9] == macs[1.0]
    from prunekit.metrics import count_macs
    assert macs[1.0] == count_macs(base, _x(1))[0]


def test_default_locations_are_all_blocks_but_the_first():
    model = evit(_vit(), 0.5)
    assert [isinstance(b, EViTBlock) for b in model.blocks] == [False, True, True]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"keep_rate": 0}, ValueError, "keep_rate"),
    ({"keep_rate": 1.2}, ValueError, "keep_rate"),
    ({"keep_rate": "all"}, TypeError, "keep_rate"),
    ({"keep_rate": 0.5, "locations": [3]}, ValueError, "locations"),
    ({"keep_rate": 0.5, "locations": [1, 1]}, ValueError, "locations"),
    ({"keep_rate": 0.5, "locations": []}, ValueError, "locations"),
    ({"keep_rate": 0.5, "locations": "1"}, TypeError, "locations"),
    ({"keep_rate": 0.5, "fuse": 1}, TypeError, "fuse"),
])
def test_bad_arguments(kwargs, error, match):
    base = _vit()
    before = copy.deepcopy(base.state_dict())
    with pytest.raises(error, match=match):
        evit(base, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_dropped_attention_and_no_vit_refused():
    base = _vit()
    base.blocks[1].attn = None
    base.blocks[1].norm1 = None
    with pytest.raises(ValueError, match="attention"):
        evit(base, 0.5, locations=[1])
    with pytest.raises(ValueError, match="ViTBlock"):
        evit(torch.nn.Linear(2, 2), 0.5)
    with pytest.raises(ValueError, match="keep_rates"):
        evit_macs(_vit(), _x(1), [])


def test_pruning_in_the_last_block_leaves_the_class_token_output_unchanged():
    base = _vit()
    x = _x()
    pruned = evit(base, 0.3, locations=[2])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), base(x))
    assert pruned.blocks[2].last_tokens == 1 + 5 + 1                   # ceil(4.8) = 5
    assert evit_macs(base, x[:1], [0.3], [2])[0.3] < evit_macs(base, x[:1], [1.0], [2])[1.0]
