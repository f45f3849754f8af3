"""Huffman code lengths against slow references: brute-force optimal prefix codes, Kraft's equality."""

import heapq
import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.fusion import huffman_code_lengths


def brute_force_cost(counts):
    """Smallest sum(count * length) over all length vectors of a prefix code (Kraft sum <= 1)."""
    c = list(counts)
    n = len(c)
    if n == 1:
        return c[0]
    best = None
    for lengths in itertools.product(range(1, n), repeat=n):
        if sum(Fraction(1, 2 ** l) for l in lengths) <= 1:
            cost = sum(a * l for a, l in zip(c, lengths))
            best = cost if best is None else min(best, cost)
    return best


def merge_cost(counts):
    """Huffman's total cost = the sum of the weights of all merged nodes (a priority-queue reference)."""
    h = list(counts)
    if len(h) == 1:
        return h[0]
    heapq.heapify(h)
    total = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        total += a + b
        heapq.heappush(h, a + b)
    return total


@settings(max_examples=60)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6))
def test_optimal_against_brute_force(counts):
    table = {f"s{i}": c for i, c in enumerate(counts)}
    bits = huffman_code_lengths(table)
    assert list(bits) == list(table)
    assert sum(table[s] * bits[s] for s in table) == brute_force_cost(counts)
    if len(counts) > 1:
        assert sum(Fraction(1, 2 ** b) for b in bits.values()) == 1       # Kraft equality: a full tree
    else:
        assert list(bits.values()) == [1]


@settings(max_examples=60)
@given(st.lists(st.integers(0, 10 ** 6), min_size=2, max_size=60))
def test_large_alphabets_against_merge_cost(counts):
    bits = huffman_code_lengths(dict(enumerate(counts)))
    assert sum(c * bits[i] for i, c in enumerate(counts)) == merge_cost(counts)
    assert sum(Fraction(1, 2 ** b) for b in bits.values()) == 1
    assert all(b >= 1 for b in bits.values())


def test_known_code_and_determinism():
    assert huffman_code_lengths({"a": 5, "b": 2, "c": 1, "d": 1}) == {"a": 1, "b": 2, "c": 3, "d": 3}
    assert huffman_code_lengths({7: 3}) == {7: 1}
    assert huffman_code_lengths({"x": 1, "y": 1}) == {"x": 1, "y": 1}
    # equal counts: ties follow the order of the mapping, and repeat exactly
    table = {i: 1 for i in range(5)}
    assert huffman_code_lengths(table) == huffman_code_lengths(dict(table)) == {0: 3, 1: 3, 2: 2, 3: 2, 4: 2}
    # float frequencies work as well
    assert huffman_code_lengths({"a": 0.5, "b": 0.25, "c": 0.25}) == {"a": 1, "b": 2, "c": 2}


@pytest.mark.parametrize("counts,exc", [
    ([1, 2], TypeError), ({}, ValueError), ({"a": -1, "b": 2}, ValueError),
    ({"a": float("nan")}, ValueError), ({"a": "3"}, TypeError), ({"a": True}, TypeError),
])
def test_bad_input(counts, exc):
    with pytest.raises(exc, match="counts"):
        huffman_code_lengths(counts)
