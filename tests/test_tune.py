"""``rnnkit tune``: a study of ordinary runs that survives SIGKILL, prunes, records dead trials, and
leaves a table, plots and a best.yaml that trains to the reported score."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from test_trainer import tiny_settings, write_corpus

from rnnkit.cli import main
from rnnkit.config import load_config
from rnnkit.training import experiment
from rnnkit.tune import study as study_module
from rnnkit.tune.pruning import PRUNED_AT, TrialPruning

SPACE = {
    "train.lr": {"type": "log", "low": 0.003, "high": 0.03},
    "model.hidden_size": {"type": "int", "low": 4, "high": 12, "step": 4},
    "model.name": {"type": "categorical", "choices": ["gru", "lstm"]},
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def setup_files(root: Path) -> tuple[Path, Path, list[str]]:
    """A corpus, a space file and the ``--set`` arguments of a tiny base config."""
    corpus = write_corpus(root / "corpus.csv")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    settings = tiny_settings(corpus, **{"train.epochs": 3})
    return corpus, space, [arg for setting in settings for arg in ("--set", setting)]


def tune_args(study: Path, space: Path, settings: list[str], trials: int, *extra: str) -> list[str]:
    return [
        "tune",
        "-q",
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--study-dir",
        str(study),
        *settings,
        *extra,
    ]


def trial_rows(study: Path) -> list[dict]:
    with (study / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def load(study: Path) -> optuna.Study:
    return optuna.load_study(study_name="rnnkit", storage=f"sqlite:///{study / 'study.db'}")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        _, space, settings = setup_files(root)
        assert main(tune_args(root / "study", space, settings, 7)) == 0
    return root / "study"


def test_a_study_finishes_the_asked_number_of_trials_each_an_ordinary_run(finished_study):
    rows = trial_rows(finished_study)
    assert len(rows) == 7 and {row["state"] for row in rows} <= {"complete", "pruned"}
    for row in rows:
        run = finished_study / "trials" / row["trial"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert float(row["test_accuracy"]) == metrics["test"]["accuracy"]
        assert load_config(run / "config.yaml").model.name == row["model.name"]


def test_the_study_folder_holds_the_table_the_plots_and_best_yaml(finished_study):
    for name in ("trials.md", "trials.csv", "best.yaml", "study.yaml", "study.db"):
        assert (finished_study / name).is_file()
    for name in ("history.png", "importances.png"):
        assert (finished_study / name).read_bytes().startswith(b"\x89PNG")
    header = (finished_study / "trials.md").read_text().splitlines()[0]
    assert header.startswith("| trial | state | val_accuracy | test_accuracy | epochs | time_s | train.lr |")


def test_best_yaml_is_the_best_trials_config_and_trains_to_its_reported_scores(finished_study, tmp_path):
    best = load(finished_study).best_trial
    cfg = load_config(finished_study / "best.yaml")
    assert cfg.model.name == best.params["model.name"] and cfg.train.lr == best.params["train.lr"]
    assert f"is trial {best.number}:" in (finished_study / "best.yaml").read_text()
    metrics = experiment.train(cfg, tmp_path / "again")
    assert metrics["validation"]["accuracy"] == best.value
    assert metrics["test"]["accuracy"] == best.user_attrs["test_accuracy"]


def test_asking_for_more_trials_on_resume_extends_the_study(finished_study):
    assert main(["tune", "-q", "--resume", "--study-dir", str(finished_study), "--trials", "8"]) == 0
    assert len(trial_rows(finished_study)) == 8
    assert yaml.safe_load((finished_study / "study.yaml").read_text())["trials"] == 8


class StubTrial:
    """An Optuna trial as the pruning callback sees it, pruning at a chosen epoch."""

    number = 0

    def __init__(self, prune_at: int) -> None:
        self.prune_at, self.reported, self.attrs = prune_at, [], {}

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][0] == self.prune_at

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_a_pruned_trial_reports_every_epoch_then_stops_as_a_complete_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv")
    trial = StubTrial(prune_at=2)
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.epochs": 5}))
    metrics = experiment.train(cfg, tmp_path / "run", callbacks=[TrialPruning(trial)])
    assert [step for step, _ in trial.reported] == [1, 2]
    assert trial.attrs == {PRUNED_AT: 2}
    assert metrics["epochs_trained"] == 2 and (tmp_path / "run" / "metrics.json").is_file()


def test_a_dead_trial_is_recorded_as_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    _, space, settings = setup_files(tmp_path)
    real_run, real_loss, runs = study_module.run_or_resume, torch.nn.functional.cross_entropy, []

    def second_run_diverges(*args, **kwargs):
        runs.append(1)
        return real_run(*args, **kwargs)

    def loss(*args, **kwargs):
        value = real_loss(*args, **kwargs)
        return value * float("nan") if len(runs) == 2 else value

    monkeypatch.setattr(study_module, "run_or_resume", second_run_diverges)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", loss)
    assert main(tune_args(tmp_path / "study", space, settings, 3, "--pruner", "none")) == 0
    rows = trial_rows(tmp_path / "study")
    assert [row["state"] for row in rows] == ["complete", "failed", "complete", "complete"]
    assert rows[1]["error"].startswith("the training loss became nan at step 1")


def test_a_study_folder_of_another_config_or_space_is_refused_in_one_line(finished_study, capsys):
    settings = tiny_settings(finished_study.parent / "corpus.csv", **{"train.epochs": 3, "train.lr": 0.5})
    args = ["tune", "--resume", "--study-dir", str(finished_study)]
    assert main([*args, *(arg for setting in settings for arg in ("--set", setting))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error: ") and len(err.splitlines()) == 1
    assert "was made for another config (train.lr is 0.5 here but 0.01 in the study)" in err


def test_a_new_study_in_a_folder_that_holds_one_is_refused(finished_study, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": {"type": "log", "low": 0.001, "high": 0.1}}))
    assert main(["tune", "--space", str(space), "--trials", "2", "--study-dir", str(finished_study)]) == 2
    assert "holds a study of another config or space" in capsys.readouterr().err


def test_a_bad_space_is_one_line_and_creates_nothing(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("model.hidden_size: {type: int, low: 32, high: 16}\n")
    assert main(["tune", "--space", str(space), "--trials", "2", "--study-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rnnkit: error: space.yaml: model.hidden_size: low (32) must be below high (16)"
    assert not (tmp_path / "s").exists()


def test_without_optuna_tune_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--resume", "--study-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error: rnnkit tune needs optuna") and len(err.splitlines()) == 1
    assert err.endswith("pip install 'rnnkit[tune]'")


PAUSE_IN_THIRD_TRIAL = """
    from rnnkit.training.trainer import Trainer
    original, fits = Trainer.fit, []
    def fit(self):
        fits.append(1)
        if len(fits) == 3:  # the third trial, after its first epoch's checkpoint
            self.callbacks.append(PauseAfterEpoch())
        return original(self)
    from rnnkit.training.callbacks import Callback
    class PauseAfterEpoch(Callback):
        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:
                pause()
    Trainer.fit = fit
"""


@pytest.mark.slow
def test_a_study_killed_mid_trial_resumes_that_trial_and_ends_with_the_asked_trials(tmp_path):
    _, space, settings = setup_files(tmp_path)
    study = tmp_path / "study"
    ready = tmp_path / "paused"
    script = tmp_path / "tune_and_pause.py"
    script.write_text(
        "import sys, time\nfrom pathlib import Path\n"
        f"def pause():\n    Path({str(ready)!r}).touch()\n    time.sleep(600)\n"
        + textwrap.dedent(PAUSE_IN_THIRD_TRIAL)
        + "from rnnkit.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    args = tune_args(study, space, settings, 5, "--pruner", "none")
    process = subprocess.Popen([sys.executable, str(script), *args], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the study never reached the pause"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL
        process.wait()
    assert [trial.state.name for trial in load(study).trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    killed_params = load(study).trials[2].params

    assert main(["tune", "-q", "--resume", "--study-dir", str(study)]) == 0
    trials = load(study).trials
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 5
    assert trials[2].params == killed_params  # the killed trial continued, not replaced
    history = (study / "trials" / "2" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


@pytest.mark.slow
def test_parallel_jobs_share_the_cores_between_trials(tmp_path):
    _, space, settings = setup_files(tmp_path)
    study = tmp_path / "study"
    assert main(tune_args(study, space, settings, 4, "--jobs", "2")) == 0
    assert len(trial_rows(study)) == 4
    cores = len(os.sched_getaffinity(0))
    threads = {load_config(run / "config.yaml").train.num_threads for run in (study / "trials").iterdir()}
    assert threads == {max(1, cores // 2)}
