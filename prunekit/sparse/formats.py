"""Storage formats for sparse weights: what an N:M pattern really saves.

Semi-structured N:M sparsity (Mishra et al. 2021) keeps N of every M consecutive weights
along the input dimension. Hardware that supports it (NVIDIA's sparse tensor cores for
2:4) stores only the N kept values of each group plus, for each kept value, its position in
the group: ``ceil(log2 M)`` bits (2 bits for 2:4). :func:`pack_nm` builds exactly that
representation, :meth:`NMPacked.unpack` restores the dense tensor, and
:meth:`NMPacked.nbytes` counts its bytes, so the saving can be measured rather than quoted.

Groups follow :func:`prunekit.granularity.nm_mask`: a Linear weight ``[out, in]`` is grouped
along ``in``; a conv weight ``[out, in, kh, kw]`` is first made channels-last
(``[out, kh, kw, in]``) and grouped along ``in``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NMPacked:
    """An N:M-sparse tensor as kept values plus their in-group positions."""

    values: torch.Tensor   # [groups, n], in channels-last group order
    indices: torch.Tensor  # [groups, n], uint8 positions 0..m-1, ascending within a group
    n: int
    m: int
    shape: torch.Size

    @property
    def index_bits(self) -> int:
        """Bits per stored position: ceil(log2 M), at least 1."""
        return max(1, math.ceil(math.log2(self.m)))

    def nbytes(self) -> int:
        """Bytes of the values plus the positions packed at :attr:`index_bits` bits each."""
        return self.values.numel() * self.values.element_size() + math.ceil(self.indices.numel() * self.index_bits / 8)

    def unpack(self) -> torch.Tensor:
        """The dense tensor (zeros where nothing is stored)."""
        groups = torch.zeros(self.values.shape[0], self.m, dtype=self.values.dtype, device=self.values.device)
        groups.scatter_(1, self.indices.long(), self.values)
        channels_last = list(self.shape)
        channels_last.append(channels_last.pop(1))
        return groups.reshape(channels_last).movedim(-1, 1).contiguous()


def pack_nm(weight: torch.Tensor, n: int, m: int) -> NMPacked:
    """Pack a weight with at most ``n`` non-zeros in every group of ``m`` (see module doc).

    Groups with fewer than ``n`` non-zeros store explicit zeros to keep the fixed layout.

    >>> w = torch.tensor([[0., 3., 0., -1., 2., 0., 0., 5.]])
    >>> p = pack_nm(w, 2, 4)
    >>> p.values.tolist(), p.indices.tolist()
    ([[3.0, -1.0], [2.0, 5.0]], [[1, 3], [0, 3]])
    >>> torch.equal(p.unpack(), w)
    True
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise TypeError("weight must be a tensor with at least 2 dimensions ([out, in, ...])")
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
        raise TypeError(f"n and m must be ints, got n={n!r}, m={m!r}")
    if not 1 <= n < m:
        raise ValueError(f"N:M needs 1 <= N < M, got {n}:{m}")
    if weight.shape[1] % m:
        raise ValueError(f"M={m} must divide the input dimension {weight.shape[1]} of the weight")
    groups = weight.detach().movedim(1, -1).reshape(-1, m)
    nonzero = groups != 0
    worst = int(nonzero.sum(dim=1).max())
    if worst > n:
        raise ValueError(f"weight is not {n}:{m} sparse: a group of {m} has {worst} non-zeros")
    position = torch.arange(m, device=weight.device)
    # non-zeros first, then the lowest free positions; ascending positions within a group
    key = (~nonzero).to(torch.int64) * m + position
    idx = key.argsort(dim=1)[:, :n].sort(dim=1).values
    return NMPacked(groups.gather(1, idx), idx.to(torch.uint8), n, m, weight.shape)
