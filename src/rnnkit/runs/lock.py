"""One writer per run folder: an exclusive ``flock`` on the folder's ``.lock`` file.

``rnnkit train`` (new, ``--overwrite`` or ``--resume``) holds the lock for as long as it writes
the folder, so a second process asking for it is refused at once with the holder's pid instead of
mixing its files with the first one's. The kernel drops a ``flock`` when its process ends, however
it ends (``kill -9`` included), so a lock left behind never blocks anybody: the next process simply
gets it. Readers (``evaluate``, ``predict``) take no lock: every run file is replaced atomically.

Where ``fcntl`` does not exist (Windows), no lock is taken and the run says so in its log.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from rnnkit.errors import CheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLock:
    """Held locks (a run folder's, and its replacement's while one is swapped in); :meth:`release`
    (or process exit) gives them up."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    def adopt(self, other: RunLock) -> None:
        """Hold ``other``'s locks too, until this lock is released."""
        self._fds += other._fds
        other._fds = []

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the descriptor drops its flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike[str]) -> RunLock:
    """Take the folder's write lock or raise a one-line :class:`CheckpointError` naming the holder.

    The folder must exist. The lock file stays in the folder (deleting it would let two processes
    lock two different files); it holds the pid of the last process that took it.
    """
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover - not POSIX
        logger.warning("no file locking on this platform: do not run two trainings on %s at once", folder)
        return RunLock([])
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise CheckpointError(
            f"run folder {folder} is in use by {_holder(path)}; wait for it to finish or stop it "
            "(a killed process never leaves the folder locked), or choose another --run-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock([fd])


def _holder(path: Path) -> str:
    """``process 1234`` from the lock file; a holder that has not written its pid yet is unnamed."""
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return "another rnnkit process"
    return f"process {pid}"
