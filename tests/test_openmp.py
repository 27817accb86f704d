"""OpenMP's wait policy: ``rnnkit`` makes idle OpenMP threads sleep when other processes keep the CPUs
busy, and leaves libgomp's spinning (faster on a quiet machine) otherwise, unless the user chose.

Spinning workers made training several times slower beside one other busy process, and sleeping
ones made torch's LSTM 3.5x slower on a quiet machine (README, Performance). libgomp reads
``OMP_WAIT_POLICY`` once, when torch loads it, so these tests look at
a real ``rnnkit train`` process: the variable in its environment (a callback records it) and, with
``OMP_DISPLAY_ENV=VERBOSE``, the policy and spin count libgomp itself reports on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer import cli_args, tiny_settings, write_corpus

from rnnkit.openmp import WAIT_POLICY, choose_wait_policy, cores_busy_elsewhere

RECORDER = """
import json, os
from rnnkit.training import Callback

class RecordWaitPolicy(Callback):
    def on_fit_start(self, trainer):
        with open("policy.json", "w") as handle:
            json.dump(os.environ.get("OMP_WAIT_POLICY"), handle)
"""


def train_in_a_new_process(folder: Path, env_policy: str | None) -> tuple[str | None, str]:
    """Train a tiny run with the installed command; the policy its training saw, and its stderr."""
    (folder / "recorder.py").write_text(RECORDER, encoding="utf-8")
    corpus = write_corpus(folder / "corpus.csv", docs=60)
    env = {key: value for key, value in os.environ.items() if key != WAIT_POLICY}
    if env_policy is not None:
        env[WAIT_POLICY] = env_policy
    env.update(OMP_DISPLAY_ENV="VERBOSE", RNNKIT_CACHE=str(folder / "cache"))
    settings = tiny_settings(corpus, **{"train.epochs": 1, "train.baseline": False})
    command = [sys.executable, "-m", "rnnkit", "train", "-q", "--run-dir", str(folder / "run")]
    result = subprocess.run(
        [*command, "--callback", "recorder:RecordWaitPolicy", *cli_args(settings)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "policy.json").read_text()), result.stderr


def libgomp_reports(stderr: str, setting: str) -> str | None:
    """The value libgomp printed for ``setting`` (``OMP_DISPLAY_ENV``); None if torch's OpenMP is not
    libgomp (macOS's libomp prints nothing)."""
    for line in stderr.splitlines():
        name, sep, value = line.strip().partition(" = ")
        if sep and name == setting:
            return value.strip("'")
    return None


def test_importing_the_command_line_does_not_load_torch():
    """Otherwise the policy would be set after libgomp had read the environment."""
    code = "import sys, rnnkit.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


@pytest.fixture
def busy_process():
    """Another process keeping one core busy for the length of a test."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield process
    process.kill()
    process.wait()


def test_beside_a_busy_process_training_threads_sleep_when_idle(tmp_path, busy_process):
    policy, stderr = train_in_a_new_process(tmp_path, env_policy=None)
    assert policy == "PASSIVE"
    if libgomp_reports(stderr, "OMP_WAIT_POLICY") is None:
        pytest.skip("torch's OpenMP runtime is not libgomp: it does not report its settings")
    assert libgomp_reports(stderr, "GOMP_SPINCOUNT") == "0"  # unset, libgomp spins 300,000 times


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_the_load_of_other_processes_is_measured_in_cores(busy_process):
    assert 0.5 <= cores_busy_elsewhere(seconds=0.5) <= os.cpu_count()


@pytest.mark.parametrize(
    ("busy_cores", "policy"), [(0.0, None), (0.4, None), (0.5, "PASSIVE"), (1.7, "PASSIVE")]
)
def test_idle_threads_sleep_from_half_a_busy_core_on(monkeypatch, busy_cores, policy):
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh ``rnnkit`` process
    assert choose_wait_policy(lambda: busy_cores) == policy
    assert os.environ.get(WAIT_POLICY) == policy


def test_a_machine_whose_load_cannot_be_read_counts_as_busy(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert choose_wait_policy(lambda: None) == "PASSIVE"


def test_a_wait_policy_the_user_set_is_kept(tmp_path):
    policy, stderr = train_in_a_new_process(tmp_path, env_policy="ACTIVE")
    assert policy == "ACTIVE"
    if libgomp_reports(stderr, "OMP_WAIT_POLICY") is None:
        pytest.skip("torch's OpenMP runtime is not libgomp: it does not report its settings")
    assert libgomp_reports(stderr, "OMP_WAIT_POLICY") == "ACTIVE"


def test_a_process_that_already_loaded_torch_keeps_its_environment(monkeypatch):
    """``rnnkit.cli.main`` called from Python (or a test) after ``import torch`` changes nothing."""
    import torch  # noqa: F401  # loaded, as in any program that trains from Python

    monkeypatch.delenv(WAIT_POLICY, raising=False)
    assert choose_wait_policy(lambda: 2.0) is None
    assert WAIT_POLICY not in os.environ
