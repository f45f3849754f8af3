"""Deprecated path: moved to :mod:`prunekit.pipeline` (kept for one release)."""

from ._shim import forward

__getattr__, __dir__ = forward(__name__)
