"""One configuration trained into one run folder, whatever state a killed process left it in.

Shared by ``rnnkit tune`` (a trial) and ``scripts/study.py`` (a cell of the study): a finished run
is read back, an unfinished one is resumed from its last checkpoint (ending exactly as an
uninterrupted run would on CPU), and an absent or never-started one is trained from the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from rnnkit.config import Config
from rnnkit.runs import RunDir
from rnnkit.training.callbacks import Callback

CHATTY_LOGGERS = ("rnnkit.training", "rnnkit.data", "rnnkit.runtime", "rnnkit.models")


def run_or_resume(
    cfg: Config,
    run_dir: str | os.PathLike[str],
    callbacks: Sequence[Callback] = (),
    num_threads: int | None = None,
) -> dict[str, Any]:
    """``metrics.json`` of ``cfg`` trained into ``run_dir``: read, resumed or trained from scratch.

    ``num_threads`` overrides ``train.num_threads``, also for a run being resumed (threads change
    speed only), so a study continued with another ``--jobs`` does not oversubscribe the cores.
    """
    from rnnkit.training import experiment

    run = RunDir(run_dir)
    if run.metrics_file.is_file():
        return json.loads(run.metrics_file.read_text(encoding="utf-8"))
    if num_threads is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_threads=num_threads))
    if run.config_file.is_file():  # written last at setup: training had started
        overrides = [f"train.num_threads={cfg.train.num_threads}"]
        return experiment.resume(run.path, overrides, callbacks)
    # Nothing resumable: an empty folder, or one killed while writing its setup files.
    return experiment.train(cfg, run.path, overwrite=True, callbacks=callbacks)


@contextlib.contextmanager
def quiet_training(enabled: bool = True) -> Iterator[None]:
    """Silence the per-epoch and data logs of runs (warnings stay) while a study reports per run."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS] if enabled else []
    levels = [chatty.level for chatty in loggers]
    for chatty in loggers:
        chatty.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for chatty, level in zip(loggers, levels, strict=True):
            chatty.setLevel(level)
