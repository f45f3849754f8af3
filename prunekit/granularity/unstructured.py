"""``"unstructured"``: single weights (Han et al. 2015, *Learning both Weights and Connections*)."""

from __future__ import annotations

from .base import Granularity, register


class Unstructured(Granularity):
    """Every weight is its own unit; its score is its own score (nothing is reduced)."""

    kind = "unstructured"

    def check_applicable(self, name, shape) -> None:
        return None


register("unstructured", lambda key, given: Unstructured() if key == "unstructured" else None)
