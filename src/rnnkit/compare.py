"""``rnnkit compare``: runs side by side, from what every run folder holds.

A run is any folder with a ``config.yaml`` (``metrics.json`` and ``history.csv`` when it has them);
a folder that is not a run, such as a tune study or a folder of runs, stands for the runs below it.
The table shows the config keys that differ between the runs, so the reason two runs differ is on
the same line as the difference in their scores.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit.errors import RnnkitError
from rnnkit.figures import save_png
from rnnkit.runs import RunDir

SKIPPED_FOLDERS = {"checkpoints", "tensorboard"}  # inside a run: never a run themselves
NOT_COMPARED = {"train.progress", "train.loggers"}
"""Config keys that change what a run shows, never what it learns."""
SCORES = (
    ("test_accuracy", "test", "accuracy"),
    ("test_macro_f1", "test", "macro_f1"),
    ("val_accuracy", "validation", "accuracy"),
    ("val_macro_f1", "validation", "macro_f1"),
)


class CompareError(RnnkitError):
    """A path given to ``rnnkit compare`` is not a run and holds none."""


@dataclass
class RunRecord:
    """What compare reads from one run folder; ``metrics`` is None while the run is unfinished."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    history: list[dict[str, float]] = field(default_factory=list)
    name: str = ""

    def score(self, split: str, metric: str) -> float | None:
        return (self.metrics or {}).get(split, {}).get(metric)

    @property
    def baseline_accuracy(self) -> float | None:
        """Test accuracy of the TF-IDF baseline trained beside the run, when it has one."""
        return (self.metrics or {}).get("baseline", {}).get("test", {}).get("accuracy")


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Each path as a run folder, or the run folders below it in natural order (trials/2 < trials/10)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise CompareError(f"{path} does not exist; give run folders, a tune study or a folder of runs")
        if RunDir(path).config_file.is_file():
            runs = [path]
        else:
            runs = sorted(_runs_below(path), key=_natural_key)
            if not runs:
                raise CompareError(
                    f"{path} holds no rnnkit run (no config.yaml in it or below it); "
                    "give folders written by 'rnnkit train' or 'rnnkit tune'"
                )
        found += [run for run in runs if run.resolve() not in {seen.resolve() for seen in found}]
    return found


def load_runs(paths: Iterable[str | os.PathLike[str]]) -> list[RunRecord]:
    """Every run of ``paths``, named by its path below the runs' common folder."""
    records = [load_run(path) for path in find_runs(paths)]
    if len(records) > 1:
        common = Path(os.path.commonpath([record.path.resolve() for record in records]))
        for record in records:
            record.name = record.path.resolve().relative_to(common).as_posix()
    return records


def load_run(path: Path) -> RunRecord:
    run = RunDir(path)
    try:
        config = yaml.safe_load(run.config_file.read_text(encoding="utf-8")) or {}
        found = run.metrics_file.is_file()
        metrics = json.loads(run.metrics_file.read_text(encoding="utf-8")) if found else None
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise CompareError(f"cannot read the run in {path}: {' '.join(str(error).split())}") from None
    return RunRecord(path, flatten(config), metrics, _read_history(run.history_file), path.name)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"options": {"width": 8}}}`` -> ``{"model.options.width": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differing_keys(records: Sequence[RunRecord]) -> list[str]:
    """Config keys whose values are not the same in every run, in config order."""
    keys = [key for record in records for key in record.config if key not in NOT_COMPARED]
    keys = list(dict.fromkeys(keys))
    return [key for key in keys if len({repr(record.config.get(key)) for record in records}) > 1]


def table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows: run, differing keys, scores, (baseline), parameters, train time, epochs."""
    keys = differing_keys(records)
    with_baseline = any(record.baseline_accuracy is not None for record in records)
    headers = ["run", *keys, *(name for name, _, _ in SCORES)]
    headers += ["baseline_test_accuracy"] if with_baseline else []
    headers += ["parameters", "train_time_s", "epochs", "best_epoch"]
    rows = []
    for record in records:
        metrics = record.metrics or {}
        row = [record.name, *(record.config.get(key) for key in keys)]
        row += [record.score(split, metric) for _, split, metric in SCORES]
        row += [record.baseline_accuracy] if with_baseline else []
        epochs = metrics.get("epochs_trained", len(record.history) or None)
        row += [metrics.get("num_parameters"), metrics.get("train_time_s"), epochs, metrics.get("best_epoch")]
        rows.append(row)
    return headers, rows


def plot_curves(records: Sequence[RunRecord], path: str | os.PathLike[str]) -> None:
    """Validation loss, accuracy and macro-F1 per epoch, one line per run, in one PNG."""
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    panels = figure.subplots(1, 3)
    for record in records:
        if not record.history:
            continue
        epochs = [row["epoch"] for row in record.history]
        for axes, metric in zip(panels, ("val_loss", "val_accuracy", "val_macro_f1"), strict=True):
            axes.plot(epochs, [row[metric] for row in record.history], marker=".", label=record.name)
    for axes, metric in zip(panels, ("val_loss", "val_accuracy", "val_macro_f1"), strict=True):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(metric.replace("_", " "))
        axes.grid(alpha=0.3)
    drawn = sum(1 for record in records if record.history)
    if drawn:
        panels[-1].legend(fontsize=7 if drawn > 8 else 9, loc="center left", bbox_to_anchor=(1.02, 0.5))
    save_png(figure, path)


def _runs_below(folder: Path) -> list[Path]:
    runs = []
    for root, dirs, files in os.walk(folder):
        if RunDir(root).config_file.name in files:
            runs.append(Path(root))
            dirs.clear()  # runs do not nest
        else:
            dirs[:] = [name for name in dirs if not name.startswith(".") and name not in SKIPPED_FOLDERS]
    return runs


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    except (OSError, ValueError):
        return []  # a history being rewritten: the table still has the run
