"""N:M packing: lossless round trip and the bytes it really takes."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import prunekit as pk
from prunekit.sparse.formats import pack_nm


@settings(max_examples=60, deadline=None)
@given(nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (4, 8), (3, 8)]), out=st.integers(1, 5),
       groups=st.integers(1, 4), conv=st.booleans(), seed=st.integers(0, 1000))
def test_round_trip_of_nm_masked_weights(nm, out, groups, conv, seed):
    n, m = nm
    g = torch.Generator().manual_seed(seed)
    shape = (out, groups * m, 3, 3) if conv else (out, groups * m)
    w = torch.randn(shape, generator=g)
    w = w * pk.make_masks({"w": w.abs()}, granularity=f"{n}:{m}")["w"]
    p = pack_nm(w, n, m)
    assert torch.equal(p.unpack(), w)
    assert p.values.shape[1] == n and p.values.numel() == w.numel() * n // m
    assert int((p.indices < m).all()) and torch.all(p.indices[:, 1:] > p.indices[:, :-1])


def test_two_four_storage_is_56_percent_of_dense_fp16():
    w = torch.randn(64, 128).half()
    w = w * pk.make_masks({"w": w.float().abs()}, granularity="2:4")["w"]
    p = pack_nm(w, 2, 4)
    dense = w.numel() * w.element_size()
    # half the values (2 bytes each) + 2 bits per kept value
    assert p.index_bits == 2
    assert p.nbytes() == w.numel() // 2 * 2 + w.numel() // 2 * 2 // 8
    assert p.nbytes() / dense == pytest.approx(0.5625)


def test_groups_with_fewer_nonzeros_store_zeros():
    w = torch.tensor([[0.0, 0.0, 0.0, 7.0]])
    p = pack_nm(w, 2, 4)
    assert p.indices.tolist() == [[0, 3]] and p.values.tolist() == [[0.0, 7.0]]
    assert torch.equal(p.unpack(), w)


def test_errors():
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        pack_nm(torch.ones(2, 4), 2, 4)
    with pytest.raises(ValueError, match="divide"):
        pack_nm(torch.zeros(2, 6), 2, 4)
    with pytest.raises(ValueError, match="1 <= N < M"):
        pack_nm(torch.zeros(2, 4), 4, 4)
    with pytest.raises(TypeError, match="ints"):
        pack_nm(torch.zeros(2, 4), 2.0, 4)
    with pytest.raises(TypeError, match="weight"):
        pack_nm(torch.zeros(4), 2, 4)
