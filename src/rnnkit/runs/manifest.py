"""``run.json``: the SHA-256 of every file that says how to read a run's weights.

The weights alone do not classify anything: ``config.yaml`` rebuilds the model, ``vocab.json``
turns text into the ids it was trained on, ``labels.json`` names its outputs. A hand edit, a
truncated copy or a file from another run would give a traceback at best and silently wrong
predictions at worst (a reordered vocabulary), so training records their digests in ``run.json``
and in every checkpoint it writes. Opening a run checks both: a file that no longer matches, or a
checkpoint saved with other files, is one line naming it. Runs written before manifests existed
open with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = "run.json"
FORMAT = "rnnkit-run/1"

MANIFEST_FILES = (
    "vocab.json",
    "labels.json",
    "config.yaml",
    "baseline.safetensors",
)
"""The run files covered by the manifest (those present when the setup is written): a new one,
written with the setup (``RunDir.install_setup``'s ``write_more``), is one more line here."""


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path) -> dict[str, str]:
    """Digest the metadata files present in ``folder`` into its ``run.json``; return the digests."""
    files = {name: file_digest(folder / name) for name in MANIFEST_FILES if (folder / name).exists()}
    atomic_write_json(folder / MANIFEST_NAME, {"format": FORMAT, "files": files})
    return files


def verify_manifest(folder: Path) -> dict[str, str] | None:
    """The digests of ``run.json`` once every file it names matches them; ``None`` (and a warning)
    for a run written before manifests existed. Any mismatch is a :class:`CheckpointError`."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        logger.warning(
            "%s has no %s (written by an older rnnkit): its config, vocabulary and labels cannot be "
            "checked against its weights",
            folder,
            MANIFEST_NAME,
        )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        valid = manifest["format"] == FORMAT and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise CheckpointError(
            f"{path} is damaged or not an rnnkit manifest; restore it from a backup or train a new run"
        )
    for name, digest in files.items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing; restore it from a backup or train a new run")
        if file_digest(file) != digest:
            raise CheckpointError(
                f"{file} was changed after the run was trained (its SHA-256 differs from {MANIFEST_NAME}'s); "
                "restore the original file or train a new run"
            )
    return dict(files)


def check_stamp(checkpoint_path: Path, stamp: object, files: dict[str, str]) -> None:
    """Refuse a checkpoint whose recorded metadata digests (``stamp``) are not the run's ``files``."""
    if stamp == files:
        return
    if not isinstance(stamp, dict):
        raise CheckpointError(
            f"{checkpoint_path} does not belong to this run (it records no digests of its "
            f"{', '.join(files)}); put the run's own checkpoint back or train a new run"
        )
    differing = sorted(name for name in set(files) | set(stamp) if files.get(name) != stamp.get(name))
    raise CheckpointError(
        f"{checkpoint_path} was saved with a different {' and '.join(differing)} than the one(s) in this "
        "run folder (copied from another run?); put the run's own files back or train a new run"
    )
