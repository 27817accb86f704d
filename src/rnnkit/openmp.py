"""How torch's OpenMP threads wait for work, chosen before torch (and its OpenMP runtime) loads.

GNU OpenMP (libgomp, which the Linux torch wheels bundle) lets an idle worker thread spin for
300,000 iterations before it sleeps. On a quiet machine that spinning is what makes many small
parallel regions fast (torch's LSTM runs two per time step: 3.5x the training speed of sleeping
workers, measured in the README's thread table). Beside another busy process it is what makes them
slow: with as many threads as cores, the spinning threads take the CPU from the thread that has
work, and the quickstart trained several times slower. So the ``rnnkit`` command looks at the
machine first: when other processes keep at least half a core busy, it sets
``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep at once); otherwise libgomp keeps its default.
libgomp reads the variable once, when it is loaded, so this happens before ``import torch``; a
program that imports torch itself exports a policy before starting Python (README, Use a model in
your own code).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

WAIT_POLICY = "OMP_WAIT_POLICY"
BUSY_CORES = 0.5  # CPU used by other processes from which idle workers had better sleep
SAMPLE_SECONDS = 0.2


def choose_wait_policy(busy_cores: Callable[[], float | None] | None = None) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if other processes keep the CPUs busy; return what was set.

    Nothing is set when the user chose a policy, when torch is already loaded (its OpenMP runtime
    has read the environment: ``main`` called from Python, a test), or when the machine is quiet.
    ``busy_cores`` measures the other processes' load (:func:`cores_busy_elsewhere`); a machine
    whose load cannot be read counts as busy, the safe side.
    """
    if WAIT_POLICY in os.environ or "torch" in sys.modules:
        return None
    load = (busy_cores or cores_busy_elsewhere)()
    if load is not None and load < BUSY_CORES:
        return None
    os.environ[WAIT_POLICY] = "PASSIVE"
    return "PASSIVE"


def cores_busy_elsewhere(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores kept busy during ``seconds`` (this process sleeps meanwhile, so all by others).

    From ``/proc/stat`` on Linux; elsewhere the 1-minute load average; None if neither exists.
    """
    try:
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
    except OSError:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle + iowait
    return 0.0 if total <= 0 else (total - idle) / total * (os.cpu_count() or 1)


def _cpu_times() -> list[int]:
    """The machine's ``cpu`` line of ``/proc/stat``: user, nice, system, idle, iowait, ... (ticks)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    return [int(value) for value in fields[1:9]]
