"""rnnkit: text classification with recurrent networks in PyTorch."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnkit.predict import Predictor

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run_dir: str | os.PathLike[str], device: str = "cpu") -> Predictor:
    """The best model of a training run, ready to classify text: ``load(run).predict(["..."])``.

    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``. The same as
    ``rnnkit.runs.open_run(run_dir, device).predictor()``, imported lazily so that ``import rnnkit``
    (and ``rnnkit --help``) stays fast.
    """
    from rnnkit.runs import open_run

    return open_run(run_dir, device).predictor()
