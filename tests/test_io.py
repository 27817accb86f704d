"""Run-folder files are replaced whole or not at all."""

import errno
import json
import os
import stat
import threading

import pytest

from rnnkit import io as io_module
from rnnkit.io import atomic_write_bytes, atomic_write_json, atomic_write_text, exchange, finish_exchange


def test_atomic_write_creates_parent_folders_and_writes_the_content(tmp_path):
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"


def test_atomic_write_replaces_an_existing_file_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"accuracy": 0.5})
    atomic_write_json(target, {"accuracy": 0.75})
    assert json.loads(target.read_text()) == {"accuracy": 0.75}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_write_keeps_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_write_bytes(target, b"good checkpoint")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"half a checkpoint")
    assert target.read_bytes() == b"good checkpoint"
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_files_get_ordinary_permissions_not_the_private_mode_of_temporary_files(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "train: {}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def two_folders(tmp_path):
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(name)
    return tmp_path / "new", tmp_path / "old"


@pytest.mark.parametrize("kernel_exchange", [True, False], ids=["renameat2", "three renames"])
def test_exchange_swaps_two_folders(tmp_path, monkeypatch, kernel_exchange):
    if not kernel_exchange:
        monkeypatch.setattr(io_module, "_renameat2", lambda: None)
    new, old = two_folders(tmp_path)
    exchange(new, old)
    assert os.listdir(old) == ["new.txt"] and os.listdir(new) == ["old.txt"]
    assert sorted(os.listdir(tmp_path)) == ["new", "old"]


def test_an_interrupted_fallback_exchange_is_put_back(tmp_path):
    new, old = two_folders(tmp_path)
    os.replace(old, f"{old}.exchange")  # the first of the three renames, then a crash
    finish_exchange(old)
    assert os.listdir(old) == ["old.txt"] and os.listdir(new) == ["new.txt"]


def test_a_full_disk_names_the_file_being_written_not_its_temporary_copy(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed flush: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as error:
        atomic_write_json(tmp_path / "metrics.json", {"accuracy": 0.5})
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(tmp_path / "metrics.json"))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_an_atomic_write_to_a_named_pipe_writes_into_it_and_keeps_the_pipe(tmp_path):
    # Renaming a file over it would replace the pipe (or, for root, /dev/null itself).
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    atomic_write_bytes(pipe, b"rows")
    reader.join(timeout=30)
    assert received == [b"rows"] and stat.S_ISFIFO(pipe.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_an_atomic_write_to_a_folder_or_through_a_file_fails_before_writing(tmp_path):
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path, b"rows")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(NotADirectoryError) as error:
        atomic_write_bytes(tmp_path / "file" / "rows.csv", b"rows")
    assert error.value.filename == str(tmp_path / "file")
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_text() == "keep"
