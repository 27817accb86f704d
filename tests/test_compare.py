"""``rnnkit compare``: one row per run, the config keys that differ, scores, and overlaid curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_trainer import tiny_settings, write_corpus

from rnnkit.cli import main
from rnnkit.compare import differing_keys, find_runs, load_runs, table
from rnnkit.config import Config, load_config
from rnnkit.training import experiment


def fake_run(folder: Path, *, metrics: dict | None = None, history: list[float] = (), **config) -> Path:
    """A run folder as compare reads it: the default config with ``section__key`` changes."""
    raw = Config().to_dict()
    for name, value in config.items():
        section, key = name.split("__")
        raw[section][key] = value
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if history:
        lines = ["epoch,val_loss,val_accuracy,val_macro_f1"]
        lines += [f"{epoch},{1 - acc},{acc},{acc}" for epoch, acc in enumerate(history, start=1)]
        (folder / "history.csv").write_text("\n".join(lines) + "\n")
    return folder


def scores(accuracy: float, **extra) -> dict:
    split = {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "loss": 1 - accuracy}
    return {
        "test": split,
        "validation": split,
        "num_parameters": 1000,
        "train_time_s": 3.5,
        "epochs_trained": 2,
        "best_epoch": 2,
    } | extra


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> Path:
    """Two trained runs that differ in the cell and the hidden size."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        corpus = write_corpus(root / "corpus.csv")
        experiment.train(load_config(overrides=tiny_settings(corpus)), root / "runs" / "gru" / "run")
        lstm = tiny_settings(corpus, **{"model.name": "lstm", "model.hidden_size": 6})
        experiment.train(load_config(overrides=lstm), root / "runs" / "lstm" / "run")
    return root / "runs"


def test_the_table_shows_only_the_config_keys_that_differ_and_each_runs_scores(real_runs):
    records = load_runs([real_runs / "gru" / "run", real_runs / "lstm" / "run"])
    headers, rows = table(records)
    assert headers[:3] == ["run", "model.name", "model.hidden_size"]
    assert {"test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1"} <= set(headers)
    assert {"parameters", "train_time_s", "epochs"} <= set(headers)
    assert [row[:3] for row in rows] == [["gru/run", "gru", 8], ["lstm/run", "lstm", 6]]
    metrics = json.loads((real_runs / "lstm" / "run" / "metrics.json").read_text())
    row = dict(zip(headers, rows[1], strict=True))
    assert row["test_accuracy"] == metrics["test"]["accuracy"]
    assert row["parameters"] == metrics["num_parameters"] and row["epochs"] == 2


def test_a_folder_of_runs_stands_for_the_runs_below_it(real_runs, capsys):
    assert main(["compare", str(real_runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run", "model.name", "model.hidden_size"]
    assert [line.split()[0] for line in out[2:]] == ["gru/run", "lstm/run"]


def test_the_validation_curves_of_all_runs_go_into_one_png(real_runs, tmp_path):
    assert main(["compare", str(real_runs), "--plot", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_study_expands_to_its_trials_in_trial_order(tmp_path):
    for number in (10, 2, 1):
        fake_run(tmp_path / "study" / "trials" / str(number), metrics=scores(0.5), train__lr=0.001 * number)
    (tmp_path / "study" / "best.yaml").write_text("{}")
    names = [path.relative_to(tmp_path / "study").as_posix() for path in find_runs([tmp_path / "study"])]
    assert names == ["trials/1", "trials/2", "trials/10"]


def test_the_baseline_column_appears_when_a_run_has_a_baseline(tmp_path):
    plain = fake_run(tmp_path / "a", metrics=scores(0.7))
    with_baseline = fake_run(
        tmp_path / "b", metrics=scores(0.8, baseline={"test": {"accuracy": 0.75}}), model__name="gru"
    )
    headers, rows = table(load_runs([plain]))
    assert "baseline_test_accuracy" not in headers
    headers, rows = table(load_runs([plain, with_baseline]))
    column = headers.index("baseline_test_accuracy")
    assert [row[column] for row in rows] == [None, 0.75]


def test_an_unfinished_run_is_listed_with_its_epochs_so_far_and_no_scores(tmp_path, capsys):
    fake_run(tmp_path / "done", metrics=scores(0.7), history=[0.5, 0.7])
    fake_run(tmp_path / "running", history=[0.4, 0.6, 0.65], train__epochs=5)
    assert main(["compare", str(tmp_path / "done"), str(tmp_path / "running"), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | train.epochs | test_accuracy")
    assert lines[3].startswith("| running | 5 | - | - | - | - | - | - | 3 |")


def test_runs_given_twice_are_compared_once(tmp_path):
    run = fake_run(tmp_path / "a", metrics=scores(0.7))
    assert find_runs([run, tmp_path, run]) == [run]


def test_identical_configs_differ_in_no_key_and_display_settings_do_not_count(tmp_path):
    runs = [fake_run(tmp_path / "a", metrics=scores(0.7))]
    runs.append(fake_run(tmp_path / "b", metrics=scores(0.7), train__progress=False, train__loggers=[]))
    assert differing_keys(load_runs(runs)) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "holds no rnnkit run"),
    ],
)
def test_a_path_without_runs_is_one_line_and_exit_status_2(make, message, tmp_path, capsys):
    assert main(["compare", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
