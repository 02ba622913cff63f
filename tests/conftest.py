import os

import torch
from hypothesis import HealthCheck, settings

# One torch thread: the tests' tensors are tiny, where thread synchronisation costs far more than it saves
# (~1000x on a loaded 2-core machine), and two pytest-xdist workers already use both cores.
torch.set_num_threads(1)

# The default profile is derandomised, so `make test` (and CI) passes or fails the same way on every run;
# `HYPOTHESIS_PROFILE=thorough` explores fresh random inputs (500 per test) to look for new failures.
settings.register_profile("default", deadline=None, max_examples=40, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def monkeypatch_module():
    """A monkeypatch usable inside hypothesis tests (function-scoped fixtures are not reset per example)."""
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()
