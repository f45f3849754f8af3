"""Deep Compression's byte accounting on hand-made tensors (Han et al. 2016, section 2 and Fig. 2)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.fusion import deep_compression_size, relative_indices, share_weights


def hand_made():
    # 30 weights, kept at positions 1, 4, 5, 22, 29 with four distinct values
    w = torch.zeros(30)
    w[[1, 4, 5, 22, 29]] = torch.tensor([1.0, 2.0, 2.0, 3.0, 4.0])
    return share_weights(w, 2)


def test_relative_indices_with_fillers():
    # 2-bit indices: at most 3 skipped zeros per entry; gap 16 before 22 needs 4 fillers, gap 6 before 29 one
    gaps, filler = relative_indices(torch.tensor([1, 4, 5, 22, 29]), 2)
    assert gaps.tolist() == [1, 2, 0, 3, 3, 3, 3, 0, 3, 2]
    assert filler.tolist() == [False, False, False, True, True, True, True, False, True, False]
    # the paper's example width: 3 bits, a span of 8 (7 skipped zeros) fits, 8 skipped zeros need a filler
    assert relative_indices(torch.tensor([7, 15]), 3)[0].tolist() == [7, 7]
    assert relative_indices(torch.tensor([8]), 3)[0].tolist() == [7, 0]


@settings(max_examples=60)
@given(st.sets(st.integers(0, 500), max_size=40), st.integers(1, 6))
def test_relative_indices_decode(positions, bits):
    pos = sorted(positions)
    gaps, filler = relative_indices(torch.tensor(pos, dtype=torch.long), bits)
    assert bool((gaps < 2 ** bits).all()) and bool((gaps >= 0).all())
    decoded, at = [], -1
    for g, f in zip(gaps.tolist(), filler.tolist()):
        at += g + 1
        if not f:
            decoded.append(at)
    assert decoded == pos
    prev = [-1] + pos[:-1]
    assert int(filler.sum()) == sum((p - q - 1) // 2 ** bits for p, q in zip(pos, prev))


def test_fixed_length_size():
    codebook, idx = hand_made()
    assert codebook.tolist() == [1.0, 2.0, 3.0, 4.0]
    r = deep_compression_size(codebook, idx, index_bits=2)
    # 10 entries (5 fillers); the weight alphabet is 4 centroids + the filler zero -> 3 bits
    assert (r.entries, r.fillers, r.weight_bits) == (10, 5, 3)
    assert r.bits == {"index": 20, "weights": 30, "codebook": 128, "tables": 0}
    assert r.total_bits == 178 and r.dense_bits == 960
    assert r.ratio == pytest.approx(960 / 178) and r.total_bytes == 178 / 8
    # wide enough indices: no fillers, 2-bit weights
    r = deep_compression_size(codebook, idx, index_bits=5)
    assert (r.entries, r.fillers, r.weight_bits) == (5, 0, 2)
    assert r.bits == {"index": 25, "weights": 10, "codebook": 128, "tables": 0}
    # a 16-bit codebook and a chosen weight width
    r = deep_compression_size(codebook, idx, index_bits=5, weight_bits=4, codebook_bits=16)
    assert r.bits == {"index": 25, "weights": 20, "codebook": 64, "tables": 0}


def test_huffman_size():
    codebook, idx = hand_made()
    r = deep_compression_size(codebook, idx, index_bits=2, huffman=True)
    # gap counts {3: 5, 0: 2, 2: 2, 1: 1}: Huffman cost 3 + 5 + 10 = 18 bits
    # weight symbols {filler: 5, 0: 1, 1: 2, 2: 1, 3: 1}: cost 2 + 3 + 5 + 10 = 20 bits
    # tables: 4 gap symbols x 1 byte, 5 weight symbols x 1 byte
    assert r.bits == {"index": 18, "weights": 20, "codebook": 128, "tables": 72}
    assert r.total_bits == 238 and r.huffman


def test_two_dimensional_is_row_major_and_all_pruned():
    w = torch.zeros(3, 4)
    w[0, 3] = 1.0
    w[2, 0] = 2.0                       # flat positions 3 and 8
    codebook, idx = share_weights(w, 1)
    r = deep_compression_size(codebook, idx, index_bits=2)
    assert (r.entries, r.fillers) == (3, 1)     # 3 skipped zeros, then 4 (one filler)
    codebook, idx = share_weights(torch.zeros(4), 3)
    r = deep_compression_size(codebook, idx)
    assert r.total_bits == 0 and r.ratio == float("inf")


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(index_bits=0), ValueError, "index_bits"),
    (dict(index_bits=3.0), TypeError, "index_bits"),
    (dict(huffman=1), TypeError, "huffman"),
    (dict(weight_bits=2, index_bits=2), ValueError, "weight_bits"),   # 5 symbols need 3 bits
    (dict(codebook_bits=0), ValueError, "codebook_bits"),
    (dict(dense_bits=0), ValueError, "dense_bits"),
])
def test_bad_input(kwargs, exc, word):
    codebook, idx = hand_made()
    with pytest.raises(exc, match=word):
        deep_compression_size(codebook, idx, **kwargs)


def test_bad_shared():
    codebook, idx = hand_made()
    with pytest.raises(TypeError, match="codebook"):
        deep_compression_size(codebook.tolist(), idx)
    with pytest.raises(TypeError, match="indices"):
        deep_compression_size(codebook, idx.float())
    with pytest.raises(ValueError, match="indices"):
        deep_compression_size(codebook[:2], idx)
