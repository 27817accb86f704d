"""What a study tells its user: the trials table, ``best.yaml``, the time pruning saved, and the
parameter importances and optimisation history as PNGs (matplotlib; Optuna computes importances).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit import tables
from rnnkit.config import Config, load_config
from rnnkit.figures import save_png
from rnnkit.io import atomic_write_text
from rnnkit.runs import RunDir
from rnnkit.tune.studydir import StudyDir

logger = logging.getLogger(__name__)

STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def state_name(trial: Any) -> str:
    return STATE_NAMES.get(trial.state.name, trial.state.name.lower())


def score(trial: Any) -> float | None:
    """The validation score of the trial's best epoch (Optuna keeps a pruned trial's last one)."""
    if trial.state.name not in ("COMPLETE", "PRUNED"):
        return None
    return trial.user_attrs.get("score", trial.value)


def trials_table(
    trials: Sequence[Any], keys: Sequence[str], monitor: str
) -> tuple[list[str], list[list[Any]]]:
    """One row per trial: state, score, test accuracy, epochs, wall time, parameters, error."""
    headers = ["trial", "state", monitor, "test_accuracy", "epochs", "time_s", *keys, "error"]
    rows = []
    for trial in sorted(trials, key=lambda trial: trial.number):
        attrs = trial.user_attrs
        rows.append(
            [
                trial.number,
                state_name(trial),
                score(trial),
                attrs.get("test_accuracy"),
                attrs.get("epochs"),
                _rounded(attrs.get("wall_s")),
                *(trial.params.get(key) for key in keys),
                attrs.get("error"),
            ]
        )
    return headers, rows


def write_tables(study_dir: StudyDir, headers: list[str], rows: list[list[Any]]) -> None:
    tables.write_csv(study_dir.table_csv, headers, rows)
    atomic_write_text(study_dir.table_markdown, tables.render(headers, rows, markdown=True) + "\n")


def write_best_config(study_dir: StudyDir, best: Any, monitor: str, base: Config, finished: int) -> None:
    """The best trial's config as it ran (so it retrains to the same numbers), with the base's
    display settings, and a header saying where it comes from."""
    trial_config = load_config(RunDir(study_dir.trial_dir(best.number)).config_file)
    train = dataclasses.replace(trial_config.train, progress=base.train.progress, loggers=base.train.loggers)
    cfg = dataclasses.replace(trial_config, train=train)
    attrs = best.user_attrs
    header = (
        f"# rnnkit tune: the best of {finished} finished trials in {study_dir.path} is trial {best.number}:\n"
        f"# {monitor} {best.value:.4f}, test accuracy {attrs.get('test_accuracy', math.nan):.4f}, "
        f"test macro-F1 {attrs.get('test_macro_f1', math.nan):.4f}.\n"
        f"# Train it again (the same numbers on CPU): rnnkit train --config {study_dir.best_config}\n"
    )
    atomic_write_text(study_dir.best_config, header + cfg.to_yaml())


def pruning_savings(trials: Sequence[Any]) -> str | None:
    """How much training the pruned trials skipped, at their own measured time per epoch."""
    pruned = [trial for trial in trials if trial.state.name == "PRUNED" and trial.user_attrs.get("epochs")]
    if not pruned:
        return None
    skipped_s = 0.0
    for trial in pruned:
        attrs = trial.user_attrs
        per_epoch = attrs["train_time_s"] / attrs["epochs"]
        skipped_s += max(attrs["max_epochs"] - attrs["epochs"], 0) * per_epoch
    studied_s = sum(trial.user_attrs.get("wall_s", 0.0) for trial in trials)
    mean_epochs = sum(trial.user_attrs["epochs"] for trial in pruned) / len(pruned)
    return (
        f"pruning stopped {len(pruned)} of {len(trials)} trials, after {mean_epochs:.1f} epochs on average; "
        f"the epochs they skipped would have taken about {skipped_s:.0f} s more at their own epoch times "
        f"(at most: early stopping might have ended some sooner), against {studied_s:.0f} s for all trials"
    )


def plot_history(trials: Sequence[Any], monitor: str, maximize: bool, path: Any) -> None:
    """Each finished trial's score (its best epoch's, pruned ones too) and the best so far."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    done = sorted(
        (t for t in trials if score(t) is not None and math.isfinite(score(t))), key=lambda t: t.number
    )
    for state, style in (
        ("COMPLETE", {"marker": "o", "color": "tab:blue"}),
        ("PRUNED", {"marker": "x", "color": "grey"}),
    ):
        chosen = [trial for trial in done if trial.state.name == state]
        axes.scatter(
            [t.number for t in chosen], [score(t) for t in chosen], label=STATE_NAMES[state], **style
        )
    complete = [trial for trial in done if trial.state.name == "COMPLETE"]
    best, steps = None, []
    for trial in complete:
        if best is None or (trial.value > best if maximize else trial.value < best):
            best = trial.value
        steps.append((trial.number, best))
    if steps:
        axes.step(*zip(*steps, strict=True), where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(monitor.replace("_", " "))
    axes.grid(alpha=0.3)
    axes.legend()
    save_png(figure, path)


def plot_importances(importances: dict[str, float], path: Any) -> None:
    figure = Figure(figsize=(7, 0.5 * len(importances) + 1.5), layout="constrained")
    axes = figure.subplots()
    names = list(importances)[::-1]
    axes.barh(names, [importances[name] for name in names], color="tab:blue")
    axes.set_xlabel("importance (fANOVA, share of the score's variance)")
    axes.grid(alpha=0.3, axis="x")
    save_png(figure, path)


def importances(study: Any) -> dict[str, float] | None:
    """Optuna's fANOVA importances over the complete trials, or None while there are too few."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as error:  # e.g. no parameter varied among complete trials
        logger.info("no parameter importances yet: %s", error)
        return None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
