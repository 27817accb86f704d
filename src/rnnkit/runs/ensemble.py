"""An ensemble folder: several finished runs used as one classifier (``rnnkit ensemble``).

The folder holds ``ensemble.json`` (the member runs' absolute paths and their shared class names)
beside the ensemble's ``metrics.json`` and ``report.txt``; the members stay where they are and are
opened through :func:`rnnkit.runs.open_run` like any run. The folder is written beside its place
and moved in whole, so a crash never leaves half an ensemble (or half of the one it replaces).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_json, atomic_write_text, exchange, finish_exchange, make_folders
from rnnkit.runs.folder import RunDir

ENSEMBLE_NAME = "ensemble.json"


@dataclass(frozen=True)
class EnsembleSpec:
    """What an ensemble is made of: member run folders, in order, and their class names; with
    ``baseline_temperature``, the first member's TF-IDF baseline is one more member (its scores'
    softmax at that scale)."""

    members: list[Path]
    label_names: list[str]
    baseline_temperature: float | None = None


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / ENSEMBLE_NAME).is_file()


def read_ensemble(path: str | os.PathLike[str]) -> EnsembleSpec:
    """The ensemble in ``path``; a damaged ``ensemble.json`` or a missing member is one line."""
    file = Path(path) / ENSEMBLE_NAME
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        temperature = raw.get("baseline_temperature")
        spec = EnsembleSpec(
            [Path(p) for p in raw["members"]],
            [str(n) for n in raw["label_names"]],
            None if temperature is None else float(temperature),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{file} is not a readable ensemble ({error}); build it again") from None
    for member in spec.members:
        if not member.is_dir():
            raise CheckpointError(f"{file} names the run {member}, which no longer exists; build it again")
    return spec


def check_target(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse a ``--run-dir`` the ensemble may not take: a file, a folder of other files (replacing
    it would delete them), or a run or ensemble without ``overwrite``. Cheap: checked before the
    members are scored, and again when the folder is written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"--run-dir {target} is a file; choose a folder for the ensemble")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (is_ensemble(target) or RunDir(target).holds_run()):
        raise CheckpointError(
            f"--run-dir {target} is not empty and holds no rnnkit run or ensemble; choose another folder"
        )
    if not overwrite:
        raise CheckpointError(f"{target} already exists; choose another --run-dir or pass --overwrite")


def write_ensemble(
    path: str | os.PathLike[str],
    spec: EnsembleSpec,
    metrics: dict[str, Any],
    report: str,
    *,
    overwrite: bool = False,
) -> None:
    """Write the ensemble folder at ``path`` in one move; an existing folder only with ``overwrite``."""
    target = Path(path)
    finish_exchange(target)
    check_target(target, overwrite)
    staging = target.parent / f".{target.name}.ensemble-{os.getpid()}"
    make_folders(target.parent)
    staging.mkdir()
    try:
        members = [str(member.absolute()) for member in spec.members]
        atomic_write_json(
            staging / ENSEMBLE_NAME,
            {
                "members": members,
                "label_names": spec.label_names,
                "baseline_temperature": spec.baseline_temperature,
            },
        )
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_text(staging / "report.txt", report)
        if target.exists():
            exchange(staging, target)  # the old folder is now at ``staging``
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
