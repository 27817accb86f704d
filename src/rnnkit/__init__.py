"""rnnkit: text classification with recurrent networks in PyTorch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.config import Config
    from rnnkit.predict import EnsemblePredictor, Predictor

__version__ = "0.1.0"

__all__ = ["__version__", "fit", "load"]


def load(
    run_dir: str | os.PathLike[str], device: str = "cpu", *, quantize: bool = False, amp: bool = False
) -> Predictor | EnsemblePredictor:
    """The best model of a training run, ready to classify text: ``load(run).predict(["..."])``.

    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; ``quantize`` runs the model with int8
    weights on the CPU, ``amp`` its matrix products in bfloat16 on CPUs with native bfloat16 (or
    float16 on CUDA; both faster, see the README). The same as
    ``rnnkit.runs.open_run(run_dir, device, quantize=quantize).predictor(amp=amp)``, imported lazily so
    that ``import rnnkit`` (and ``rnnkit --help``) stays fast. An ensemble folder
    (``rnnkit ensemble``) gives its members' averaged probabilities through the same methods.
    """
    from rnnkit.runs import open_run
    from rnnkit.runs.ensemble import is_ensemble, read_ensemble

    if is_ensemble(run_dir):
        from rnnkit.predict import EnsemblePredictor

        spec = read_ensemble(run_dir)
        runs = [open_run(member, device, quantize=quantize) for member in spec.members]
        members = [run.predictor(amp=amp) for run in runs]
        if spec.baseline_temperature is not None:
            members.append(runs[0].baseline_predictor(spec.baseline_temperature))
        return EnsemblePredictor(members)
    return open_run(run_dir, device, quantize=quantize).predictor(amp=amp)


def fit(
    texts: Sequence[str],
    labels: Sequence[Any],
    config: str | os.PathLike[str] | Config | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Predictor:
    """Train on Python lists and return the trained model (what :func:`load` gives for its run):
    ``rnnkit.fit(texts, labels, "configs/gru.yaml", epochs=3).predict(["..."])``.

    See :func:`rnnkit.fitting.fit`.
    """
    from rnnkit.fitting import fit as fit_lists

    return fit_lists(texts, labels, config, run_dir, **overrides)
