"""Test-wide fixtures."""

import pytest
import torch

from rnnkit.models.kernels import denormals_flushed

DEFAULT_FLUSH_DENORMAL = denormals_flushed()  # read before any test has trained


@pytest.fixture(autouse=True)
def _default_flush_denormal():
    """Every test starts and ends with the interpreter's denormal setting.

    Training switches flushing on for the process (``train.flush_denormal``), also inside
    module-scoped fixtures; hypothesis, for one, draws subnormal floats, which a flushing
    process cannot hold.
    """
    torch.set_flush_denormal(DEFAULT_FLUSH_DENORMAL)
    yield
    torch.set_flush_denormal(DEFAULT_FLUSH_DENORMAL)
