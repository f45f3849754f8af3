"""Deprecated path: moved to :mod:`prunekit.methods.learned.amc` (kept for one release)."""

from .._shim import forward

__getattr__, __dir__ = forward(__name__)
