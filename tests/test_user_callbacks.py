"""User callbacks: ``rnnkit.training.train(cfg, run, callbacks=[...])`` and ``rnnkit train --callback``."""

from __future__ import annotations

import json
import textwrap

import pytest
from test_trainer import cli_args, tiny_settings, write_corpus

import rnnkit.training
from rnnkit.cli import main
from rnnkit.config import load_config


class Recorder(rnnkit.training.Callback):
    """Writes down every hook call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.test_metrics: dict | None = None

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer):
        self.calls.append(f"epoch_start {trainer.epoch + 1}")

    def on_step_end(self, trainer):
        self.calls.append("step")

    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch_end {record['epoch']}")

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")

    def on_test_end(self, trainer, metrics, test):
        self.calls.append(f"test_end {len(test.labels)}")
        self.test_metrics = metrics


class StopAfterFirstEpoch(rnnkit.training.Callback):
    def on_epoch_end(self, trainer, record):
        trainer.should_stop = True


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.csv")


def test_the_hooks_are_called_in_order_and_see_the_final_metrics(corpus, tmp_path):
    recorder = Recorder()
    cfg = load_config(overrides=tiny_settings(corpus))
    metrics = rnnkit.training.train(cfg, tmp_path / "run", callbacks=[recorder])
    steps_per_epoch = metrics["steps"] // 2
    epoch = ["step"] * steps_per_epoch
    assert recorder.calls == [
        "fit_start",
        "epoch_start 1",
        *epoch,
        "epoch_end 1",
        "epoch_start 2",
        *epoch,
        "epoch_end 2",
        "fit_end",
        f"test_end {metrics['data']['test_docs']}",
    ]
    assert recorder.test_metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_a_callback_can_stop_training(corpus, tmp_path):
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.epochs": 3}))
    metrics = rnnkit.training.train(cfg, tmp_path / "run", callbacks=[StopAfterFirstEpoch()])
    assert metrics["epochs_trained"] == 1 and metrics["stopped_early"]


CALLBACK_MODULE = """
    import json
    from pathlib import Path
    from rnnkit.training import Callback

    class EpochFile(Callback):
        def on_epoch_end(self, trainer, record):
            Path("epochs.jsonl").open("a").write(json.dumps(record) + "\\n")

    def needs_arguments(path):
        return EpochFile()

    def not_a_callback():
        return 42
"""


@pytest.fixture
def callback_module(tmp_path, monkeypatch):
    (tmp_path / "my_callbacks.py").write_text(textwrap.dedent(CALLBACK_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_the_cli_loads_a_callback_class_from_a_module_in_the_current_folder(
    corpus, tmp_path, callback_module
):
    args = ["train", "-q", "--run-dir", str(tmp_path / "run"), "--callback", "my_callbacks:EpochFile"]
    assert main([*args, *cli_args(tiny_settings(corpus))]) == 0
    rows = [json.loads(line) for line in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_callbacks", "must look like module:ClassName"),
        ("no_such_module:X", "no module named 'no_such_module'"),
        ("my_callbacks:EpochFiles", "has no 'EpochFiles'; did you mean 'my_callbacks:EpochFile'?"),
        ("my_callbacks:needs_arguments", "cannot be called without arguments"),
        ("my_callbacks:not_a_callback", "gave a int, not a callback; subclass rnnkit.training.Callback"),
    ],
)
def test_a_bad_callback_is_one_line_and_exit_status_2_before_training(
    spec, message, corpus, tmp_path, callback_module, capsys
):
    args = ["train", "-q", "--run-dir", str(tmp_path / "run"), "--callback", spec]
    assert main([*args, *cli_args(tiny_settings(corpus))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()
