"""The search space of ``rnnkit tune``: what it accepts, what it draws, and one line for every mistake."""

from __future__ import annotations

import optuna
import pytest

from rnnkit.config import Config, load_config
from rnnkit.errors import ConfigError
from rnnkit.tune.space import apply, load_space, parse_space

SPACE = {
    "train.lr": {"type": "log", "low": 1.0e-4, "high": 1.0e-2},
    "model.hidden_size": {"type": "int", "low": 32, "high": 256, "step": 32},
    "model.name": {"type": "categorical", "choices": ["gru", "lstm"]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "data.max_length": {"type": "log", "low": 50, "high": 400},
}


def draws(space, count: int = 30) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.suggest(study.ask()) for _ in range(count)]


def test_a_space_maps_config_keys_to_ranges_and_choices():
    space = parse_space(SPACE, Config())
    kinds = {param.key: (param.kind, param.integer) for param in space.params}
    assert kinds == {
        "train.lr": ("log", False),
        "model.hidden_size": ("int", True),
        "model.name": ("categorical", False),
        "model.dropout": ("float", False),
        "data.max_length": ("log", True),  # a log range over an integer key draws integers
    }


def test_every_drawn_value_is_in_its_range_and_of_the_keys_type():
    for values in draws(parse_space(SPACE, Config())):
        assert 1e-4 <= values["train.lr"] <= 1e-2
        assert values["model.hidden_size"] in range(32, 257, 32)
        assert values["model.name"] in ("gru", "lstm")
        assert 0.0 <= values["model.dropout"] <= 0.5
        assert isinstance(values["data.max_length"], int) and 50 <= values["data.max_length"] <= 400


def test_drawn_values_make_a_valid_config():
    cfg = apply(Config(), {"train.lr": 0.003, "model.hidden_size": 64, "model.name": "gru"})
    assert (cfg.train.lr, cfg.model.hidden_size, cfg.model.name) == (0.003, 64, "gru")


def test_a_registered_models_options_can_be_searched():
    space = parse_space({"model.options.width": {"type": "int", "low": 8, "high": 64}}, Config())
    assert apply(Config(), {"model.options.width": 16}).model.options == {"width": 16}
    assert space.params[0].integer


def test_a_space_file_is_read_and_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {type: log, low: 1e-4, high: 1e-2}\n")
    (param,) = load_space(path, Config()).params
    assert (param.low, param.high) == (1e-4, 1e-2)


BAD_SPACES = [
    (
        {"model.hiden_size": {"type": "int", "low": 1, "high": 2}},
        "unknown config key 'model.hiden_size'; did you mean 'model.hidden_size'?",
    ),
    (
        {"modle.hidden_size": {"type": "int", "low": 1, "high": 2}},
        "unknown config section 'modle'; did you mean 'model'?",
    ),
    ({"lr": {"type": "log", "low": 0.1, "high": 1}}, "key 'lr' must be section.key"),
    ({"train.lr": {"type": "log", "low": 0.1, "high": 0.01}}, "low (0.1) must be below high (0.01)"),
    ({"train.lr": {"type": "log", "low": 0.0, "high": 0.01}}, "a log range needs low > 0"),
    (
        {"train.lr": {"type": "float", "low": 0.0, "high": 0.01}},
        "low 0.0 is impossible: train.lr must be greater than 0.0",
    ),
    (
        {"model.hidden_size": {"type": "int", "low": 0, "high": 64}},
        "low 0 is impossible: model.hidden_size must be at least 1",
    ),
    (
        {"model.hidden_size": {"type": "int", "low": 32, "high": 250, "step": 32}},
        "must be a multiple of step (32); e.g. high 224",
    ),
    ({"model.hidden_size": {"type": "float", "low": 32, "high": 64}}, "takes whole numbers; use type int"),
    ({"model.hidden_size": {"type": "int", "low": 32.5, "high": 64}}, "must be whole numbers"),
    ({"model.hidden_size": {"type": "int", "lo": 32, "high": 64}}, "has no 'lo'; did you mean 'low'?"),
    ({"model.hidden_size": {"type": "int", "low": 32}}, "a int range needs high"),
    ({"model.hidden_size": {"type": "integer", "low": 32, "high": 64}}, "got 'integer'; did you mean 'int'?"),
    ({"model.hidden_size": [32, 64]}, "must be a mapping with a type"),
    (
        {"model.pooling": {"type": "categorical", "choices": ["max", "maxx"]}},
        "choice 'maxx' is impossible: model.pooling must be one of last",
    ),
    ({"model.pooling": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
    ({"model.pooling": {"type": "categorical", "choices": ["max", "max"]}}, "choices repeat a value"),
    (
        {"data.remove": {"type": "categorical", "choices": [["headers"], []]}},
        "choices must be numbers, strings, true/false or null",
    ),
    (
        {"model.name": {"type": "categorical", "choices": ["gru", "gur"]}},
        "'gur' is not a registered model; did you mean 'gru'?",
    ),
    (
        {"train.monitor": {"type": "categorical", "choices": ["val_loss", "val_accuracy"]}},
        "train.monitor is what the study optimises",
    ),
    ({}, "must map config keys to what to try"),
    ([1, 2], "must map config keys to what to try"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_SPACES)
def test_a_bad_space_is_refused_in_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_space(raw, Config(), "space.yaml")
    assert message in str(error.value)
    assert "\n" not in str(error.value) and str(error.value).startswith("space.yaml")


def test_ranges_are_checked_on_top_of_the_base_config():
    two_layers = load_config(overrides=["model.num_layers=2"])
    space = {"model.dropout": {"type": "float", "low": 0.0, "high": 0.9}}
    assert parse_space(space, two_layers).params[0].high == 0.9
    with pytest.raises(ConfigError, match=r"high 1\.0 is impossible: model\.dropout must be at most 0\.99"):
        parse_space({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}}, two_layers)


def test_a_missing_or_invalid_space_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="search space not found"):
        load_space(tmp_path / "nope.yaml", Config())
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.lr: {type: log\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_space(bad, Config())
