"""docs/architecture.md's import rule: what reads a run never imports training (or tune)."""

from __future__ import annotations

import subprocess
import sys

READERS = ("rnnkit.runs", "rnnkit.predict", "rnnkit.inference", "rnnkit.explain", "rnnkit.compare")
CHECK = """
import importlib, sys
for reader in sys.argv[1:]:
    importlib.import_module(reader)
    print(reader, sorted(m for m in sys.modules if m.startswith(("rnnkit.training", "rnnkit.tune"))))
"""


def test_readers_of_a_run_never_import_training():
    done = subprocess.run([sys.executable, "-c", CHECK, *READERS], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:-1] == [f"{reader} []" for reader in READERS], done.stdout
