"""``rnnkit.fit(texts, labels, ...)``: Python lists in, a trained model out, no files to write first.

The documents go straight to :func:`rnnkit.data.prepare_data` (``data.dataset: memory``); the run
is the same as ``rnnkit train`` writes (a temporary folder when ``run_dir`` is None), and what comes
back is what ``rnnkit.load`` gives for it. As with a CSV file without a test part, ``data.test_size``
of the documents is held out for the run's test figures; ``test_size=0`` trains on all but the
validation part.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnkit.config import SECTIONS, Config, config_from_dict, load_config
from rnnkit.data.corpus import from_lists
from rnnkit.errors import ConfigError
from rnnkit.predict import Predictor
from rnnkit.runs import open_run


def fit(
    texts: Sequence[str],
    labels: Sequence[Any],
    config: str | os.PathLike[str] | Config | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Predictor:
    """Train on ``texts`` and ``labels`` (one label, or one list of labels, per text) and return the
    trained model, as :func:`rnnkit.load` would give it.

    ``config`` is a YAML file, a :class:`~rnnkit.config.Config` or None (the defaults);
    ``overrides`` set any config key by its name (``hidden_size=64``) or, where a name is in several
    sections, by ``section__key`` (``model__dropout=0.2``). ``run_dir`` keeps the run folder
    (metrics, reports, checkpoints); by default it is a temporary folder, removed afterwards.
    """
    from rnnkit.training import experiment  # training is imported only when a model is trained

    cfg = configure(config, overrides)
    documents = (from_lists(texts, labels, cfg.data.task), None)
    if run_dir is not None:
        experiment.train(cfg, run_dir, documents=documents)
        return open_run(run_dir, cfg.train.device).predictor()
    with tempfile.TemporaryDirectory(prefix="rnnkit-fit-") as folder:
        experiment.train(cfg, Path(folder) / "run", documents=documents)
        return open_run(Path(folder) / "run", cfg.train.device).predictor()


def configure(config: str | os.PathLike[str] | Config | None, overrides: dict[str, Any]) -> Config:
    """``config`` with ``overrides`` applied and validated, reading documents from memory."""
    base = config if isinstance(config, Config) else load_config(config)
    raw = base.to_dict()
    for name, value in overrides.items():
        section, key = config_key(name)
        raw[section][key] = value
    cfg = config_from_dict(raw)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="memory"))


def config_key(name: str) -> tuple[str, str]:
    """``hidden_size`` -> ``("model", "hidden_size")``; ``model__dropout`` names the section."""
    section, sep, key = name.partition("__")
    if sep:
        if section not in SECTIONS or key not in _fields(section):
            raise ConfigError(f"{name!r} is not a config key; use section__key, e.g. model__hidden_size")
        return section, key
    owners = [section for section in SECTIONS if name in _fields(section)]
    if not owners:
        raise ConfigError(f"{name!r} is not a config key (see the README's config table)")
    if len(owners) > 1:
        raise ConfigError(f"{name!r} is a key of {' and '.join(owners)}; say which: {owners[0]}__{name}")
    return owners[0], name


def _fields(section: str) -> set[str]:
    return {field.name for field in dataclasses.fields(SECTIONS[section])}
