"""Shared test set-up."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests and CI run on shared, loaded 2-core machines: no property test may fail because an
# example ran slowly (hypothesis' default deadline is 200 ms per example). By default the
# examples are derandomised, so `make test` tries the same cases on every run and passes
# or fails every time; `HYPOTHESIS_PROFILE=explore` draws new random cases to hunt for bugs.
settings.register_profile("repeatable", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small models run faster, and far more steadily on a shared CI machine, on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
