"""The run folder: ``--overwrite`` never loses the old run before the new one is ready.

The new run's setup is written beside the old run and swapped in with one atomic exchange once its
config, data and model are ready; until then the old run is untouched, whatever happens (a bad
setting, Ctrl-C, ``kill -9``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli import fails_with
from test_trainer import cli_args, tiny_settings

from rnnkit.cli import main
from rnnkit.config import load_config


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def old_run(finished_run, tmp_path) -> Path:
    """A copy of a finished run at ``runs/v``, to be overwritten."""
    copy = tmp_path / "runs" / "v"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run (but its lock file), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name != run.name)


def new_settings(finished_run: Path, **extra: object) -> list[str]:
    """The settings of a new run on the finished run's corpus, with a different model width."""
    return cli_args(tiny_settings(finished_run.parent / "corpus.csv", **{"model.hidden_size": 6, **extra}))


def test_overwrite_with_a_typo_in_the_data_path_keeps_the_old_run(old_run, tmp_path, capsys):
    before = snapshot(old_run)
    typo = tmp_path / "typo.csv"
    argv = ["train", "--run-dir", str(old_run), "--overwrite"]
    fails_with(capsys, [*argv, "--set", "data.dataset=csv", "--set", f"data.path={typo}"], str(typo))
    assert snapshot(old_run) == before
    assert leftovers(old_run) == []


def test_overwrite_with_bad_model_options_keeps_the_old_run(old_run, finished_run, capsys):
    before = snapshot(old_run)
    argv = ["train", "--run-dir", str(old_run), "--overwrite", *new_settings(finished_run)]
    fails_with(capsys, [*argv, "--set", "model.options={widht: 3}"], "model.options")
    assert snapshot(old_run) == before
    assert leftovers(old_run) == []


def test_an_overwrite_interrupted_while_loading_data_keeps_the_old_run(old_run, finished_run, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("rnnkit.training.experiment.prepare_data", interrupted)
    before = snapshot(old_run)
    argv = ["train", "-q", "--run-dir", str(old_run), "--overwrite", *new_settings(finished_run)]
    assert main(argv) == 130
    assert snapshot(old_run) == before


def test_overwrite_puts_the_new_run_in_place_and_removes_the_old_one(old_run, finished_run):
    (old_run / "stale.txt").write_text("old")
    argv = ["train", "-q", "--run-dir", str(old_run), "--overwrite", *new_settings(finished_run)]
    assert main(argv) == 0
    assert load_config(old_run / "config.yaml").model.hidden_size == 6
    assert (old_run / "metrics.json").exists() and not (old_run / "stale.txt").exists()
    assert leftovers(old_run) == []


PAUSES = {
    # The moments of an overwrite, in order: (module, attribute, pause before or after calling it).
    "loading data": ("rnnkit.data.pipeline", "_load_documents", "before"),
    "setup written, before the swap": ("rnnkit.runs.folder", "exchange", "before"),
    "swapped, before the old run is deleted": ("rnnkit.runs.folder", "exchange", "after"),
    "training": ("rnnkit.training.trainer", "Trainer.train_step", "before"),
}
EXPECTED = {
    "loading data": "old",
    "setup written, before the swap": "old",
    "swapped, before the old run is deleted": "new",
    "training": "new",
}


def overwrite_and_kill(run: Path, finished_run: Path, moment: str, tmp_path: Path) -> None:
    """``rnnkit train --overwrite`` in a subprocess, SIGKILLed while it sleeps at ``moment``."""
    module, attribute, when = PAUSES[moment]
    owner_path, _, name = attribute.rpartition(".")
    ready = tmp_path / "paused"
    script = tmp_path / "overwrite_and_pause.py"
    script.write_text(
        textwrap.dedent(f"""
        import importlib, sys, time
        from pathlib import Path
        owner = importlib.import_module({module!r})
        for part in {owner_path!r}.split(".") if {owner_path!r} else []:
            owner = getattr(owner, part)
        real = getattr(owner, {name!r})
        def pause():
            Path({str(ready)!r}).touch()
            time.sleep(600)
        def paused(*args, **kwargs):
            if {when!r} == "before":
                pause()
            real(*args, **kwargs)
            pause()
        setattr(owner, {name!r}, paused)
        from rnnkit.cli import main
        sys.exit(main(sys.argv[1:]))
        """)
    )
    argv = ["train", "-q", "--run-dir", str(run), "--overwrite", *new_settings(finished_run)]
    process = subprocess.Popen([sys.executable, str(script), *argv], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, f"the overwrite ended before reaching '{moment}'"
            assert time.monotonic() < deadline, f"the overwrite never reached '{moment}'"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -9


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(PAUSES))
def test_kill_9_at_any_moment_of_an_overwrite_leaves_the_old_run_or_the_new_one(
    moment, old_run, finished_run, tmp_path
):
    before = snapshot(old_run)
    overwrite_and_kill(old_run, finished_run, moment, tmp_path)
    if EXPECTED[moment] == "old":
        assert snapshot(old_run) == before
    else:  # the new run, complete enough to be continued
        assert load_config(old_run / "config.yaml").model.hidden_size == 6
        assert main(["train", "-q", "--resume", str(old_run)]) == 0
        assert (old_run / "metrics.json").exists()
    # Whatever was left beside it, a new overwrite starts cleanly and leaves nothing behind.
    argv = ["train", "-q", "--run-dir", str(old_run), "--overwrite", *new_settings(finished_run)]
    assert main(argv) == 0
    assert leftovers(old_run) == []
