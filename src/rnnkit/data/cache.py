"""Where cached data lives and how cache keys are made.

Keys hash everything an artefact depends on, including the size and mtime of the input files, so
an edited file or a changed setting simply misses the cache instead of serving stale data. An
entry that cannot be read back whole (a truncated file, a disk that filled up) is built again,
never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from rnnkit.errors import DataError, RnnkitError

ENV_VAR = "RNNKIT_CACHE"

DAMAGED_ENTRY = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, RnnkitError)
"""What reading a damaged cache entry raises (a truncated ``.npz`` is a ``BadZipFile``, a truncated
JSON file a ``ValueError``): the entry is built again."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``$RNNKIT_CACHE`` if set, else ``cache_dir`` (default ``~/.cache/rnnkit``)."""
    chosen = os.environ.get(ENV_VAR) or cache_dir or "~/.cache/rnnkit"
    return Path(chosen).expanduser()


def usable_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`cache_root`, or one line saying why it cannot hold the cache.

    Checked before any data is read, so that a cache path that is a file, or a folder that cannot
    be written, is not a traceback after minutes of tokenising. Nothing is created here: the folder
    (or the nearest folder above it that exists) must be one this process may write into.
    """
    root = cache_root(cache_dir)
    existing = next((folder for folder in (root, *root.parents) if folder.exists()), root)
    if not existing.is_dir():
        reason = "it is a file" if existing == root else f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} cannot be written"
    else:
        return root
    chosen = os.environ.get(ENV_VAR)
    origin = f"{ENV_VAR}={chosen}" if chosen else f"data.cache_dir={cache_dir}"
    raise DataError(
        f"the cache folder {root} ({origin}) cannot be used: {reason}; set {ENV_VAR} to a folder you can "
        "write to"
    )


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def path_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Resolved path plus size and mtime of a file, or of every file below a folder.

    Cheap (stat only) yet changes whenever a file is edited, added or removed.
    """
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        entries = sorted(
            (str(p.relative_to(resolved)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in resolved.rglob("*")
            if p.is_file()
        )
        return {"path": str(resolved), "files": fingerprint(entries)}
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
