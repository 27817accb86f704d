"""Run configuration: dataclasses per YAML section, validated once at the edge.

A config file has up to four sections (``data``, ``embeddings``, ``model``, ``train``); every key
is optional and falls back to the defaults below. ``load_config`` reads the YAML, applies
``--set section.key=value`` overrides, and checks names, types, choices and ranges, so the rest
of the code can trust a :class:`Config` without checking it again.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnkit.errors import ConfigError, shorten

logger = logging.getLogger(__name__)

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
DEFAULT_TOKEN_PATTERN = r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]"
MAX_YAML_VALUES = 100_000
"""The most values a config may hold with its YAML aliases expanded (a real one holds a few dozen)."""
MAX_THREADS = 4 * (os.cpu_count() or 1)
"""``train.num_threads`` above this only adds scheduling overhead (and 100,000 threads exhaust the
process's memory)."""


def _choice(default: str, *choices: str, prefix: str | None = None) -> Any:
    """A string field restricted to ``choices`` (or starting with ``prefix``)."""
    return field(default=default, metadata={"choices": choices, "prefix": prefix})


def _at_least(default: Any, minimum: float) -> Any:
    return field(default=default, metadata={"min": minimum})


def _fraction(default: float) -> Any:
    return field(default=default, metadata={"min": 0.0, "max": 0.99})


@dataclass
class DataConfig:
    """Where the documents come from and how they become token ids."""

    dataset: str = _choice("20newsgroups", "20newsgroups", "folder", "csv", "jsonl", "memory")
    archive: str | None = None
    data_home: str | None = None
    path: str | None = None
    categories: list[str] | None = None
    remove: list[str] = field(default_factory=list, metadata={"items": ("headers", "footers", "quotes")})
    split: str = _choice("bydate", "bydate", "random")
    test_size: float = _fraction(0.2)
    val_size: float = _fraction(0.1)
    text_column: str = "text"
    label_column: str = "label"
    label_separator: str | None = None
    task: str = _choice("auto", "auto", "single", "multilabel")
    max_length: int = _at_least(400, 1)
    train_docs: int | None = _at_least(None, 1)
    tokenizer: str = "regex"
    lowercase: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    char_ngrams: int = _at_least(1, 1)
    min_freq: int = _at_least(2, 1)
    max_vocab: int | None = _at_least(50000, 2)
    cache_dir: str = "~/.cache/rnnkit"
    num_workers: int = _at_least(0, 0)


@dataclass
class EmbeddingsConfig:
    """Which word vectors initialise the embedding layer; a list of sources is concatenated."""

    source: str | list[str] = field(default="random", metadata={"nonempty": True, "unique": True})
    dim: int = _at_least(100, 1)
    freeze: bool = False
    limit: int | None = _at_least(None, 1)
    binary: bool | None = None

    @property
    def sources(self) -> list[str]:
        """``source`` as a list (a single name is a list of one)."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


@dataclass
class ModelConfig:
    """The classifier: a registered model name and its hyperparameters."""

    name: str = "lstm"
    hidden_size: int = _at_least(128, 1)
    num_layers: int = _at_least(1, 1)
    bidirectional: bool = False
    pooling: str = _choice("last", "last", "mean", "max", "attention")
    embedding_dropout: float = _fraction(0.0)
    dropout: float = _fraction(0.0)
    weight_drop: float = _fraction(0.0)
    unit_forget_bias: bool = False  # LSTM only: the forget gate starts open (bias 1), as in Keras
    head_dropout: float = _fraction(0.0)
    head_hidden: int = _at_least(0, 0)
    kernel: str = _choice("auto", "auto", "native")
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The optimisation loop, the device and what is saved along the way."""

    epochs: int = _at_least(10, 1)
    batch_size: int = _at_least(64, 1)
    eval_batch_size: int = _at_least(256, 1)
    lr: float = field(default=1e-3, metadata={"min": 0.0, "exclusive_min": True})
    optimizer: str = _choice("adam", "adam", "adamw", "sgd")
    weight_decay: float = _at_least(0.0, 0.0)
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    scheduler: str = _choice("none", "none", "cosine", "step", "plateau")
    grad_clip: float = _at_least(1.0, 0.0)
    embedding_update: str = _choice("dense", "dense", "rows")
    class_weights: str = _choice("none", "none", "balanced")
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 0.5})
    distill: float = _fraction(0.0)  # share of the loss fitting the TF-IDF baseline's probabilities
    adversarial_epsilon: float = _at_least(0.0, 0.0)  # FGM step on each document's embeddings; 0 = off
    patience: int = _at_least(3, 0)
    swa_epochs: int = _at_least(0, 0)
    monitor: str = _choice("auto", "auto", "val_accuracy", "val_macro_f1", "val_micro_f1", "val_loss")
    seed: int = field(default=42, metadata={"min": 0, "max": 2**32 - 1})  # numpy/scikit-learn seeds
    device: str = _choice("auto", "auto", "cpu", "cuda", prefix="cuda:")
    amp: bool = True
    deterministic: bool = False
    num_threads: int = field(
        default=0, metadata={"min": 0, "max": MAX_THREADS, "why": f"4 x the {os.cpu_count()} CPU cores here"}
    )
    flush_denormal: bool = True
    reuse_memory: bool = True
    baseline: bool = True
    init_from: str | None = None
    checkpoint_every: int = _at_least(0, 0)
    compile: bool = False
    progress: bool = True
    loggers: list[str] = field(default_factory=lambda: ["csv"], metadata={"items": ("csv", "tensorboard")})


@dataclass
class Config:
    """A whole run's configuration; ``to_dict`` round-trips through :func:`config_from_dict`."""

    data: DataConfig = field(default_factory=DataConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "embeddings": EmbeddingsConfig,
    "model": ModelConfig,
    "train": TrainConfig,
}


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply ``key=value`` overrides, validate."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        _apply_override(raw, override)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from plain data (a parsed YAML file or a saved run)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of sections {list(SECTIONS)}, got {_kind(raw)}")
    sections = {}
    for name, values in raw.items():
        section_type = SECTIONS.get(name)
        if section_type is None:
            raise ConfigError(f"unknown config section {_show(name)}{did_you_mean(str(name), SECTIONS)}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {_show(name)} must be a mapping of keys, got {_kind(values)}")
        sections[name] = _build_section(name, section_type, values)
    if "data" in sections:
        sections["data"] = _resolve_data_source(sections["data"])
    return Config(**sections)


_NEWSGROUPS_ONLY = {"remove": [], "categories": None, "archive": None, "data_home": None}
"""Settings only the 20 Newsgroups loader reads, at the value that means "not set"."""


def _resolve_data_source(data: DataConfig) -> DataConfig:
    """The data settings as they will be used: ``data.path`` decides the kind of data when the config
    still says 20 Newsgroups (which never reads it), and 20 Newsgroups settings are dropped for
    one's own data, each said in the log, so the saved config.yaml holds only what was used."""
    if data.path is not None and data.dataset == "20newsgroups":
        kind = _dataset_kind(data.path)
        logger.info("reading data.path as %s (data.dataset was 20newsgroups, which does not use it)", kind)
        data = dataclasses.replace(data, dataset=kind)
    if data.dataset == "20newsgroups":
        return data
    unused = [key for key, unset in _NEWSGROUPS_ONLY.items() if getattr(data, key) != unset]
    for key in unused:
        logger.warning("data.%s applies to 20 Newsgroups only; ignored for %s data", key, data.dataset)
    return dataclasses.replace(data, **{key: _NEWSGROUPS_ONLY[key] for key in unused})


def _dataset_kind(path: str) -> str:
    """``folder``, ``csv`` or ``jsonl`` for a data path, from its suffix or what the folder holds."""
    location = Path(path).expanduser()
    suffix = location.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    try:
        is_folder = location.is_dir()
    except OSError as error:  # e.g. a name longer than the file system allows
        shown = _show(str(path), 160)
        raise ConfigError(f"data.path {shown} cannot be looked at: {error.strerror}") from None
    if is_folder:
        for kind in ("csv", "jsonl"):
            if (location / f"train.{kind}").is_file() and (location / f"test.{kind}").is_file():
                return kind
        return "folder"
    raise ConfigError(
        f"data.path {_show(str(path), 160)} is neither a folder nor a .csv, .jsonl or .json file; "
        "set data.dataset to folder, csv or jsonl"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see configs/ for examples)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections {list(SECTIONS)}, got {_kind(data)}")
    return data


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` whose every failure is a one-line ConfigError saying where and what.

    PyYAML's constructors let builtin errors escape on malformed input (``!!int ''`` raises
    IndexError, ``!!bool x`` KeyError, a bad date ValueError, deep nesting RecursionError), so
    anything raised while parsing means the text is not usable YAML. Self-referential values
    (``&a [*a]``) and alias bombs are refused too: nothing downstream can copy, compare or save them.
    """
    return _check_shape(_safe_load(text, source), source)


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or getattr(error, "reason", None) or "invalid YAML"
        raise ConfigError(f"{source} is not valid YAML{where}: {_one_line(str(problem))}") from None
    except Exception as error:
        problem = _one_line(f"a value cannot be read ({type(error).__name__}: {error})")
        raise ConfigError(f"{source} is not valid YAML: {problem}") from None


def _check_shape(data: Any, source: str) -> Any:
    if _is_cyclic(data):
        raise ConfigError(f"{source} is not valid: a value refers to itself (&anchor ... *anchor)")
    if _expands_beyond(data, MAX_YAML_VALUES):
        raise ConfigError(
            f"{source} is not valid: its aliases (*anchor) expand to more than {MAX_YAML_VALUES:,} values; "
            "write the values out instead of nesting aliases"
        )
    return data


def _expands_beyond(root: Any, limit: int) -> bool:
    """Whether ``root`` counts more than ``limit`` values once every alias is expanded.

    YAML aliases share one object, so ``[*a, *a, ...]`` nested nine deep is small in memory, but
    anything that walks it (copying, comparing, printing, writing config.yaml) visits every
    expansion: 9 levels of 9 are 387 million values. The walk stops as soon as the limit is passed.
    """
    seen, stack = 0, [root]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _is_cyclic(root: Any) -> bool:
    """Depth-first walk (iterative, each container once) that finds a container inside itself."""
    entered: dict[int, bool] = {}  # id -> still on the current path
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, leaving = stack.pop()
        if leaving:
            entered[id(value)] = False
            continue
        if not isinstance(value, (list, dict)):
            continue
        if id(value) in entered:
            if entered[id(value)]:
                return True
            continue
        entered[id(value)] = True
        stack.append((value, True))
        stack.extend((item, False) for item in (value.values() if isinstance(value, dict) else value))
    return False


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``section.key=value``; the value is parsed as YAML, so ``3``, ``true``, ``[a, b]`` work."""
    key, sep, text = override.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"override {_show(override)} must look like section.key=value, e.g. train.epochs=3")
    try:
        value = _safe_load(text, "override") if text.strip() else None
    except ConfigError:
        value = text  # not YAML: take it as the plain string the user typed
    _check_shape(value, f"--set {key.strip()}")
    target = raw.setdefault(section, {})
    if target is None:
        target = raw[section] = {}
    if not isinstance(target, dict):
        raise ConfigError(f"config section {_show(section)} must be a mapping of keys, got {_kind(target)}")
    target[name] = value


def _build_section(section: str, section_type: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_type)}
    hints = typing.get_type_hints(section_type)
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {_show(f'{section}.{key}')}{did_you_mean(str(key), fields, section)}"
            )
        where = f"{section}.{key}"
        value = _check_type(where, value, hints[key])
        _check_constraints(where, value, fields[key].metadata)
        checked[key] = value
    return section_type(**checked)


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """Return ``value`` converted to ``hint`` where that loses nothing (int -> float), else raise."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where} must be set (got an empty value)")
    for option in options:
        if option is type(None):
            continue
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(where, value)
        if origin is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return _finite(where, value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, (list, tuple)):
            (item_type,) = typing.get_args(option) or (Any,)
            if item_type is str and not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where} must be a list of strings, got {_show(value)}")
            return list(value)
        if origin is list and isinstance(value, str):
            return [value]
        if origin is dict and isinstance(value, dict):
            (key_type, _) = typing.get_args(option) or (Any, Any)
            if key_type is str and not all(isinstance(key, str) for key in value):
                raise ConfigError(f"{where} keys must be names (strings), got {_show(list(value))}")
            return dict(value)
    expected = " or ".join(_type_name(option) for option in options)
    raise ConfigError(f"{where} must be {expected}, got {_kind(value)} {_show(value)}")


def _finite(where: str, value: int | float | str) -> float:
    """A float field's value; NaN, infinities and ints beyond float range would poison training."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number within float range, got {_show(value)}")
    return number


def _check_constraints(where: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices and value is not None and value not in choices:
        prefix = meta.get("prefix")
        if not (prefix and isinstance(value, str) and value.startswith(prefix)):
            allowed = ", ".join(choices) + (f", {prefix}N" if prefix else "")
            hint = did_you_mean(str(value), choices)
            raise ConfigError(f"{where} must be one of {allowed}; got {_show(value)}{hint}")
    items = meta.get("items")
    if items:
        unknown = [item for item in value if item not in items]
        if unknown:
            hint = did_you_mean(str(unknown[0]), items)
            raise ConfigError(f"{where} may only contain {', '.join(items)}; got {_show(unknown[0])}{hint}")
    if isinstance(value, list) and meta.get("nonempty") and not value:
        raise ConfigError(f"{where} must name at least one value, got an empty list")
    if isinstance(value, list) and meta.get("unique") and len(set(map(str, value))) < len(value):
        raise ConfigError(f"{where} lists a value twice: {_show(value)}")
    if value is None or isinstance(value, (bool, str, list, dict)):
        return
    if "min" in meta and (value < meta["min"] or (meta.get("exclusive_min") and value == meta["min"])):
        relation = "greater than" if meta.get("exclusive_min") else "at least"
        raise ConfigError(f"{where} must be {relation} {meta['min']}, got {_show(value)}")
    if "max" in meta and value > meta["max"]:
        why = f" ({meta['why']})" if "why" in meta else ""
        raise ConfigError(f"{where} must be at most {meta['max']}{why}, got {_show(value)}")


def did_you_mean(name: str, candidates: typing.Iterable[str], section: str | None = None) -> str:
    """``"; did you mean 'x'?"`` naming the closest candidate (in ``section``), or ``""``."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    if not match:
        return ""
    return f"; did you mean '{section}.{match[0]}'?" if section else f"; did you mean '{match[0]}'?"


def _show(value: Any, limit: int = 60) -> str:
    """A user's value for an error message: quoted, escaped onto one line and cut to ``limit``."""
    return shorten(repr(value), limit)


def _one_line(text: str, limit: int = 100) -> str:
    """A parser's message on one line and cut short: it may quote a whole line of the user's file."""
    return shorten(" ".join(text.split()), limit)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(origin, str(hint))


def _kind(value: Any) -> str:
    return {
        list: "a list",
        dict: "a mapping",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
