"""The run folder: the one place that names every file a run holds and reads its setup back.

::

    config.yaml                 the resolved config (absolute data paths), reused by --resume
    vocab.json                  vocabulary + tokenizer settings
    labels.json                 class names, in label-id order
    baseline.safetensors        the TF-IDF linear baseline fitted on the same training split
    run.json                    SHA-256 of the files above (see rnnkit.runs.manifest)
    .lock                       held by the process writing the run (see rnnkit.runs.lock)
    thresholds.json             multi-label runs: each label's decision threshold, tuned on validation
    checkpoints/best.safetensors      best weights by train.monitor (used by evaluate/predict)
    checkpoints/last.safetensors      resumable training state, and previous.safetensors before it
    history.csv                 per-epoch train/validation loss and accuracy, lr, epoch time
    metrics.json                test and validation metrics, best epoch, train time, data stats
    report.txt / report.json    per-class precision/recall/F1 on the test set
    curves.png / confusion_matrix.png
    tensorboard/                TensorBoard events, with train.loggers: [..., tensorboard]

A folder holding a run is never reused for a new one unless the user asks for ``--overwrite``, and
even then the old run stays whole until the new one has its config, data and model ready: the new
setup is written into a hidden sibling folder and swapped in with one atomic exchange, so a crash
at any moment leaves either the old run or the new one. Training writes these files; everything
else reads a run through :func:`rnnkit.runs.open_run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from rnnkit import distributed
from rnnkit.config import Config, load_config
from rnnkit.data import PreparedData, Vocabulary, prepare_data
from rnnkit.data.pipeline import Documents
from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_json, atomic_write_text, exchange, finish_exchange, make_folders
from rnnkit.runs import manifest
from rnnkit.runs.checkpoint import CheckpointStore
from rnnkit.runs.lock import LOCK_NAME, RunLock, lock_folder

T = TypeVar("T")
_STAGING = ".rnnkit-new-"
"""``.<run name>.rnnkit-new-<pid>``: the sibling folder a new run's setup is written into."""


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
        self.manifest_file = self.path / manifest.MANIFEST_NAME
        self.thresholds_file = self.path / "thresholds.json"
        self.history_file = self.path / "history.csv"
        self.metrics_file = self.path / "metrics.json"
        self.report_text_file = self.path / "report.txt"
        self.report_json_file = self.path / "report.json"
        self.curves_file = self.path / "curves.png"
        self.confusion_file = self.path / "confusion_matrix.png"
        self.tensorboard_dir = self.path / "tensorboard"
        self.baseline_file = self.path / "baseline.safetensors"
        self.checkpoints = CheckpointStore(self.path / "checkpoints")
        self.lock: RunLock | None = None
        """Held while this process writes the run (:meth:`new_run`, :meth:`claim_existing`)."""

    def holds_run(self) -> bool:
        marks = (self.config_file, self.vocab_file, self.labels_file, self.checkpoints.folder)
        return any(path.exists() for path in marks)

    @contextlib.contextmanager
    def new_run(self, overwrite: bool = False) -> Iterator[None]:
        """Hold the folder (created if needed) for a new run while the block writes it.

        A run or unrelated files already in it are refused (a run is kept for ``overwrite``: it stays
        untouched until :meth:`install_setup` swaps the new one in). A folder this call created is
        removed again if the block fails before a run was installed in it.
        """
        created = not self.path.exists()
        with self._claim_new(overwrite):
            try:
                yield
            except BaseException:
                if created and not self.holds_run():
                    shutil.rmtree(self.path, ignore_errors=True)
                raise

    def _claim_new(self, overwrite: bool) -> RunLock:
        finish_exchange(self.path)
        if self.path.is_file():
            raise CheckpointError(f"run folder {self.path} is a file; choose another --run-dir")
        if self._holds_foreign_files():  # refused before a lock file is put among them
            raise CheckpointError(
                f"{self.path} is not empty and holds no rnnkit run; choose another --run-dir"
            )
        make_folders(self.path)
        lock = lock_folder(self.path)  # first, so that a run being written names its writer
        if self.holds_run() and not overwrite:
            lock.release()
            raise CheckpointError(
                f"run folder {self.path} already holds a run; continue it with "
                f"'rnnkit train --resume {self.path}', choose another --run-dir, or pass --overwrite"
            )
        for stale in self.path.parent.glob(f".{self.path.name}{_STAGING}*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-swap
        self.lock = lock
        return lock

    def claim_existing(self) -> RunLock:
        """Lock a run folder to continue writing it (``--resume``)."""
        self.require()
        self.lock = lock_folder(self.path)
        return self.lock

    def _holds_foreign_files(self) -> bool:
        """Files in the folder but no run: somebody else's folder."""
        if not self.path.is_dir() or self.holds_run():
            return False
        return any(p.name != LOCK_NAME for p in self.path.iterdir())

    def require(self) -> None:
        if not self.config_file.is_file():
            raise CheckpointError(
                f"{self.path} is not an rnnkit run folder (no config.yaml); pass the folder that "
                "'rnnkit train' created, e.g. runs/lstm-20250101-120000"
            )

    def install_setup(
        self,
        cfg: Config,
        vocab: Vocabulary,
        label_names: list[str],
        write_more: Callable[[RunDir], T] = lambda staged: None,
    ) -> T:
        """Write what prediction needs besides the weights, with its manifest, and swap it in.

        The files go to a locked sibling folder first, which then takes this folder's place in one
        atomic exchange; what was here before (an old run, with ``--overwrite``) is deleted after.
        ``write_more(staged)`` adds files of its own before the manifest is taken (the baseline);
        its result is returned. The new folder's lock joins :attr:`lock`, so the folder now in place
        stays locked too.
        """
        staging = RunDir(self.path.parent / f".{self.path.name}{_STAGING}{os.getpid()}")
        staging.path.mkdir()
        lock = lock_folder(staging.path)
        try:
            vocab.save(staging.vocab_file)
            atomic_write_json(staging.labels_file, list(label_names))
            atomic_write_text(staging.config_file, cfg.to_yaml())
            result = write_more(staging)
            self.checkpoints.run_files = manifest.write_manifest(staging.path)
            exchange(staging.path, self.path)
        except BaseException:
            lock.release()
            shutil.rmtree(staging.path, ignore_errors=True)
            raise
        if self.lock is not None:
            self.lock.adopt(lock)
        shutil.rmtree(staging.path, ignore_errors=True)  # now the old content
        return result

    def verify_files(self) -> None:
        """Check config, vocabulary and labels against ``run.json`` (one line naming a mismatch);
        from then on every checkpoint read must have been saved with these same files."""
        self.checkpoints.run_files = manifest.verify_manifest(self.path)

    def load_config(self, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        self.require()
        return load_config(self.config_file, overrides)

    def load_vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab_file)

    def load_labels(self) -> list[str]:
        try:
            labels = json.loads(self.labels_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {self.labels_file}: {error}") from None
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise CheckpointError(f"{self.labels_file} must hold a list of class names (strings)")
        return labels

    def write_thresholds(self, label_names: list[str], thresholds: np.ndarray) -> None:
        """A multi-label run's per-label decision thresholds, by label name."""
        atomic_write_json(
            self.thresholds_file,
            {
                "tuned_on": "validation",
                "thresholds": dict(zip(label_names, map(float, thresholds), strict=True)),
            },
        )

    def load_thresholds(self, label_names: list[str]) -> np.ndarray | None:
        """The saved thresholds in label order; ``None`` when the run stopped before tuning them."""
        if not self.thresholds_file.exists():
            return None
        try:
            saved = json.loads(self.thresholds_file.read_text(encoding="utf-8"))["thresholds"]
            return np.array([float(saved[name]) for name in label_names], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"cannot read {self.thresholds_file}: {error!r}") from None

    def prepare_data(self, cfg: Config, documents: Documents | None = None) -> PreparedData:
        """The run's data as training saw it, checked against the vocabulary saved with the run.

        Used to resume, to evaluate and to explain a split: if the data files or the cache changed
        since the run started, the ids would no longer mean the same words, so that is refused.
        """
        with distributed.main_process_first():  # rank 0 fills the cache, the others read it
            data = prepare_data(cfg, documents)
        if self.vocab_file.exists() and data.vocab != self.load_vocab():
            raise CheckpointError(
                f"the data no longer gives the vocabulary saved in {self.vocab_file}: the data files or "
                "the cache changed since this run started; use the original data or start a new run"
            )
        return data
