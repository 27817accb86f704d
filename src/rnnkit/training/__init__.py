"""Training: ``train``, ``resume`` and ``evaluate`` a run, and the ``Callback`` hooks around the loop.

``from rnnkit.training import train, Callback`` is the public entry; the names are imported on
first use so that ``import rnnkit`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "rnnkit.training.experiment",
    "resume": "rnnkit.training.experiment",
    "evaluate": "rnnkit.training.experiment",
    "Callback": "rnnkit.training.callbacks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rnnkit.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
