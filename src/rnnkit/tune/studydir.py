"""The study folder: one place that names every file ``rnnkit tune`` writes.

::

    study.yaml          what the study is: base config, search space, objective, trial target
    study.db            Optuna's SQLite storage (every trial, its parameters and per-epoch scores)
    trials/<n>/         trial n's run folder, as ``rnnkit train`` writes it
    trials.csv, .md     the table of trials
    best.yaml           the best trial's config, ready for ``rnnkit train --config``
    importances.png, history.png

``study.yaml`` is written before the storage, so a folder with a study always says what it is,
and ``--resume`` can refuse a config or space that is not the study's.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Any

import yaml

from rnnkit.compare import flatten
from rnnkit.errors import RnnkitError
from rnnkit.io import atomic_write_text

NOT_COMPARED = ("train.progress", "train.num_threads", "train.loggers", "data.cache_dir")
"""Config keys a study may be resumed with different values of: they never change a trial's result."""


class StudyError(RnnkitError):
    """A study folder that cannot be used as asked (in use, another study's, empty on --resume)."""


class StudyDir:
    """Paths of one study folder, its record and its lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.record_file = self.path / "study.yaml"
        self.database = self.path / "study.db"
        self.trials = self.path / "trials"
        self.table_csv = self.path / "trials.csv"
        self.table_markdown = self.path / "trials.md"
        self.best_config = self.path / "best.yaml"
        self.importances_plot = self.path / "importances.png"
        self.history_plot = self.path / "history.png"
        self.lock_file = self.path / ".lock"
        self.ask_lock_file = self.path / ".ask.lock"
        self._lock: IO[str] | None = None

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.database.resolve()}"

    def trial_dir(self, number: int) -> Path:
        return self.trials / str(number)

    def holds_study(self) -> bool:
        return self.record_file.is_file()

    def read_record(self) -> dict[str, Any]:
        try:
            record = yaml.safe_load(self.record_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise StudyError(f"cannot read {self.record_file}: {' '.join(str(error).split())}") from None
        if not isinstance(record, dict) or not {"config", "space", "monitor"} <= set(record):
            raise StudyError(f"{self.record_file} is not an rnnkit study record; choose another --study-dir")
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.record_file, yaml.safe_dump(record, sort_keys=False))

    def lock(self) -> None:
        """Hold the study for this process (released when it exits, also on SIGKILL)."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = self.lock_file.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StudyError(
                f"the study in {self.path} is being run by another rnnkit tune; wait for it or stop it"
            ) from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def first_difference(
    ours: dict[str, Any], theirs: dict[str, Any], ignored: tuple[str, ...] = ()
) -> str | None:
    """The first dotted key whose value differs between two nested mappings, with both values."""
    mine, stored = flatten(ours), flatten(theirs)
    for key in dict.fromkeys([*mine, *stored]):
        if key not in ignored and mine.get(key) != stored.get(key):
            return f"{key} is {mine.get(key)!r} here but {stored.get(key)!r} in the study"
    return None
