"""Test-wide fixtures and settings.

* ``compiled_extension`` builds rnnkit's C++ loop once per session, before the first test and
  saying so, instead of inside whichever test first trains a GRU (the build takes 20-90 s, once
  per machine and source version; loading a built one takes ~0.3 s).
* ``pytest -m "not slow"`` leaves out the torchrun, kill-and-resume and benchmark runs.
* ``finished_run`` is one tiny finished run for the session, for tests that read it, or copy it and
  then damage, lock or overwrite the copy.
* ``amp_of_predictions`` records whether each prediction pass of rnnkit's predictors ran under
  mixed precision.
* ``HYPOTHESIS_PROFILE=dev`` runs a few examples per fuzz test for a quick loop; CI runs the full
  counts (``fuzzing.py``).
"""

import os
import time
from pathlib import Path

import pytest
import torch
from test_trainer import train_tiny_run

import rnnkit.predict
from rnnkit.models.kernels import cpp_loop
from rnnkit.runtime import denormals_flushed

DEFAULT_FLUSH_DENORMAL = denormals_flushed()  # read before any test has trained


@pytest.fixture(autouse=True)
def _default_flush_denormal():
    """Every test starts and ends with the interpreter's denormal setting.

    Training puts the setting back when it ends, but tests also toggle it themselves; hypothesis,
    for one, draws subnormal floats, which a flushing thread cannot hold.
    """
    torch.set_flush_denormal(DEFAULT_FLUSH_DENORMAL)
    yield
    torch.set_flush_denormal(DEFAULT_FLUSH_DENORMAL)


@pytest.fixture(scope="session", autouse=True)
def compiled_extension(request: pytest.FixtureRequest):
    """rnnkit's compiled C++ loop, built (or loaded) once for the session; None without a compiler.

    With ``RNNKIT_REQUIRE_COMPILED`` set (CI), a failed build is an error of every test.
    """
    fresh = not (cpp_loop.build_directory() / f"{cpp_loop.NAME}.so").exists()
    if fresh:
        _say(request.config, "building rnnkit's compiled CPU kernels, once per machine (20 s or more)...")
    started = time.perf_counter()
    extension = cpp_loop.extension()
    if fresh:
        _say(request.config, f"built in {time.perf_counter() - started:.0f} s: {cpp_loop.build_directory()}")
    if extension is None and os.environ.get("RNNKIT_REQUIRE_COMPILED"):
        pytest.fail("the compiled extension could not be built (see the warning above)")
    return extension


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run trained to the end (``runs/.../run`` beside its ``corpus.csv``); copy it to change it."""
    return train_tiny_run(tmp_path_factory.mktemp("finished"))


@pytest.fixture
def amp_of_predictions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``amp`` flag of every ``predict_dataset`` call made by :mod:`rnnkit.predict`, in order."""
    seen: list[bool] = []
    real = rnnkit.predict.predict_dataset

    def recording(model, dataset, batch_size, device, amp=False):
        seen.append(amp)
        return real(model, dataset, batch_size, device, amp)

    monkeypatch.setattr(rnnkit.predict, "predict_dataset", recording)
    return seen


def _say(config: pytest.Config, line: str) -> None:
    """Print ``line`` on the terminal now, past pytest's output capture."""
    with config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}", flush=True)
