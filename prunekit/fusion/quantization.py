"""Deep Compression's quantization stages: weight sharing, Huffman coding, honest byte accounting.

Han, Mao & Dally, "Deep Compression: compressing deep neural networks with pruning, trained
quantization and Huffman coding", ICLR 2016 (arXiv:1510.00149):

* :func:`share_weights` -- per-layer k-means of the *kept* weights into ``2**bits`` shared
  values, initialised linearly between their min and max (the paper's section 3.2 finds linear
  initialisation best, because it keeps the rare large weights).
* :func:`centroid_gradients` / :func:`centroid_step` -- the paper's fine-tuning of the shared
  values: the gradients of all weights that share a centroid are summed into it (its Fig. 3).
* :func:`huffman_code_lengths` -- optimal prefix-code lengths for a symbol count table
  (Huffman 1952), used for the weight-index and position streams (section 4).
* :func:`deep_compression_size` -- the bits of one layer stored as the paper stores it:
  relative (difference) indices with filler zeros (section 2, Fig. 2), the codebook, and the
  per-weight codebook indices, each stream optionally Huffman-coded;
  :func:`share_model_weights` and :func:`compression_report` do the same for a whole model.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Hashable, Mapping

import torch
from torch import nn

from .._validate import check_bool, check_int, check_number

__all__ = ["huffman_code_lengths", "share_weights", "shared_to_dense", "centroid_gradients", "centroid_step",
           "deep_compression_size", "CompressedSize", "relative_indices", "share_model_weights",
           "compression_report", "CompressionReport"]


# --- Huffman -----------------------------------------------------------------------------

def huffman_code_lengths(counts: Mapping[Hashable, Real]) -> dict[Hashable, int]:
    """Code length in bits of each symbol in an optimal (Huffman) prefix code.

    Huffman, "A method for the construction of minimum-redundancy codes", Proc. IRE 1952: merge
    the two least frequent subtrees until one is left; a symbol's length is its depth. The sum
    ``sum(counts[s] * bits[s])`` is the smallest of any prefix code, and for two or more symbols
    the lengths satisfy Kraft's equality ``sum(2 ** -bits[s]) == 1``.

    Ties are broken deterministically by the order of ``counts`` (earlier symbols, then earlier
    merges, are merged first), so equal inputs give equal codes. A single symbol gets 1 bit (a
    code needs at least one bit to be decodable). Symbols with count 0 get a (long) code too.

    Args:
        counts: ``{symbol: count}``, a non-empty mapping of finite counts ``>= 0``.

    Returns:
        ``{symbol: bits}`` with the keys of ``counts`` in their order.
    """
    if not isinstance(counts, Mapping):
        raise TypeError(f"counts must be a mapping {{symbol: count}}, got {type(counts).__name__}")
    if len(counts) == 0:
        raise ValueError("counts must have at least one symbol, got an empty mapping")
    weights = [check_number(f"counts[{s!r}]", c, low=0.0, what="a finite number >= 0") for s, c in counts.items()]
    symbols = list(counts)
    if len(symbols) == 1:
        return {symbols[0]: 1}
    depth = [0] * len(symbols)
    # heap entries: (weight, tie-break order, leaf indices below this node)
    heap = [(w, i, [i]) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    order = len(symbols)
    while len(heap) > 1:
        w1, _, leaves1 = heapq.heappop(heap)
        w2, _, leaves2 = heapq.heappop(heap)
        for i in leaves1:
            depth[i] += 1
        for i in leaves2:
            depth[i] += 1
        heapq.heappush(heap, (w1 + w2, order, leaves1 + leaves2))
        order += 1
    return {s: d for s, d in zip(symbols, depth)}


def _huffman_bits(counts: Mapping[Hashable, int]) -> int:
    """Total bits of a stream with these symbol counts under its own Huffman code."""
    lengths = huffman_code_lengths(counts)
    return int(sum(int(counts[s]) * lengths[s] for s in counts))


def _table_bits(alphabet: int, used: int, symbol_bits: int) -> int:
    """Bits of a canonical Huffman table: one byte per alphabet symbol, or (symbol, byte) pairs
    for the used symbols only, whichever is smaller."""
    return min(8 * alphabet, used * (symbol_bits + 8))


def _counts(values: torch.Tensor) -> dict[int, int]:
    uniq, cnt = torch.unique(values, return_counts=True)
    return {int(u): int(c) for u, c in zip(uniq.tolist(), cnt.tolist())}


# --- weight sharing ----------------------------------------------------------------------

def _check_weight(weight: Any) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError(f"weight must have at least one element, got shape {tuple(weight.shape)}")
    if weight.is_meta:
        raise ValueError("weight is on the meta device (a shape without values): materialise it first")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight must be finite (it contains NaN or an infinity)")
    return weight.detach()


def _check_mask(mask: Any, weight: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return weight != 0
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be None or a torch.Tensor of 0/1 (or bool) values, got {type(mask).__name__}")
    if mask.shape != weight.shape:
        raise ValueError(f"mask must have the shape of weight {tuple(weight.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must contain only 0 and 1 (or be a bool tensor)")
        mask = mask != 0
    return mask.to(weight.device)


def share_weights(weight: torch.Tensor, bits: int, *, mask: torch.Tensor | None = None,
                  max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the kept weights of one layer into ``2**bits`` shared values (Han et al. 2016, 3.1-3.2).

    One-dimensional k-means (Lloyd's algorithm) on the kept entries only, with the paper's linear
    initialisation: ``2**bits`` centroids evenly spaced between the smallest and the largest kept
    weight. Lloyd iterations run until the assignment stops changing, or ``max_iter`` times. A
    cluster that becomes empty is re-seeded at a kept weight farthest from its centroid, so the
    result has exactly ``2**bits`` distinct shared values -- unless the kept weights have fewer
    distinct values than that, in which case the codebook is those values, exactly (fewer
    centroids, zero error). There is no randomness: the result is a function of the input.
    Computation is in float64; the codebook is returned sorted ascending in ``weight``'s dtype.

    Pruned positions are not clustered and stay zero: their index is ``-1``.

    Args:
        weight: the layer's weight, any shape.
        bits: bits per shared-weight index, ``1..16`` (``2**bits`` centroids).
        mask: ``1``/``True`` for kept weights, same shape as ``weight``. ``None`` keeps the
            non-zero entries (what a pruned weight with its mask applied looks like).
        max_iter: cap on Lloyd iterations (``>= 1``).

    Returns:
        ``(codebook, indices)``: the sorted shared values (1-D, at most ``2**bits``) and an
        ``int64`` tensor shaped like ``weight`` with each kept weight's codebook index and
        ``-1`` at pruned positions. :func:`shared_to_dense` rebuilds the weight.
    """
    w = _check_weight(weight)
    b = check_int("bits", bits, minimum=1, maximum=16)
    m = _check_mask(mask, w)
    check_int("max_iter", max_iter, minimum=1)
    k = 2 ** b
    indices = torch.full(w.shape, -1, dtype=torch.int64, device=w.device)
    x = w[m].to(torch.float64).reshape(-1)
    if x.numel() == 0:
        return w.new_zeros(0), indices
    # k-means in 1-D on the sorted distinct values with their counts: a cluster is a run of
    # consecutive values, so sizes and sums come from prefix sums (O(k log n) per iteration)
    v, inverse, cnt = torch.unique(x, return_inverse=True, return_counts=True)      # v sorted
    n = v.numel()
    if n <= k:
        indices[m] = inverse
        return v.to(w.dtype), indices
    zero = v.new_zeros(1)
    N = torch.cat([zero, torch.cumsum(cnt.to(torch.float64), 0)])
    S = torch.cat([zero, torch.cumsum(cnt.to(torch.float64) * v, 0)])

    def bounds(c: torch.Tensor) -> torch.Tensor:
        # cluster j holds v[b[j]:b[j+1]]: the values nearest to c[j] (ties go to the lower centroid)
        mid = (c[1:] + c[:-1]) / 2
        inner = torch.searchsorted(v, mid, right=True)
        return torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), n)])

    def reseed(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # move the centroids of the empty clusters onto the values farthest from their own
        # centroids (one value each; each then forms a cluster of its own). Every move lowers
        # the cost, so this ends; with more distinct values than clusters there are always
        # enough values at a positive distance.
        bd = bounds(c)
        while True:
            empty = (bd[1:] == bd[:-1]).nonzero().flatten()
            if empty.numel() == 0:
                return c, bd
            label = torch.bucketize(torch.arange(n, device=v.device), bd[1:], right=True)
            dist = (v - c[label]).abs()
            far = torch.sort(dist, descending=True, stable=True).indices[:empty.numel()]
            c = c.clone()
            c[empty] = v[far]
            c, _ = torch.sort(c)
            bd = bounds(c)

    def means(bd: torch.Tensor) -> torch.Tensor:
        return (S[bd[1:]] - S[bd[:-1]]) / (N[bd[1:]] - N[bd[:-1]])

    centroids = torch.linspace(float(v[0]), float(v[-1]), k, dtype=torch.float64, device=v.device)
    centroids, bd = reseed(centroids)
    for _ in range(max_iter):
        centroids, new = reseed(means(bd))
        if torch.equal(new, bd):
            break
        bd = new
    # the codebook is the mean of each final cluster (consistent with the returned indices);
    # clusters are ordered runs of distinct values, so the means are strictly increasing
    codebook = means(bd)
    label = torch.bucketize(torch.arange(n, device=v.device), bd[1:], right=True)
    indices[m] = label[inverse]
    return codebook.to(w.dtype), indices


def _check_shared(codebook: Any, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 1 or not codebook.is_floating_point():
        raise TypeError("codebook must be a 1-D floating-point torch.Tensor (the first result of share_weights), "
                        f"got {type(codebook).__name__}"
                        + (f" of shape {tuple(codebook.shape)}, dtype {codebook.dtype}"
                           if isinstance(codebook, torch.Tensor) else ""))
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError("indices must be an integer torch.Tensor (the second result of share_weights), "
                        f"got {type(indices).__name__}"
                        + (f" of dtype {indices.dtype}" if isinstance(indices, torch.Tensor) else ""))
    if indices.numel() and (int(indices.min()) < -1 or int(indices.max()) >= codebook.numel()):
        raise ValueError(f"indices must be -1 (pruned) or in [0, {codebook.numel()}) (the codebook's length), "
                         f"got values {int(indices.min())}..{int(indices.max())}")
    return codebook, indices


def shared_to_dense(codebook: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The weight that ``(codebook, indices)`` stand for: ``codebook[i]`` where ``i >= 0``, else 0."""
    codebook, indices = _check_shared(codebook, indices)
    if codebook.numel() == 0:
        return torch.zeros(indices.shape, dtype=codebook.dtype, device=indices.device)
    return torch.where(indices >= 0, codebook[indices.clamp(min=0)], codebook.new_zeros(()))


def centroid_gradients(grad: torch.Tensor, indices: torch.Tensor, num_centroids: int) -> torch.Tensor:
    """The gradient of each shared value: the sum of the gradients of the weights that share it.

    Han et al. (2016), section 3.1 and Fig. 3: ``dL/dC_k = sum_{ij} dL/dW_ij * 1(I_ij = k)``.
    Pruned positions (index ``-1``) contribute nothing.
    """
    if not isinstance(grad, torch.Tensor) or not grad.is_floating_point():
        raise TypeError(f"grad must be a floating-point torch.Tensor, got {type(grad).__name__}")
    k = check_int("num_centroids", num_centroids, minimum=0)
    _check_shared(grad.new_zeros(k), indices)
    if indices.shape != grad.shape:
        raise ValueError(f"indices must have the shape of grad {tuple(grad.shape)}, got {tuple(indices.shape)}")
    keep = indices >= 0
    return grad.new_zeros(k).index_add_(0, indices[keep], grad[keep])


def centroid_step(model: nn.Module, shared: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                  lr: float) -> None:
    """One SGD step on the shared values of ``model``, after ``loss.backward()`` (Han et al. 2016, Fig. 3).

    For each ``name -> (codebook, indices)`` in ``shared`` (as :func:`share_weights` returned
    them for the parameter ``name``), ``codebook -= lr * centroid_gradients(param.grad, ...)``
    in place, and the parameter is rewritten with the new shared values (pruned positions stay
    zero). Use it in place of ``optimizer.step()`` for the shared parameters::

        loss.backward(); centroid_step(model, shared, lr=1e-3); model.zero_grad()

    Parameters without a gradient are left as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(shared, Mapping):
        raise TypeError(f"shared must be a mapping {{parameter name: (codebook, indices)}}, got {type(shared).__name__}")
    step = check_number("lr", lr, low=0.0, what="a finite number >= 0")
    params = dict(model.named_parameters())
    checked = []
    for name, pair in shared.items():
        if name not in params:
            raise ValueError(f"shared has {name!r}, which is not a parameter of model "
                             f"(parameters: {sorted(params)[:8]}{'...' if len(params) > 8 else ''})")
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"shared[{name!r}] must be a (codebook, indices) tuple, got {type(pair).__name__}")
        codebook, indices = _check_shared(*pair)
        if indices.shape != params[name].shape:
            raise ValueError(f"shared[{name!r}] indices have shape {tuple(indices.shape)}, but the parameter has "
                             f"shape {tuple(params[name].shape)}")
        checked.append((name, codebook, indices))
    with torch.no_grad():
        for name, codebook, indices in checked:
            p = params[name]
            if p.grad is None:
                continue
            codebook -= step * centroid_gradients(p.grad, indices, codebook.numel()).to(codebook.dtype)
            p.copy_(shared_to_dense(codebook, indices).to(p.dtype))


# --- byte accounting ---------------------------------------------------------------------

def relative_indices(positions: torch.Tensor, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Compression's relative index stream for sorted flat positions (Han et al. 2016, Fig. 2).

    Each stored entry keeps the number of zeros skipped since the previous stored entry (the
    first counts from the start), in ``index_bits`` bits, so at most ``M = 2**index_bits - 1``.
    A longer gap is bridged by *filler* entries: a stored zero weight placed ``M + 1`` positions
    after the previous entry (gap ``M``), as often as needed; a gap ``g`` needs ``g // 2**index_bits``
    fillers. (The paper: "when the difference exceeds 8, the largest 3-bit unsigned number, we add
    a filler zero" -- a span of 8 with 3 bits is a gap of 7 skipped zeros.)

    Returns:
        ``(gaps, is_filler)``: the stored gap of every entry in stream order, and which entries
        are fillers.
    """
    b = check_int("index_bits", index_bits, minimum=1, maximum=32)
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be an integer torch.Tensor, got {type(positions).__name__}")
    span = 2 ** b
    pos = positions.reshape(-1).to(torch.int64).cpu()
    if pos.numel() == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    g = torch.diff(pos, prepend=torch.tensor([-1])) - 1          # zeros skipped before each entry
    if bool((g < 0).any()):
        raise ValueError("positions must be non-negative and strictly increasing")
    n_fill = g // span                                           # fillers before each entry
    last = torch.cumsum(n_fill + 1, 0) - 1                       # stream slot of each real entry
    gaps = torch.full((int(last[-1]) + 1,), span - 1, dtype=torch.int64)
    is_filler = torch.ones_like(gaps, dtype=torch.bool)
    gaps[last] = g % span
    is_filler[last] = False
    return gaps, is_filler


@dataclass(frozen=True)
class CompressedSize:
    """Bits of one layer in Deep Compression's storage, by part, and the ratio to dense storage.

    ``bits`` has the parts ``"index"`` (relative positions), ``"weights"`` (codebook index per
    stored entry, fillers included), ``"codebook"`` (the shared values) and ``"tables"``
    (Huffman code lengths the decoder needs: per stream, one byte per alphabet symbol or a
    (symbol, byte) pair per used symbol, whichever is smaller; 0 without Huffman). ``ratio = dense_bits / total_bits``.
    """

    bits: dict[str, int]
    total_bits: int
    dense_bits: int
    ratio: float
    entries: int          #: stored entries, fillers included
    fillers: int          #: filler zeros among them
    weight_bits: int      #: fixed-length bits per weight entry (before Huffman)
    huffman: bool = field(default=False)

    @property
    def total_bytes(self) -> float:
        return self.total_bits / 8


def deep_compression_size(codebook: torch.Tensor, indices: torch.Tensor, *, index_bits: int = 5,
                          huffman: bool = False, weight_bits: int | None = None, codebook_bits: int = 32,
                          dense_bits: int = 32) -> CompressedSize:
    """Bits to store one pruned, weight-shared layer as Deep Compression does (Han et al. 2016).

    The layer is flattened in row-major order; its kept entries (``indices >= 0``, as returned by
    :func:`share_weights`) are stored as two parallel streams:

    * positions as relative indices of ``index_bits`` bits with filler zeros for long gaps
      (:func:`relative_indices`; the paper uses 8 bits for conv and 5 for fully connected layers);
    * one codebook index per entry. A filler needs a code for "zero" that no centroid has, so
      the alphabet is the codebook plus one zero symbol when there are fillers, and the
      fixed-length width is ``ceil(log2(alphabet))`` (at least 1) unless ``weight_bits`` is given;

    plus the codebook itself, ``len(codebook) * codebook_bits``. With ``huffman=True`` each stream
    is replaced by its own Huffman code (:func:`huffman_code_lengths` of its symbol counts) and the
    decoder's tables are counted too (see :class:`CompressedSize`). No row pointers are counted:
    the positions run over the whole flattened layer, whose shape is known.

    Args:
        codebook, indices: a result of :func:`share_weights`.
        index_bits: bits per relative index, ``1..32``.
        huffman: Huffman-code both streams.
        weight_bits: fixed-length bits per weight entry (default: as above); must fit the alphabet.
        codebook_bits: bits per shared value (32 for float32).
        dense_bits: bits per weight of the dense reference (32 for float32).

    Returns:
        A :class:`CompressedSize` with the breakdown and ``ratio`` = dense bits / total bits.
    """
    codebook, indices = _check_shared(codebook, indices)
    ib = check_int("index_bits", index_bits, minimum=1, maximum=32)
    hf = check_bool("huffman", huffman)
    cb = check_int("codebook_bits", codebook_bits, minimum=1)
    db = check_int("dense_bits", dense_bits, minimum=1)
    flat = indices.reshape(-1).cpu()
    positions = (flat >= 0).nonzero().flatten()
    gaps, is_filler = relative_indices(positions, ib)
    fillers = int(is_filler.sum())
    alphabet = codebook.numel() + (1 if fillers else 0)
    need = max(1, math.ceil(math.log2(alphabet))) if alphabet > 0 else 1
    if weight_bits is None:
        wb = need
    else:
        wb = check_int("weight_bits", weight_bits, minimum=need)
    entries = int(gaps.numel())
    # the weight stream: codebook index per entry, symbol -1 for fillers
    symbols = torch.full((entries,), -1, dtype=torch.int64)
    symbols[~is_filler] = flat[positions]
    bits = {"codebook": codebook.numel() * cb, "tables": 0}
    if hf and entries:
        bits["index"] = _huffman_bits(_counts(gaps))
        bits["weights"] = _huffman_bits(_counts(symbols))
        bits["tables"] = _table_bits(2 ** ib, len(_counts(gaps)), ib) + _table_bits(alphabet, alphabet, wb)
    else:
        bits["index"] = entries * ib
        bits["weights"] = entries * wb
    bits = {k: bits[k] for k in ("index", "weights", "codebook", "tables")}
    total = sum(bits.values())
    dense = indices.numel() * db
    return CompressedSize(bits=bits, total_bits=total, dense_bits=dense,
                          ratio=dense / total if total else math.inf, entries=entries, fillers=fillers,
                          weight_bits=wb, huffman=hf)


# --- whole models ------------------------------------------------------------------------

def _per_name(arg: str, value: Any, names: list[str], minimum: int, maximum: int) -> dict[str, int]:
    if isinstance(value, Mapping):
        unknown = [n for n in value if n not in names]
        if unknown:
            raise ValueError(f"{arg} names parameters that are not shared here: {unknown[:5]} "
                             f"(shared: {names[:8]}{'...' if len(names) > 8 else ''})")
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{arg} must give a value for every shared parameter; missing {missing[:5]}")
        return {n: check_int(f"{arg}[{n!r}]", value[n], minimum=minimum, maximum=maximum) for n in names}
    v = check_int(arg, value, minimum=minimum, maximum=maximum)
    return {n: v for n in names}


def share_model_weights(model: nn.Module, bits: int | Mapping[str, int], *, names: list[str] | None = None,
                        max_iter: int = 300) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`share_weights` on every weight of ``model``, written back into it (in place).

    Each parameter is clustered on its own (one codebook per layer, as in the paper); its zeros
    are the pruned positions (``mask=None``), so remove pruning masks first
    (:func:`prunekit.remove_masks` makes the zeros permanent). The parameters then hold their
    shared values, so the model evaluates at its quantized accuracy.

    Args:
        model: a pruned model without masks attached.
        bits: bits per layer, one ``int`` for all or ``{parameter name: bits}`` (the paper: 8 for
            conv, 5 for fully connected layers in AlexNet).
        names: the parameters to share; default every parameter with 2 or more dimensions
            (conv and linear weights, not biases or batch norm).
        max_iter: Lloyd iteration cap per layer.

    Returns:
        ``{parameter name: (codebook, indices)}`` for :func:`centroid_step` and
        :func:`compression_report`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    masked = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if masked:
        raise ValueError(f"model has pruning masks attached ({masked[:3]}): call prunekit.remove_masks(model) "
                         f"first, so that the pruned weights are zeros")
    params = dict(model.named_parameters())
    if names is None:
        chosen = [n for n, p in params.items() if p.dim() >= 2]
    else:
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"names must be None or a list of parameter names, got {names!r:.60}")
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"names has {unknown[:5]}, not parameters of model")
        chosen = list(names)
    per_bits = _per_name("bits", bits, chosen, 1, 16)
    check_int("max_iter", max_iter, minimum=1)
    shared = {n: share_weights(params[n], per_bits[n], max_iter=max_iter) for n in chosen}
    with torch.no_grad():
        for n, (codebook, indices) in shared.items():
            params[n].copy_(shared_to_dense(codebook, indices))
    return shared


@dataclass(frozen=True)
class CompressionReport:
    """Deep Compression's storage of a whole model: per shared layer, the rest, and the ratio.

    ``other_bits`` counts the parameters that are not shared (biases, batch norm) densely at
    ``dense_bits`` each; buffers (batch norm statistics) are not counted, as in the paper.
    ``ratio = dense_total_bits / total_bits`` with every parameter dense at ``dense_bits``.
    """

    layers: dict[str, CompressedSize]
    other_bits: int
    total_bits: int
    dense_total_bits: int
    ratio: float

    def parts(self) -> dict[str, int]:
        """Bits by part, summed over the layers, plus ``"other"``."""
        out = {k: sum(r.bits[k] for r in self.layers.values()) for k in ("index", "weights", "codebook", "tables")}
        out["other"] = self.other_bits
        return out


def compression_report(model: nn.Module, shared: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                       index_bits: int | Mapping[str, int] = 5, huffman: bool = True, codebook_bits: int = 32,
                       dense_bits: int = 32) -> CompressionReport:
    """:func:`deep_compression_size` of every shared layer of ``model``, and the whole model's ratio.

    Args:
        model: the model the ``shared`` layers belong to (its other parameters are counted dense).
        shared: ``{parameter name: (codebook, indices)}``, e.g. from :func:`share_model_weights`.
        index_bits: relative-index bits, one ``int`` or ``{name: bits}`` (the paper: 8 conv, 5 fc).
        huffman, codebook_bits, dense_bits: as in :func:`deep_compression_size`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(shared, Mapping):
        raise TypeError(f"shared must be a mapping {{parameter name: (codebook, indices)}}, got {type(shared).__name__}")
    params = dict(model.named_parameters())
    names = list(shared)
    for n in names:
        if n not in params:
            raise ValueError(f"shared has {n!r}, which is not a parameter of model")
        pair = shared[n]
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"shared[{n!r}] must be a (codebook, indices) tuple, got {type(pair).__name__}")
        _check_shared(*pair)
        if pair[1].shape != params[n].shape:
            raise ValueError(f"shared[{n!r}] indices have shape {tuple(pair[1].shape)}, but the parameter has "
                             f"shape {tuple(params[n].shape)}")
    per_index = _per_name("index_bits", index_bits, names, 1, 32)
    check_bool("huffman", huffman)
    db = check_int("dense_bits", dense_bits, minimum=1)
    layers = {n: deep_compression_size(*shared[n], index_bits=per_index[n], huffman=huffman,
                                       codebook_bits=codebook_bits, dense_bits=db) for n in names}
    other = sum(p.numel() for n, p in params.items() if n not in shared) * db
    total = sum(r.total_bits for r in layers.values()) + other
    dense = sum(p.numel() for p in params.values()) * db
    return CompressionReport(layers=layers, other_bits=other, total_bits=total, dense_total_bits=dense,
                             ratio=dense / total if total else math.inf)
