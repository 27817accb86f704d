"""Live logs of a run, chosen by ``train.loggers``: ``csv`` (``history.csv``) and ``tensorboard``.

Loggers are callbacks. TensorBoard is an optional extra: when the package is missing the run says
so in one line and keeps logging to ``history.csv``, so a missing extra never costs a run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit import distributed
from rnnkit.config import Config
from rnnkit.figures import figure_pixels
from rnnkit.inference import Predictions
from rnnkit.tasks import MULTILABEL
from rnnkit.training.callbacks import Callback, HistoryCSV
from rnnkit.training.metrics import confusion
from rnnkit.training.plots import confusion_figure

if TYPE_CHECKING:
    from rnnkit.training.trainer import Trainer

logger = logging.getLogger(__name__)

MISSING_TENSORBOARD = (
    "train.loggers: tensorboard needs the tensorboard package (pip install 'rnnkit[tensorboard]'); "
    "logging to history.csv only"
)


def build_loggers(
    cfg: Config,
    history_file: str | os.PathLike[str],
    tensorboard_dir: str | os.PathLike[str],
    label_names: Sequence[str],
) -> list[Callback]:
    """The callbacks that ``cfg.train.loggers`` asks for: ``history.csv`` and/or TensorBoard events."""
    wanted = list(dict.fromkeys(cfg.train.loggers))
    if "tensorboard" in wanted and not tensorboard_available():
        logger.warning(MISSING_TENSORBOARD)
        wanted = ["csv" if name == "tensorboard" else name for name in wanted]
    loggers: list[Callback] = []
    for name in dict.fromkeys(wanted):
        if name == "csv":
            loggers.append(HistoryCSV(history_file))
        else:
            loggers.append(TensorBoardLogger(tensorboard_dir, cfg, label_names))
    return loggers


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (imports the tensorboard package)
    except ImportError:
        return False
    return True


def flat_config(cfg: Config) -> dict[str, bool | int | float | str]:
    """``section.key`` -> value, as TensorBoard's hparams accept them (lists and None as text)."""
    flat: dict[str, bool | int | float | str] = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


class TensorBoardLogger(Callback):
    """Scalars per step (loss, accuracy, learning rate) and per epoch (every ``history.csv`` column),
    then the config as hparams with the test scores, and the test confusion matrix as an image.

    Every scalar is logged at the global step, so a resumed run drops what its killed predecessor
    wrote after the checkpoint (``purge_step``) instead of drawing it twice.
    """

    def __init__(self, log_dir: str | os.PathLike[str], cfg: Config, label_names: Sequence[str]) -> None:
        self.log_dir = Path(log_dir)
        self.hparams = flat_config(cfg)
        self.label_names = list(label_names)
        self.writer: Any = None
        self._seen = (0.0, 0, 0)  # running loss sum, correct, count at the previous step

    def on_fit_start(self, trainer: Trainer) -> None:
        if not distributed.is_main_process():
            return
        from torch.utils.tensorboard import SummaryWriter

        purge = trainer.global_step if trainer.global_step > 0 else None
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge, flush_secs=10)

    def on_epoch_start(self, trainer: Trainer) -> None:
        running = trainer.running
        self._seen = (running.loss_sum, running.correct, running.count)

    def on_step_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        running, (loss_sum, correct, count) = trainer.running, self._seen
        examples = running.count - count
        if examples > 0:
            step = trainer.global_step
            self.writer.add_scalar("step/train_loss", (running.loss_sum - loss_sum) / examples, step)
            self.writer.add_scalar("step/train_accuracy", (running.correct - correct) / examples, step)
            self.writer.add_scalar("step/lr", trainer.optimizer.param_groups[0]["lr"], step)
        self._seen = (running.loss_sum, running.correct, running.count)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            self.writer.add_scalar(f"epoch/{key}", value, trainer.global_step)
        self.writer.flush()

    def on_test_end(self, trainer: Trainer, metrics: dict[str, Any], test: Predictions) -> None:
        if self.writer is None:
            return
        scores = {
            f"hparam/{split}_{name}": metrics[split][name]
            for split in ("test", "validation")
            if metrics[split] is not None  # no test split when data.test_size is 0
            for name in ("accuracy", "macro_f1", "loss")
        }
        self.writer.add_hparams(self.hparams, scores, run_name=".", global_step=trainer.global_step)
        if len(test.labels) and test.task != MULTILABEL:  # label sets have no confusion matrix
            figure = confusion_figure(confusion(test, len(self.label_names)), self.label_names)
            self.writer.add_image(
                "test/confusion_matrix", figure_pixels(figure), trainer.global_step, dataformats="HWC"
            )
        self.close()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
