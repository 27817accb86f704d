"""The search space of ``rnnkit tune``: config keys and the values to try, read from YAML.

::

    train.lr:          {type: log, low: 1.0e-4, high: 1.0e-2}
    model.hidden_size: {type: int, low: 32, high: 256, step: 32}
    model.dropout:     {type: float, low: 0.0, high: 0.5}
    model.name:        {type: categorical, choices: [gru, lstm]}

Any config key can be searched (``model.options.NAME`` too). Everything is checked when the file
is read, before any trial runs: the key exists, the range is possible, and the lowest, the highest
and every listed value passes the config's own validation on top of the base config. Reading
the space needs no Optuna; only :meth:`SearchSpace.suggest` talks to a trial.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.config import SECTIONS, Config, config_from_dict, did_you_mean, parse_yaml
from rnnkit.errors import ConfigError

TYPES = {
    "int": ("low", "high", "step"),
    "float": ("low", "high", "step"),
    "log": ("low", "high"),
    "categorical": ("choices",),
}
REQUIRED = {
    "int": ("low", "high"),
    "float": ("low", "high"),
    "log": ("low", "high"),
    "categorical": ("choices",),
}
OBJECTIVE_KEY = "train.monitor"


@dataclass(frozen=True)
class Param:
    """One searched key: a range (``int``, ``float``, ``log``) or a list of ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    integer: bool = False  # drawn as integers: type int, or log over an integer key

    def suggest(self, trial: Any) -> Any:
        """Draw this key's value for an Optuna trial (or return the value the trial already has)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        log = self.kind == "log"
        if self.integer:
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=log)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    spec: dict[str, dict[str, Any]]  # as written, for the study's record

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {param.key: param.suggest(trial) for param in self.params}


def load_space(path: str | Path, base: Config) -> SearchSpace:
    """Read and check a space file against the config whose keys it searches."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space not found: {path} (see configs/tune-space.yaml for an example)")
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    return parse_space(raw, base, path.name)


def parse_space(raw: Any, base: Config, source: str = "space") -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{source} must map config keys to what to try, e.g. "
            "'train.lr: {type: log, low: 1.0e-4, high: 1.0e-2}'"
        )
    params = tuple(_param(str(key), spec, base, source) for key, spec in raw.items())
    return SearchSpace(params, {param.key: dict(raw[param.key]) for param in params})


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    """``cfg`` with ``{"section.key": value}`` set, validated like any config."""
    raw = cfg.to_dict()
    for key, value in values.items():
        section, name, option = _split(key)
        if option is None:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section][name] = {**raw[section][name], option: value}
    return config_from_dict(raw)


def _param(key: str, spec: Any, base: Config, source: str) -> Param:
    where = f"{source}: {key}"
    section, name, option = _split(key, source)
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown config section {section!r}{did_you_mean(section, SECTIONS)}")
    fields = {field.name: field for field in dataclasses.fields(SECTIONS[section])}
    if name not in fields or (option is not None and (section, name) != ("model", "options")):
        hint = did_you_mean(name, fields, section)
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
    if key == OBJECTIVE_KEY:
        raise ConfigError(f"{where}: train.monitor is what the study optimises; run one study per monitor")
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where} must be a mapping with a type, e.g. {{type: int, low: 32, high: 256}}")
    kind = spec["type"]
    if kind not in TYPES:
        raise ConfigError(
            f"{where}: type must be one of {', '.join(TYPES)}; got {kind!r}{did_you_mean(str(kind), TYPES)}"
        )
    for field_name in spec:
        if field_name != "type" and field_name not in TYPES[kind]:
            hint = did_you_mean(str(field_name), TYPES[kind])
            raise ConfigError(f"{where}: a {kind} range has no {field_name!r}{hint}")
    missing = [field_name for field_name in REQUIRED[kind] if field_name not in spec]
    if missing:
        raise ConfigError(f"{where}: a {kind} range needs {' and '.join(missing)}")
    integer_key = option is None and _is_integer_field(SECTIONS[section], name)
    param = (
        _categorical(where, spec["choices"], key) if kind == "categorical" else _range(where, kind, spec, key)
    )
    if kind == "float" and integer_key:
        raise ConfigError(f"{where} takes whole numbers; use type int (or log for a log scale)")
    if kind == "log" and integer_key:
        param = dataclasses.replace(param, integer=True)
    if param.integer and not all(_is_whole(v) for v in (param.low, param.high)):
        raise ConfigError(f"{where}: low and high of an integer range must be whole numbers")
    for label, value in _extremes(param):
        try:
            apply(base, {key: value})
        except ConfigError as error:
            raise ConfigError(f"{where}: {label} {value!r} is impossible: {error}") from None
    if key == "model.name":
        _check_model_names(where, param.choices)
    return param


def _range(where: str, kind: str, spec: dict[str, Any], key: str) -> Param:
    low, high, step = spec["low"], spec["high"], spec.get("step")
    for label, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and not _is_number(value):
            raise ConfigError(f"{where}: {label} must be a number, got {value!r}")
    low, high = _number(low), _number(high)
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None:
        step = _number(step)
        if step <= 0:
            raise ConfigError(f"{where}: step must be positive, got {step}")
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9 * max(1.0, count):
            fitting = low + math.floor(count) * step
            raise ConfigError(
                f"{where}: high - low ({high - low:g}) must be a multiple of step ({step:g}); "
                f"e.g. high {fitting:g}"
            )
    integer = kind == "int"
    if integer and step is not None and not _is_whole(step):
        raise ConfigError(f"{where}: step of an int range must be a whole number, got {step}")
    return Param(key, kind, low, high, step, integer=integer)


def _categorical(where: str, choices: Any, key: str) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, e.g. [gru, lstm]")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(
                f"{where}: choices must be numbers, strings, true/false or null; got {choice!r}"
            )
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: choices repeat a value: {choices}")
    return Param(key, "categorical", choices=tuple(choices))


def _extremes(param: Param) -> list[tuple[str, Any]]:
    if param.kind == "categorical":
        return [("choice", choice) for choice in param.choices]
    cast = int if param.integer else float
    return [("low", cast(param.low)), ("high", cast(param.high))]


def _check_model_names(where: str, choices: tuple[Any, ...]) -> None:
    from rnnkit.models import available

    names = available()
    for choice in choices:
        if choice not in names:
            raise ConfigError(
                f"{where}: {choice!r} is not a registered model{did_you_mean(str(choice), names)} "
                f"(available: {', '.join(names)})"
            )


def _split(key: str, source: str = "space") -> tuple[str, str, str | None]:
    """``section.key`` -> (section, key, None); ``model.options.name`` -> (model, options, name)."""
    parts = key.split(".")
    if len(parts) in (2, 3) and all(parts):
        return parts[0], parts[1], parts[2] if len(parts) == 3 else None
    raise ConfigError(f"{source}: key {key!r} must be section.key, e.g. model.hidden_size")


def _is_integer_field(section_type: type, name: str) -> bool:
    hint = typing.get_type_hints(section_type)[name]
    options = typing.get_args(hint) or (hint,)
    return int in options and float not in options


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    try:  # YAML 1.1 reads 1e-3 (no dot) as a string
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> float:
    return value if isinstance(value, int) else float(value)


def _is_whole(value: Any) -> bool:
    return float(value).is_integer()
