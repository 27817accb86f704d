"""User-facing errors.

Anything a user can get wrong (a config, a path, a file's contents) raises one of these with a single
line that says what is wrong and how to fix it. The CLI prints that line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class RnnkitError(Exception):
    """A problem the user can fix; the message is shown as is, on one line."""

    exit_code = 2


class ConfigError(RnnkitError, ValueError):
    """The YAML config or a ``--set`` override is invalid (in Python also a ``ValueError``)."""


class DataError(RnnkitError, ValueError):
    """A data set, vector file or text input cannot be used (in Python also a ``ValueError``)."""


class DataTypeError(DataError, TypeError):
    """Python data of the wrong type, e.g. a text that is not a string (also a ``TypeError``)."""


class CheckpointError(RnnkitError):
    """A run folder or checkpoint is missing, corrupted, unsafe or already in use."""


class EnvironmentFault(RnnkitError):
    """The machine refused a file operation: a full disk, a read-only or forbidden folder."""


_NO_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file grew too large for its file system",
}
_NOT_WRITABLE = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def environment_fault(error: OSError, then: str = "run the command again") -> EnvironmentFault | None:
    """The one-line error for an ``OSError`` the machine's state caused, or None for any other.

    A full disk or a read-only folder is not a bug in rnnkit, and every run file is written
    atomically, so nothing already written is damaged: the user frees space or picks another
    folder and does ``then``.
    A path with a name longer than the file system allows is the user's to shorten, and one that
    names a folder where a file belongs, or passes through a file, is the user's to correct.
    """
    where = f" ({shorten(str(error.filename))})" if error.filename else ""
    if error.errno == errno.ENAMETOOLONG:
        return EnvironmentFault(f"a name in this path is too long for the file system{where}; shorten it")
    if error.errno == errno.EISDIR:
        return EnvironmentFault(f"this path is a folder, not a file{where}; give a file name")
    if error.errno == errno.ENOTDIR:
        return EnvironmentFault(f"a file stands where this path needs a folder{where}; choose another path")
    if error.errno in _NO_SPACE:
        return EnvironmentFault(f"{_NO_SPACE[error.errno]}{where}; free some space, then {then}")
    if error.errno in _NOT_WRITABLE:
        return EnvironmentFault(
            f"{_NOT_WRITABLE[error.errno]}{where}; choose a folder you can write to (--run-dir, --output, "
            f"RNNKIT_CACHE) or fix its permissions, then {then}"
        )
    return None


def shorten(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a one-line message: a user's value or path can be as
    long as the shell or the file system allows."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
