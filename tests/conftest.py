"""Test-wide fixtures."""

import pytest
import torch

from rnnkit.models.kernels import denormals_flushed


@pytest.fixture(autouse=True)
def _restore_flush_denormal():
    """Training switches denormal flushing on for the process (``train.flush_denormal``).

    Put it back after every test, so each test starts from the interpreter's default: hypothesis,
    for one, draws subnormal floats, which a flushing process cannot hold.
    """
    flushed = denormals_flushed()
    yield
    torch.set_flush_denormal(flushed)
