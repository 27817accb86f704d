"""The run folder: the one place that names every file a run holds and reads its setup back.

::

    config.yaml                 the resolved config (absolute data paths), reused by --resume
    vocab.json                  vocabulary + tokenizer settings
    labels.json                 class names, in label-id order
    checkpoints/best.safetensors      best weights by train.monitor (used by evaluate/predict)
    checkpoints/last.safetensors      resumable training state, and previous.safetensors before it
    history.csv                 per-epoch train/validation loss and accuracy, lr, epoch time
    metrics.json                test and validation metrics, best epoch, train time, data stats
    report.txt / report.json    per-class precision/recall/F1 on the test set
    curves.png / confusion_matrix.png
    tensorboard/                TensorBoard events, with train.loggers: [..., tensorboard]

A folder holding a run is never reused for a new one unless the user asks for ``--overwrite``.
Training writes these files; everything else reads a run through :func:`rnnkit.runs.open_run`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from rnnkit import distributed
from rnnkit.config import Config, load_config
from rnnkit.data import PreparedData, Vocabulary, prepare_data
from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_json, atomic_write_text
from rnnkit.runs.checkpoint import CheckpointStore


def default_run_dir(config_path: str | os.PathLike[str] | None) -> Path:
    """``runs/<config stem>-<YYYYmmdd-HHMMSS>`` under the current directory."""
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """Paths and readers of one run folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.vocab_file = self.path / "vocab.json"
        self.labels_file = self.path / "labels.json"
        self.history_file = self.path / "history.csv"
        self.metrics_file = self.path / "metrics.json"
        self.report_text_file = self.path / "report.txt"
        self.report_json_file = self.path / "report.json"
        self.curves_file = self.path / "curves.png"
        self.confusion_file = self.path / "confusion_matrix.png"
        self.tensorboard_dir = self.path / "tensorboard"
        self.checkpoints = CheckpointStore(self.path / "checkpoints")

    def holds_run(self) -> bool:
        marks = (self.config_file, self.vocab_file, self.labels_file, self.checkpoints.folder)
        return any(path.exists() for path in marks)

    def create(self, overwrite: bool = False) -> None:
        """Make an empty folder for a new run; refuse to replace a run or unrelated files."""
        if self.path.is_file():
            raise CheckpointError(f"run folder {self.path} is a file; choose another --run-dir")
        if self.path.exists() and any(self.path.iterdir()):
            if not self.holds_run():
                raise CheckpointError(
                    f"{self.path} is not empty and holds no rnnkit run; choose another --run-dir"
                )
            if not overwrite:
                raise CheckpointError(
                    f"run folder {self.path} already holds a run; continue it with "
                    f"'rnnkit train --resume {self.path}', choose another --run-dir, or pass --overwrite"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def require(self) -> None:
        if not self.config_file.is_file():
            raise CheckpointError(
                f"{self.path} is not an rnnkit run folder (no config.yaml); pass the folder that "
                "'rnnkit train' created, e.g. runs/lstm-20250101-120000"
            )

    def write_setup(self, cfg: Config, vocab: Vocabulary, label_names: list[str]) -> None:
        """What prediction needs besides the weights; config.yaml last, as it marks a resumable run."""
        vocab.save(self.vocab_file)
        atomic_write_json(self.labels_file, list(label_names))
        atomic_write_text(self.config_file, cfg.to_yaml())

    def load_config(self, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        self.require()
        return load_config(self.config_file, overrides)

    def load_vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab_file)

    def load_labels(self) -> list[str]:
        try:
            return list(json.loads(self.labels_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {self.labels_file}: {error}") from None

    def prepare_data(self, cfg: Config) -> PreparedData:
        """The run's data as training saw it, checked against the vocabulary saved with the run.

        Used to resume, to evaluate and to explain a split: if the data files or the cache changed
        since the run started, the ids would no longer mean the same words, so that is refused.
        """
        with distributed.main_process_first():  # rank 0 fills the cache, the others read it
            data = prepare_data(cfg)
        if self.vocab_file.exists() and data.vocab != self.load_vocab():
            raise CheckpointError(
                f"the data no longer gives the vocabulary saved in {self.vocab_file}: the data files or "
                "the cache changed since this run started; use the original data or start a new run"
            )
        return data
