"""Hooks around the training loop: progress bars, early stopping, the best checkpoint, history.

Each callback does one job and keeps its own state; :meth:`Callback.state_dict` is saved in every
checkpoint under the callback's :attr:`~Callback.state_key`, so a resumed run continues with the
same patience counter and the same best score.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from rnnkit import distributed
from rnnkit.io import atomic_write_text

if TYPE_CHECKING:
    from rnnkit.inference import Predictions
    from rnnkit.training.trainer import Trainer

logger = logging.getLogger(__name__)


class Callback:
    """Base class: override the hooks you need. ``record`` is the epoch's history row."""

    @property
    def state_key(self) -> str:
        """The name this callback's state is saved under in a checkpoint: its class name.

        Two callbacks of one class in one run need different keys (as in PyTorch Lightning):
        override this to include what tells them apart, as :class:`EarlyStopping` does.
        """
        return type(self).__qualname__

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once, also when a run resumes."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Called before the first (or, on resume, the next) batch of an epoch."""

    def on_step_end(self, trainer: Trainer) -> None:
        """Called after each optimizer step."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after validation, before the epoch's checkpoint is written."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called when training stops (last epoch, early stop); not on errors."""

    def on_test_end(self, trainer: Trainer, metrics: dict[str, Any], test: Predictions) -> None:
        """Called once the best weights are scored: ``metrics`` is what ``metrics.json`` will hold,
        ``test`` the per-example test outputs (labels, probabilities, losses)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def is_improvement(monitor: str, value: float, best: float | None) -> bool:
    """Strictly better than ``best`` (lower loss, higher accuracy/F1); NaN never improves."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (0 = never stop early)."""

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor = monitor
        self.patience = patience
        self.best: float | None = None
        self.wait = 0

    @property
    def state_key(self) -> str:
        """One early stopping per monitored value: ``EarlyStopping[val_loss]``."""
        return f"{type(self).__qualname__}[{self.monitor}]"

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = record[self.monitor]
        if is_improvement(self.monitor, value, self.best):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        epochs_left = record["epoch"] < trainer.cfg.epochs  # after the last epoch there is nothing to stop
        if self.patience and self.wait >= self.patience and epochs_left:
            trainer.should_stop = True
            logger.info(
                "early stopping: %s has not improved on %.4f for %d epochs",
                self.monitor,
                self.best,
                self.wait,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]


class BestCheckpoint(Callback):
    """Save the model weights whenever ``monitor`` improves; evaluation and prediction use them."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = record[self.monitor]
        if is_improvement(self.monitor, value, self.best):
            self.best, self.best_epoch = value, record["epoch"]
            trainer.save_best(record)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class HistoryCSV(Callback):
    """Rewrite ``history.csv`` after every epoch, so it can be watched while training runs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not distributed.is_main_process():
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(record), lineterminator="\n")
        writer.writeheader()
        writer.writerows(trainer.history)
        atomic_write_text(self.path, buffer.getvalue())


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running training loss and accuracy (main process only)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.batches_per_epoch,
            initial=trainer.batch_in_epoch,
            desc=f"epoch {trainer.epoch + 1}/{trainer.cfg.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not distributed.is_main_process(),
        )

    def on_step_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.update(1)
            running = trainer.running
            self.bar.set_postfix(loss=f"{running.loss:.4f}", acc=f"{running.accuracy:.3f}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.close()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
