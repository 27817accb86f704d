"""How torch's OpenMP threads wait for work, chosen before torch (and its OpenMP runtime) loads.

GNU OpenMP (libgomp, which the Linux torch wheels bundle) lets an idle worker thread spin for
300,000 iterations before it sleeps, and between two parallel regions of a training step there is
rarely time to reach the sleep. With as many threads as cores and one other busy process, the
spinning threads take the CPU from the thread that has work: the quickstart trained several times
slower (see README, Performance). ``OMP_WAIT_POLICY=PASSIVE`` makes idle workers sleep at once.
libgomp reads the variable once, when it is loaded, so it has to be in the environment before
``import torch``: the command line sets it first thing; a program that imports torch itself
exports it before starting Python (README, Use a model in your own code).
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy or torch is already loaded.

    Returns whether it was set. Once torch is imported its OpenMP runtime has read the environment
    and the variable would change nothing here, so a caller that imported torch (``main`` called
    from Python, a test) keeps its environment as it was.
    """
    if WAIT_POLICY in os.environ or "torch" in sys.modules:
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True
