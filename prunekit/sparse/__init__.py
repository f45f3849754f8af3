"""Storage formats for sparse weights (specific speedup): N:M packing (CSR to come)."""

from . import formats
from .formats import NMPacked, pack_nm

__all__ = ["formats", "NMPacked", "pack_nm"]
