"""Property-based fuzzing of the config loader: whatever a user writes, they get a Config or a ConfigError.

``load_config`` is the edge between user text and code that trusts a :class:`Config`, so these tests
throw random bytes, YAML-shaped noise, odd values of every type and arbitrary ``--set`` overrides at
it. The only allowed outcomes are a ConfigError with a one-line message or a Config whose every field
satisfies its declared type and constraints (and which survives ``to_dict``/``to_yaml`` round trips).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import yaml
from fuzzing import fuzz
from hypothesis import event, example, given
from hypothesis import strategies as st

from rnnkit.config import SECTIONS, Config, config_from_dict, load_config
from rnnkit.errors import ConfigError

FIELDS = {name: dataclasses.fields(section) for name, section in SECTIONS.items()}
HINTS = {name: typing.get_type_hints(section) for name, section in SECTIONS.items()}
KEY_NAMES = sorted({f.name for fields in FIELDS.values() for f in fields})

# Pieces that steer random text into the YAML parser's corners: tags whose constructors used to
# leak IndexError/KeyError/ValueError, anchors and aliases (self-reference), merges, bad dates,
# numbers beyond float range, NaN/inf, control characters, flow/block mixtures and deep nesting.
YAML_PIECES = [
    *[f"{name}:" for name in SECTIONS], *[f"{name}: " for name in KEY_NAMES],
    "\n", "\n  ", "  ", " ", "\t", ": ", "- ", "? ", "[", "]", "{", "}", ", ", "#", "|", ">", "'", '"',
    "&a ", "*a", "<<: ", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ",
    "!!str ", "!!null ", "!!python/object:os.system ", "!custom ", "''", "'-'", "0b2", "0x", "2001-13-01",
    "2001-02-30 25:61:00", "1:2:3:x", ".nan", ".inf", "-.inf", "1e999", "9" * 400, "-1", "0", "1", "0.5",
    "1e-3", "~", "null", "true", "no", "yes", "on", "cuda:1", "lstm", "adam", "headers", "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n", "---\n", "...\n", "\x00", "\x07", "\x85", "\u2028", "\ufeff", "é", "日本",
    "\U0001f600", "\\", "\\x", "\\u00", "[" * 60, "]" * 60, "{a: " * 30,
]  # fmt: skip

yaml_text = st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=8), max_size=40).map("".join)

# Values a YAML file can hold, including the troublesome ones (huge ints, NaN, dates, nesting).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1e-3", "1e999", "nan", "cuda:0", "lstm", "headers", "", " ", "\n"]),
    st.dates(),
)
any_key = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none())
yaml_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_key, children, max_size=4),
    max_leaves=12,
)
section_values = st.dictionaries(st.sampled_from(KEY_NAMES) | any_key, yaml_values, max_size=6)
raw_configs = st.one_of(
    st.dictionaries(st.sampled_from(list(SECTIONS)) | any_key, section_values | yaml_values, max_size=5),
    yaml_values,
)


def _options(hint: Any) -> tuple[Any, ...]:
    """The alternatives of ``X | Y`` (or just ``X``)."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _field_values(hint: Any, meta: typing.Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Every value a field accepts (and that its dataclass default could have been)."""
    if meta.get("choices"):
        choices = st.sampled_from(meta["choices"])
        prefix = meta.get("prefix")
        return choices | st.integers(0, 15).map(lambda n: f"{prefix}{n}") if prefix else choices
    if meta.get("items"):
        return st.lists(st.sampled_from(meta["items"]), unique=True)
    alternatives = []
    for option in _options(hint):
        origin = typing.get_origin(option) or option
        if option is type(None):
            alternatives.append(st.none())
        elif origin is bool:
            alternatives.append(st.booleans())
        elif origin is int:
            alternatives.append(st.integers(min_value=meta.get("min"), max_value=meta.get("max")))
        elif origin is float:
            low, high = meta.get("min"), meta.get("max")
            exclusive = meta.get("exclusive_min", False)
            floats = st.floats(low, high, exclude_min=exclusive, allow_nan=False, allow_infinity=False)
            ints = st.integers(
                None if low is None else math.floor(low) + 1 if exclusive else math.ceil(low),
                None if high is None else math.floor(high),
            )
            alternatives += [floats, ints, floats.map(repr)]  # "1e-05": YAML 1.1 reads it as a string
        elif origin is str:
            alternatives.append(st.text(max_size=30))
        elif origin is list:
            min_size = 1 if meta.get("nonempty") else 0
            alternatives.append(st.lists(st.text(max_size=10), min_size=min_size, max_size=5, unique=True))
        elif origin is dict:
            plain = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))
            plain = plain | st.floats(allow_nan=False, allow_infinity=False)
            nested = st.recursive(plain, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c))
            alternatives.append(st.dictionaries(st.text(max_size=10), nested, max_size=4))
    return st.one_of(alternatives)


NEWSGROUPS_ONLY = ("remove", "categories", "archive", "data_home")


def _coherent(raw: dict[str, Any]) -> dict[str, Any]:
    """Settings that agree with each other: ``data.path`` with folder, csv or jsonl data and the
    20 Newsgroups settings only with 20 Newsgroups (the loader resolves other mixes; test_config);
    a list of embedding sources that names each source once, and ``random`` only alone."""
    sources = raw.get("embeddings", {}).get("source")
    if isinstance(sources, list):
        unique = list(dict.fromkeys(sources))
        unique = [source for source in unique if source != "random"] if len(unique) > 1 else unique
        raw["embeddings"]["source"] = unique or ["random"]
    data = raw.get("data")
    if data is not None:
        if data.get("path") is not None and data.get("dataset", "20newsgroups") == "20newsgroups":
            data["dataset"] = "csv"
        if data.get("dataset", "20newsgroups") != "20newsgroups":
            for key in NEWSGROUPS_ONLY:
                data.pop(key, None)
    return raw


# A sparse but valid config: any subset of sections and keys, each with an allowed value.
valid_raw_configs = st.fixed_dictionaries(
    {},
    optional={
        name: st.fixed_dictionaries(
            {},
            optional={f.name: _field_values(HINTS[name][f.name], f.metadata) for f in FIELDS[name]},
        )
        for name in SECTIONS
    },
).map(_coherent)


def _assert_valid(config: Config) -> None:
    """Every field holds its declared type and satisfies its choices and range (checked independently)."""
    for name in SECTIONS:
        section = getattr(config, name)
        assert isinstance(section, SECTIONS[name])
        for f in FIELDS[name]:
            value, meta = getattr(section, f.name), f.metadata
            hint = HINTS[name][f.name]
            options = _options(hint)
            types_allowed = tuple(typing.get_origin(o) or o for o in options if o is not Any)
            assert isinstance(value, types_allowed), (name, f.name, value)
            if isinstance(value, bool):
                assert bool in types_allowed
            if isinstance(value, float):
                assert math.isfinite(value), (name, f.name, value)
            if meta.get("choices") and not (meta.get("prefix") and value.startswith(meta["prefix"])):
                assert value in meta["choices"]
            if meta.get("items"):
                assert set(value) <= set(meta["items"])
            if isinstance(value, list):
                (list_hint,) = (o for o in options if typing.get_origin(o) is list)
                assert all(isinstance(item, typing.get_args(list_hint)) for item in value)
            if isinstance(value, dict):
                assert all(isinstance(key, str) for key in value)  # model.options become keyword arguments
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert meta.get("min") is None or value >= meta["min"]
                assert not meta.get("exclusive_min") or value > meta["min"]
                assert meta.get("max") is None or value <= meta["max"]
    assert config.train.seed < 2**32  # numpy's RandomState and scikit-learn's splits refuse larger seeds


def _assert_one_line(error: ConfigError, allowance: int = 0) -> None:
    """A user-facing error is one short line (the CLI prints it as is)."""
    message = str(error)
    assert message and len(message.splitlines()) == 1, message
    assert len(message) <= 300 + allowance, message


def _load_or_reject(path: Any, overrides: list[str] = ()) -> Config | None:
    try:
        config = load_config(path, overrides)
    except ConfigError as error:
        event("ConfigError")
        _assert_one_line(error, allowance=len(str(path)))
        return None
    event("Config")
    _assert_valid(config)
    yaml.safe_load(config.to_yaml())  # whatever loads can be saved into a run folder
    return config


@fuzz(300)
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_a_config_file_give_a_config_or_a_config_error(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    _load_or_reject(path)


@fuzz(400)
@given(text=yaml_text)
# Inputs that once escaped as IndexError, KeyError, ValueError, RecursionError, OverflowError or
# TypeError, or loaded a self-referential or NaN value that later crashed Config.to_dict / training.
@example(text="train: {lr: !!int ''}")
@example(text="model: {name: !!bool maybe}")
@example(text="data: {path: 2001-13-01}")
@example(text="[" * 3000)
@example(text="train: {lr: " + "9" * 400 + "}")
@example(text="train: {lr: .nan}")
@example(text="? \n: 1")
@example(text="model: {options: &a {self: *a}}")
def test_yaml_shaped_noise_gives_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    _load_or_reject(path)


@fuzz(300)
@given(raw=raw_configs)
def test_any_parsed_yaml_value_gives_a_config_or_a_config_error_and_the_file_agrees(tmp_path, raw):
    _check_raw(tmp_path, raw)


@st.composite
def one_odd_value(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one known key set to any YAML value: reaches every field's checks."""
    raw = draw(valid_raw_configs)
    section = draw(st.sampled_from(list(SECTIONS)))
    key = draw(st.sampled_from([f.name for f in FIELDS[section]]))
    raw.setdefault(section, {})[key] = draw(yaml_values)
    return raw


@fuzz(300)
@given(raw=one_odd_value())
@example(raw={"model": {"options": {1: "x", "y": 2}}})  # option names become keyword arguments
@example(raw={"train": {"seed": 2**32}})  # numpy and scikit-learn refuse seeds from 2**32 on
def test_one_odd_value_in_a_valid_config_gives_a_config_or_a_config_error(tmp_path, raw):
    _check_raw(tmp_path, raw)


def _check_raw(tmp_path: Any, raw: Any) -> None:
    """``config_from_dict`` and ``load_config`` of the same data agree, and both keep the promises."""
    try:
        direct = config_from_dict({} if raw is None else raw)  # a null document is an empty file
    except ConfigError as error:
        _assert_one_line(error)
        direct = None
    else:
        _assert_valid(direct)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    from_file = _load_or_reject(path)
    assert (direct is None) == (from_file is None)


@fuzz(300)
@given(
    overrides=st.lists(
        st.one_of(
            st.text(max_size=30),
            st.builds(
                "{}.{}={}".format,
                st.sampled_from(list(SECTIONS)) | st.text(max_size=6),
                st.sampled_from(KEY_NAMES) | st.text(max_size=6),
                yaml_text | yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
            ),
        ),
        max_size=5,
    ),
    base=st.none() | yaml_text,
)
def test_any_overrides_on_any_base_file_give_a_config_or_a_config_error(tmp_path, overrides, base):
    path = None
    if base is not None:
        path = tmp_path / "config.yaml"
        path.write_text(base, encoding="utf-8")
    _load_or_reject(path, overrides)


@fuzz(300)
@given(raw=valid_raw_configs)
def test_every_valid_sparse_config_loads_with_its_values_and_defaults_elsewhere(raw):
    config = config_from_dict(raw)
    _assert_valid(config)
    defaults = Config()
    for name in SECTIONS:
        for f in FIELDS[name]:
            expected = raw.get(name, {}).get(f.name, getattr(getattr(defaults, name), f.name))
            if HINTS[name][f.name] is float:
                expected = float(expected)
            assert getattr(getattr(config, name), f.name) == expected


@fuzz(300)
@given(raw=valid_raw_configs)
def test_a_valid_config_round_trips_through_to_dict_and_through_yaml(tmp_path, raw):
    config = config_from_dict(raw)
    assert config_from_dict(config.to_dict()) == config
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(path) == config


@fuzz(200)
@given(raw=valid_raw_configs)
def test_every_value_of_a_valid_config_can_be_given_again_as_an_override(raw):
    config = config_from_dict(raw)
    overrides = [
        f"{name}.{key}={yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()}"
        for name, values in config.to_dict().items()
        for key, value in values.items()
        if value is not None  # key=  (empty) means "unset", which only optional fields accept
    ]
    overridden = load_config(None, overrides)
    for name, values in config.to_dict().items():
        for key, value in values.items():
            if value is not None:
                assert getattr(getattr(overridden, name), key) == value
