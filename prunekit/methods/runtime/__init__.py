"""Run-time (dynamic) pruning: what is skipped depends on the input."""

__all__: list[str] = []
