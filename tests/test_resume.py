"""Crash and resume: a run killed with SIGKILL at any point ends exactly like an uninterrupted one.

The training subprocess is made to pause at a precise moment (mid-epoch, or halfway through writing
a checkpoint) and is then killed from outside with SIGKILL, so nothing in it gets to clean up.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_trainer import cli_args, tiny_settings, write_corpus

from rnnkit.cli import main
from rnnkit.config import load_config
from rnnkit.training import experiment

EXTRA = {"train.epochs": 3, "train.checkpoint_every": 3, "model.dropout": 0.0}

PAUSE_MID_EPOCH = """
    from rnnkit.training.trainer import Trainer
    original = Trainer.train_step
    def train_step(self, batch):
        if self.global_step == 10:  # epoch 2, after the step checkpoint at step 9
            pause()
        return original(self, batch)
    Trainer.train_step = train_step
"""

PAUSE_IN_CHECKPOINT_WRITE = """
    from rnnkit.runs import checkpoint
    writes = []
    def half_write(path, data):
        writes.append(path)
        if len(writes) == 4:  # last.* at the end of epoch 1 (after best.*): half written, then killed
            with open(path.parent / f".{path.name}.killed.tmp", "wb") as handle:
                handle.write(data[: len(data) // 2])
            pause()
        real_write(path, data)
    real_write = checkpoint.atomic_write_bytes
    checkpoint.atomic_write_bytes = half_write
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.csv")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        experiment.train(load_config(overrides=tiny_settings(corpus, **EXTRA)), root / "run")
    return root / "run"


def start_and_kill(
    run_dir: Path,
    corpus: Path,
    patch: str,
    tmp_path: Path,
    while_paused: Callable[[int], None] = lambda pid: None,
) -> None:
    """Train in a subprocess until ``patch`` calls ``pause()``, call ``while_paused(its pid)``, then
    SIGKILL it."""
    ready = tmp_path / "paused"
    script = tmp_path / "train_and_pause.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "def pause():\n"
        f"    Path({str(ready)!r}).touch()\n"
        "    time.sleep(600)\n"
        + textwrap.dedent(patch)
        + "from rnnkit.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    args = ["train", "-q", "--run-dir", str(run_dir), *cli_args(tiny_settings(corpus, **EXTRA))]
    process = subprocess.Popen([sys.executable, str(script), *args], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "training never reached the pause"
            time.sleep(0.05)
        while_paused(process.pid)
    finally:
        process.kill()  # SIGKILL
        process.wait()
    assert process.returncode == -9
    assert not (run_dir / "metrics.json").exists()


def outcome(run_dir: Path) -> tuple[dict, list[dict]]:
    """Metrics and history without wall-clock times, which legitimately differ."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "history.csv").open() as handle:
        history = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]
    return {split: metrics[split] for split in ("test", "validation")} | {
        "best": metrics["best_epoch"]
    }, history


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_exactly_the_uninterrupted_result(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    start_and_kill(run_dir, corpus, PAUSE_MID_EPOCH, tmp_path)
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    assert outcome(run_dir) == outcome(uninterrupted)


@pytest.mark.slow
def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    start_and_kill(run_dir, corpus, PAUSE_IN_CHECKPOINT_WRITE, tmp_path)
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    assert outcome(run_dir) == outcome(uninterrupted)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    corpus, uninterrupted, tmp_path, caplog
):
    run_dir = tmp_path / "run"
    start_and_kill(run_dir, corpus, PAUSE_MID_EPOCH, tmp_path)
    last = run_dir / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    assert "truncated, corrupted" in caplog.text
    assert (run_dir / "checkpoints" / "last.safetensors.corrupt").exists()
    assert outcome(run_dir) == outcome(uninterrupted)


@pytest.mark.slow
def test_resuming_a_run_whose_checkpoints_are_all_damaged_is_refused(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    start_and_kill(run_dir, corpus, PAUSE_MID_EPOCH, tmp_path)
    for name in ("last", "previous"):
        (run_dir / "checkpoints" / f"{name}.safetensors").write_bytes(b"\0" * 64)
    assert main(["train", "-q", "--resume", str(run_dir)]) == 2
    assert "every checkpoint" in capsys.readouterr().err


def test_resuming_cannot_change_settings_that_define_the_run(uninterrupted, capsys):
    assert main(["train", "--resume", str(uninterrupted), "--set", "train.lr=0.5"]) == 2
    assert "cannot change a run being resumed" in capsys.readouterr().err


def test_resuming_a_finished_run_reproduces_its_metrics(uninterrupted):
    before = outcome(uninterrupted)
    assert main(["train", "-q", "--resume", str(uninterrupted)]) == 0
    assert outcome(uninterrupted) == before
