"""Atomic file writes, so that a crash never leaves a half-written file in a run folder.

Each write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the target: readers see either the old file or the new one, never a mix. :func:`exchange` does the
same for whole folders (a new run taking the place of an old one); :func:`exclusive_lock` makes a
check-then-write step one step across processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, a folder or a file (created if missing), for the length of
    a ``with`` block; no lock where ``fcntl`` does not exist (Windows)."""
    flags = os.O_RDONLY if os.path.isdir(path) else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops its flock


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` atomically when the block ends without error.

    For output written piece by piece (predictions streamed in chunks): a temporary file in the same
    folder, fsync'ed and renamed over ``path`` at the end; on any error it is removed and ``path``
    keeps what it had. A ``path`` that is a device or a named pipe has no contents to keep and is
    written directly.
    """
    target = Path(path)
    if target.is_dir():  # found now, not by the rename after all the writing
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    if target.exists() and not target.is_file():
        # /dev/null, a named pipe: written into, as a shell would; renaming over it would replace the device.
        with target.open("wb") as handle:
            yield handle
        return
    make_folders(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, target) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)  # mkstemp makes 0600; run files are ordinary files
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, tmp_name):
            raise _naming(error, target) from None  # a full disk names no file, or the temporary one
        raise
    _fsync_dir(target.parent)


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents; a file standing in the way is ``ENOTDIR``.

    ``Path.mkdir`` reports that file as ``FileExistsError``, which is also what a lost race to
    create a folder looks like; ``ENOTDIR`` names the actual problem.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), error.filename) from None


def _naming(error: OSError, target: Path) -> OSError:
    """The same error about ``target`` rather than the temporary file (or no file at all)."""
    if not error.errno:  # raised by hand, not by the system: keep it as it is
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(target))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file, fsync, rename, fsync of the folder)."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> None:
    """Swap two existing paths (folders) in one atomic step, then make it durable.

    Linux's ``renameat2(RENAME_EXCHANGE)``: at every instant each name holds one of the two
    folders, whatever happens to the process. Where the kernel or file system lacks it, three
    renames through a ``<second>.exchange`` name are used instead; a crash between them leaves
    that name behind, and :func:`finish_exchange` puts it back.
    """
    a, b = os.fsencode(first), os.fsencode(second)
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
            _fsync_dir(Path(second).parent)
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), os.fsdecode(a), None, os.fsdecode(b))
    aside = Path(f"{os.fsdecode(b)}.exchange")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)
    _fsync_dir(Path(second).parent)


def finish_exchange(second: str | os.PathLike[str]) -> None:
    """Put back ``second`` if a fallback :func:`exchange` was interrupted after its first rename."""
    aside = Path(f"{os.fsdecode(os.fspath(second))}.exchange")
    if aside.exists() and not Path(second).exists():
        os.replace(aside, second)


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function
