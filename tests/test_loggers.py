"""Live logs: ``train.loggers`` picks history.csv and/or TensorBoard; a missing extra costs one line."""

from __future__ import annotations

import logging
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from test_trainer import tiny_settings, write_corpus

from rnnkit.config import load_config
from rnnkit.errors import ConfigError
from rnnkit.training import experiment
from rnnkit.training.loggers import MISSING_TENSORBOARD


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        corpus = write_corpus(root / "corpus.csv")
        cfg = load_config(overrides=tiny_settings(corpus, **{"train.loggers": "[csv, tensorboard]"}))
        metrics = experiment.train(cfg, root / "run")
    return root / "run", metrics


def events(folder) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_gets_scalars_per_step_and_per_epoch(tensorboard_run):
    run, metrics = tensorboard_run
    scalars = events(run / "tensorboard").Tags()["scalars"]
    assert {"step/train_loss", "step/train_accuracy", "step/lr"} <= set(scalars)
    assert {"epoch/val_accuracy", "epoch/val_macro_f1", "epoch/train_loss", "epoch/lr"} <= set(scalars)
    steps = events(run / "tensorboard").Scalars("step/train_loss")
    assert [event.step for event in steps] == list(range(1, metrics["steps"] + 1))
    epochs = events(run / "tensorboard").Scalars("epoch/val_accuracy")
    assert len(epochs) == metrics["epochs_trained"]


def test_tensorboard_gets_the_config_as_hparams_with_the_test_scores(tensorboard_run):
    run, metrics = tensorboard_run
    accumulator = events(run / "tensorboard")
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.name"].string_value == "gru" and hparams["model.hidden_size"].number_value == 8
    test_accuracy = accumulator.Scalars("hparam/test_accuracy")
    assert test_accuracy[-1].value == pytest.approx(metrics["test"]["accuracy"])


def test_tensorboard_gets_the_test_confusion_matrix_as_an_image(tensorboard_run):
    run, _ = tensorboard_run
    accumulator = events(run / "tensorboard")
    assert "test/confusion_matrix" in accumulator.Tags()["images"]
    image = accumulator.Images("test/confusion_matrix")[-1]
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100


def test_csv_and_tensorboard_together_keep_history_csv(tensorboard_run):
    run, metrics = tensorboard_run
    assert len((run / "history.csv").read_text().splitlines()) == 1 + metrics["epochs_trained"]


def test_without_the_tensorboard_package_training_goes_on_with_history_csv(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    corpus = write_corpus(tmp_path / "corpus.csv")
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.loggers": "[tensorboard]"}))
    with caplog.at_level(logging.WARNING):
        experiment.train(cfg, tmp_path / "run")
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == [MISSING_TENSORBOARD]
    assert (tmp_path / "run" / "history.csv").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_without_csv_in_the_list_no_history_csv_is_written(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv")
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.loggers": "[]", "train.epochs": 1}))
    experiment.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "history.csv").exists() and (tmp_path / "run" / "metrics.json").is_file()


def test_an_unknown_logger_is_refused_with_the_nearest_name():
    with pytest.raises(
        ConfigError,
        match=r"train.loggers may only contain csv, tensorboard; got 'tensorbord'; "
        r"did you mean 'tensorboard'\?",
    ):
        load_config(overrides=["train.loggers=[csv, tensorbord]"])


def test_a_run_can_be_resumed_with_tensorboard_switched_on(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    experiment.train(load_config(overrides=tiny_settings(corpus, **{"train.epochs": 1})), run)
    experiment.resume(run, ["train.epochs=2", "train.loggers=[csv, tensorboard]"])
    epochs = events(run / "tensorboard").Scalars("epoch/epoch")
    assert [event.value for event in epochs] == [2.0]
