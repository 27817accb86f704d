"""``rnnkit.fit``: Python lists in, the same trained model ``rnnkit.load`` gives, and one-line mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rnnkit
from rnnkit.config import Config
from rnnkit.errors import ConfigError, DataError, DataTypeError
from rnnkit.fitting import config_key, configure
from rnnkit.predict import Predictor
from rnnkit.training import experiment

TEXTS = [f"rocket launch orbit nasa {i}" for i in range(24)] + [f"puck goal ice team {i}" for i in range(24)]
LABELS = ["space"] * 24 + ["hockey"] * 24
TINY = {"epochs": 3, "hidden_size": 8, "embeddings__dim": 8, "min_freq": 1, "lr": 0.02, "progress": False}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_fit_returns_a_trained_predictor_and_keeps_the_run_where_asked(tmp_path: Path) -> None:
    model = rnnkit.fit(TEXTS, LABELS, run_dir=tmp_path / "run", model__name="gru", **TINY)
    assert isinstance(model, Predictor) and model.label_names == ["hockey", "space"]
    again = rnnkit.load(tmp_path / "run")
    assert again.predict(["nasa orbit", "ice goal"]) == model.predict(["nasa orbit", "ice goal"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["corpus_cache"] == "in memory" and metrics["test"] is not None


def test_fit_without_a_run_folder_trains_in_a_temporary_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = rnnkit.fit(TEXTS, LABELS, test_size=0.0, **TINY)
    assert len(model.predict(TEXTS[:3])) == 3 and not any(tmp_path.iterdir())


def test_label_lists_train_a_multilabel_model() -> None:
    labels = [[label, "news"] if i % 3 else [label] for i, label in enumerate(LABELS)]
    model = rnnkit.fit(TEXTS, labels, **TINY)
    assert model.multilabel and model.label_names == ["hockey", "news", "space"]
    assert all(isinstance(labels, list) for labels in model.predict(["nasa orbit", "ice goal"]))


def test_overrides_name_a_key_or_section__key_and_start_from_any_config() -> None:
    assert config_key("hidden_size") == ("model", "hidden_size")
    assert config_key("embeddings__dim") == ("embeddings", "dim")
    cfg = configure(Config(), {"epochs": 2, "model__name": "gru"})
    assert (cfg.train.epochs, cfg.model.name, cfg.data.dataset) == (2, "gru", "memory")
    with pytest.raises(ConfigError, match="not a config key"):
        configure(None, {"dimm": 1})


def test_bad_python_input_is_a_value_or_type_error_with_one_line() -> None:
    with pytest.raises(TypeError, match=r"texts must be strings; texts\[1\] is float"):
        rnnkit.fit(["a", float("nan")], ["x", "y"], **TINY)
    with pytest.raises(DataTypeError, match="not a single string"):
        rnnkit.fit("one text", ["x"], **TINY)
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        rnnkit.fit(["a", "b", "c"], ["x", "y"], **TINY)
    with pytest.raises(ValueError, match="mix single values"):
        rnnkit.fit(["a", "b"], ["x", ["y"]], **TINY)
    with pytest.raises(ValueError, match="not a config key"):
        rnnkit.fit(TEXTS, LABELS, hiden_size=3)
    assert issubclass(DataError, ValueError) and issubclass(ConfigError, ValueError)


def test_a_run_trained_from_python_lists_cannot_be_resumed_from_its_folder(tmp_path: Path) -> None:
    rnnkit.fit(TEXTS, LABELS, run_dir=tmp_path / "run", **TINY)
    with pytest.raises(DataError, match="documents handed over from Python"):
        experiment.evaluate(tmp_path / "run")
