"""Config files and ``--set`` overrides: what users may write, and the one-line errors for the rest."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rnnkit.config import Config, load_config
from rnnkit.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_and_no_overrides_give_the_defaults():
    assert load_config() == Config()


SHIPPED = sorted(path.stem for path in CONFIGS.glob("*.yaml") if not path.stem.endswith("-space"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_is_valid(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.data.dataset == "20newsgroups" or cfg.data.path


def test_the_quickstart_config_uses_the_shipped_sample_and_glove():
    cfg = load_config(CONFIGS / "quickstart.yaml")
    assert cfg.data.archive == "data/20news-sample.tar.gz"
    assert cfg.embeddings.source == "glove-6b-50d"


def test_the_small_data_config_trains_on_the_shipped_sample():
    cfg = load_config(CONFIGS / "small.yaml")
    assert cfg.data.archive == "data/20news-sample.tar.gz"
    assert cfg.embeddings.sources == ["glove-6b-50d", "train"] and cfg.train.label_smoothing == 0.1


def test_the_full_configs_name_their_model():
    for name in ("lstm", "gru", "rnn"):
        assert load_config(CONFIGS / f"{name}.yaml").model.name == name


def test_overrides_are_parsed_as_yaml_values():
    cfg = load_config(
        overrides=[
            "train.epochs=3",
            "train.lr=1e-3",
            "train.amp=false",
            "data.categories=[sci.space, rec.autos]",
            "data.archive=some/archive.tar.gz",
            "data.max_vocab=null",
        ]
    )
    assert cfg.train.epochs == 3
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.amp is False
    assert cfg.data.categories == ["sci.space", "rec.autos"]
    assert cfg.data.archive == "some/archive.tar.gz"
    assert cfg.data.max_vocab is None


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 7\n  batch_size: 16\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 16)


def test_an_override_without_section_or_equals_sign_is_refused():
    for override in ("epochs=3", "train.epochs", "=3"):
        with pytest.raises(ConfigError, match=r"section\.key=value"):
            load_config(overrides=[override])


def test_an_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'train.epochs'"):
        load_config(overrides=["train.epoch=3"])


def test_an_unknown_section_names_the_nearest_valid_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  epochs: 3\n"))


def test_a_value_of_the_wrong_type_is_refused_with_the_expected_type():
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        load_config(overrides=["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"train\.amp must be true/false"):
        load_config(overrides=["train.amp=maybe"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=0", "train.lr must be greater than 0"),
        ("train.epochs=0", "train.epochs must be at least 1"),
        ("data.val_size=1.5", "data.val_size must be at most"),
        ("train.optimizer=adamm", "did you mean 'adam'"),
        ("model.pooling=maximum", "must be one of last, mean, max, attention"),
        ("train.device=tpu", "train.device must be one of auto, cpu, cuda"),
    ],
)
def test_values_out_of_range_or_choice_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(path)


def test_a_missing_config_file_points_to_the_examples(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found.*configs/"):
        load_config(tmp_path / "nope.yaml")


def test_every_error_message_is_one_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override",
    [
        "train.loggers=[csv, " + "data" * 80 + "]",
        "train.optimizer=" + "adam" * 80,
        "data.path=" + "notes/" * 80 + "x.txt",
    ],
)
def test_a_long_bad_value_is_cut_short_in_the_message(override):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    assert "..." in str(error.value) and len(str(error.value)) <= 300


def test_a_data_path_with_a_name_too_long_for_the_file_system_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.path .* cannot be looked at: File name too long"):
        load_config(overrides=["data.path=/" + "x" * 300])


def test_a_config_survives_a_round_trip_through_yaml(tmp_path):
    cfg = load_config(CONFIGS / "lstm.yaml", ["train.epochs=4", "data.categories=[a, b]"])
    assert load_config(write(tmp_path, cfg.to_yaml())) == cfg


def alias_bomb(levels: int, width: int = 9) -> str:
    """``model.options`` whose YAML aliases expand to ``width ** levels`` strings (none refers to itself)."""
    lines = ["model:", "  options:", f"    l0: &l0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"    l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_load_time(tmp_path):
    with pytest.raises(ConfigError, match="expand to more than") as error:
        load_config(write(tmp_path, alias_bomb(levels=9)))
    assert len(str(error.value)) < 300


def test_an_alias_bomb_in_an_override_is_refused_too():
    levels = [f"l0: &l0 [{', '.join(['x'] * 10)}]"]
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 6)]
    bomb = "{" + ", ".join(levels) + "}"  # 10 ** 6 strings
    with pytest.raises(ConfigError, match="expand to more than"):
        load_config(overrides=[f"model.options={bomb}"])


def test_aliases_that_expand_to_a_normal_size_are_fine(tmp_path):
    cfg = load_config(write(tmp_path, alias_bomb(levels=3)))
    assert len(cfg.model.options["l2"]) == 9


def test_more_threads_than_four_per_core_is_refused():
    cores = os.cpu_count() or 1
    assert load_config(overrides=[f"train.num_threads={4 * cores}"]).train.num_threads == 4 * cores
    with pytest.raises(ConfigError, match=r"train\.num_threads must be at most .*CPU cores"):
        load_config(overrides=["train.num_threads=100000"])


@pytest.mark.parametrize(
    ("name", "kind"),
    [("reviews.csv", "csv"), ("reviews.CSV", "csv"), ("posts.jsonl", "jsonl"), ("posts.json", "jsonl")],
)
def test_the_dataset_kind_follows_a_data_path_file(tmp_path, name, kind, caplog):
    caplog.set_level(logging.INFO)
    cfg = load_config(overrides=[f"data.path={tmp_path / name}"])
    assert cfg.data.dataset == kind
    assert f"reading data.path as {kind}" in caplog.text


def test_a_data_path_folder_is_a_folder_data_set_or_a_train_test_pair(tmp_path):
    (tmp_path / "classes").mkdir()
    assert load_config(overrides=[f"data.path={tmp_path / 'classes'}"]).data.dataset == "folder"
    (tmp_path / "pair").mkdir()
    for part in ("train", "test"):
        (tmp_path / "pair" / f"{part}.jsonl").write_text("")
    assert load_config(overrides=[f"data.path={tmp_path / 'pair'}"]).data.dataset == "jsonl"


def test_a_data_path_given_with_a_20_newsgroups_config_is_read_as_what_it_is(tmp_path):
    cfg = load_config(CONFIGS / "gru.yaml", [f"data.path={tmp_path / 'reviews.csv'}"])
    assert cfg.data.dataset == "csv"
    assert cfg.data.remove == [] and cfg.data.archive is None  # 20 Newsgroups settings, unused


def test_a_data_path_of_unknown_kind_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path .*notes\.txt.*set data\.dataset"):
        load_config(overrides=[f"data.path={tmp_path / 'notes.txt'}"])


def test_20_newsgroups_settings_are_dropped_for_own_data_with_a_warning(tmp_path, caplog):
    cfg = load_config(
        overrides=["data.dataset=csv", f"data.path={tmp_path / 'a.csv'}", "data.remove=[headers]"]
    )
    assert cfg.data.remove == []
    assert "data.remove applies to 20 Newsgroups only" in caplog.text
