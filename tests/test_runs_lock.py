"""One writer per run folder: a second one is refused with the holder's pid; a killed holder never
blocks anybody."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from test_cli import fails_with
from test_resume import EXTRA, PAUSE_MID_EPOCH, start_and_kill
from test_trainer import cli_args, tiny_settings, write_corpus

from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.runs.lock import lock_folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_a_second_lock_on_a_folder_is_refused_with_the_holders_pid(tmp_path):
    with lock_folder(tmp_path), pytest.raises(CheckpointError, match=f"in use by process {os.getpid()}"):
        lock_folder(tmp_path)
    lock_folder(tmp_path).release()  # free again once released


def test_training_into_a_folder_another_process_writes_exits_2_naming_it(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    run.mkdir()
    with lock_folder(run):
        args = ["train", "--run-dir", str(run), *cli_args(tiny_settings(corpus))]
        fails_with(capsys, args, f"in use by process {os.getpid()}")
    assert [p.name for p in run.iterdir()] == [".lock"]


def test_resuming_a_run_another_process_writes_exits_2_naming_it(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with lock_folder(run):
        fails_with(capsys, ["train", "--resume", str(run)], f"in use by process {os.getpid()}")


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    ready = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from rnnkit.runs.lock import lock_folder
            lock = lock_folder({str(tmp_path)!r})
            Path({str(ready)!r}).touch()
            time.sleep(600)
            """),
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(CheckpointError, match=f"process {holder.pid}"):
            lock_folder(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lock_folder(tmp_path).release()


@pytest.mark.slow
def test_while_a_training_writes_a_folder_a_second_one_and_a_resume_exit_2_naming_it(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    args = cli_args(tiny_settings(corpus, **EXTRA))

    def second_writers(pid: int) -> None:
        fails_with(capsys, ["train", "--run-dir", str(run), *args], f"in use by process {pid}")
        fails_with(capsys, ["train", "--run-dir", str(run), "--overwrite", *args], f"in use by process {pid}")
        fails_with(capsys, ["train", "--resume", str(run)], f"in use by process {pid}")

    start_and_kill(run, corpus, PAUSE_MID_EPOCH, tmp_path, while_paused=second_writers)
    assert main(["train", "-q", "--resume", str(run)]) == 0  # the killed writer's lock is gone with it
    assert (run / "metrics.json").exists()
