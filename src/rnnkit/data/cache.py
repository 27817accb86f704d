"""Where cached data lives and how cache keys are made.

Keys hash everything an artefact depends on, including the size and mtime of the input files, so
an edited file or a changed setting simply misses the cache instead of serving stale data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "RNNKIT_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``$RNNKIT_CACHE`` if set, else ``cache_dir`` (default ``~/.cache/rnnkit``)."""
    chosen = os.environ.get(ENV_VAR) or cache_dir or "~/.cache/rnnkit"
    return Path(chosen).expanduser()


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
