"""Shared test set-up."""

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests and CI run on shared, loaded 2-core machines: no property test may fail because an
# example ran slowly (hypothesis' default deadline is 200 ms per example).
settings.register_profile("loaded-machine", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("loaded-machine")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small models run faster, and far more steadily on a shared CI machine, on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
