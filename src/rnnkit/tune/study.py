"""``rnnkit tune``: an Optuna study whose trials are ordinary rnnkit runs.

- **Sampler**: TPE, seeded; its first ``max(5, trials // 4)`` trials are random, to give it data.
- **Pruner**: Optuna's median rule over the per-epoch validation score (``train.monitor``): after
  5 complete trials, a trial whose best score so far is worse than the median of the other trials
  at the same epoch stops, from its second epoch on. Successive halving and Hyperband need budgets
  in resource units, and an rnnkit trial has a handful of epochs; the median rule needs no such
  setting and only ever stops a trial after comparing it at the same epoch. ``--pruner none``
  turns it off.
- **Storage**: SQLite in the study folder. A trial's run folder checkpoints every epoch, so a study
  killed at any moment (even SIGKILL) continues with ``--resume``: trials that were running are
  resumed from their last checkpoint, then new ones are asked for until ``--trials`` have finished
  (complete or pruned). A failed trial (an error, a NaN loss) is recorded with its error and does
  not count; the study goes on with the next.
- **Parallel trials** (``--jobs N``): N worker processes share the storage; each trial gets
  ``cores // N`` threads (at least 1), so the trials do not fight over the cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from rnnkit import __version__, tables
from rnnkit.config import Config, config_from_dict, load_config
from rnnkit.errors import RnnkitError
from rnnkit.extras import require
from rnnkit.io import exclusive_lock
from rnnkit.tune import report
from rnnkit.tune.pruning import PRUNED_AT, TrialPruning
from rnnkit.tune.runner import quiet_training, run_or_resume
from rnnkit.tune.space import SearchSpace, apply, load_space, parse_space
from rnnkit.tune.studydir import NOT_COMPARED, StudyDir, StudyError, first_difference

logger = logging.getLogger(__name__)

STUDY_NAME = "rnnkit"
SCORE_OF_MONITOR = {
    "val_accuracy": "accuracy",
    "val_macro_f1": "macro_f1",
    "val_micro_f1": "micro_f1",
    "val_loss": "loss",
}
"""The validation score each resolved ``train.monitor`` reads (``auto`` resolves per run, by task)."""
FAILURES_IN_A_ROW = 5
"""A worker stops after this many failed trials in a row: the cause is the setup, not the trials."""


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, picklable for worker processes."""

    study_dir: str
    config: dict[str, Any]
    space: dict[str, dict[str, Any]]
    monitor: str
    trials: int
    deadline: float | None
    pruner: str
    threads: int | None
    seed: int
    verbose: bool
    packages: tuple[str, ...] = ()  # --include-package modules, imported again by worker processes


@dataclass
class TuneResult:
    table: str
    notes: list[str]


def require_optuna() -> Any:
    optuna = require("optuna", "tune", "rnnkit tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune(
    study_dir: str | os.PathLike[str],
    *,
    config: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    space: str | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
    jobs: int = 1,
    pruner: str = "median",
    resume: bool = False,
    verbose: bool = False,
    packages: tuple[str, ...] = (),
) -> TuneResult:
    """Run (or continue) the study in ``study_dir`` until ``trials`` trials have finished."""
    optuna = require_optuna()
    if jobs < 1:
        raise RnnkitError(f"--jobs must be at least 1, got {jobs}")
    folder = StudyDir(study_dir)
    base, search, record = _definition(folder, config, overrides, space, trials, resume)
    folder.lock()
    try:
        folder.write_record(record)
        direction = "minimize" if record["monitor"] == "val_loss" else "maximize"
        study = optuna.create_study(
            storage=_storage(folder), study_name=STUDY_NAME, direction=direction, load_if_exists=True
        )
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        orphans = [trial.number for trial in running]  # their process died: we hold the study's lock
        if orphans:
            logger.info("continuing trial(s) %s from their last checkpoint", ", ".join(map(str, orphans)))
        plan = Plan(
            study_dir=str(folder.path),
            config=base.to_dict(),
            space=search.spec,
            monitor=record["monitor"],
            trials=record["trials"],
            deadline=None if timeout_s is None else time.time() + timeout_s,
            pruner=pruner,
            threads=_threads_per_trial(jobs),
            seed=base.train.seed + len(study.get_trials(deepcopy=False)),
            verbose=verbose,
            packages=tuple(packages),
        )
        if jobs == 1:
            work(plan, orphans)
        else:
            _work_in_processes(plan, orphans, jobs)
        return summarize(folder, study, base, search, record["monitor"])
    finally:
        folder.unlock()


def work(plan: Plan, orphans: list[int], worker: int = 0, parent: int | None = None) -> None:
    """One worker: finish ``orphans``, then ask for and run trials until the study has enough.

    A worker process passes its ``parent``'s id and stops asking once that process is gone.
    """
    optuna = require_optuna()
    folder = StudyDir(plan.study_dir)
    base = config_from_dict(plan.config)
    search = parse_space(plan.space, base)
    storage = _storage(folder)
    startup = max(5, plan.trials // 4)
    study = optuna.load_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=plan.seed + 7919 * worker, n_startup_trials=startup),
        pruner=_pruner(optuna, plan.pruner),
    )
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    failures = 0
    for number in orphans:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        run_trial(study, optuna.trial.Trial(study, trial_id), base, search, plan)
    while failures < FAILURES_IN_A_ROW:
        with exclusive_lock(folder.ask_lock_file):  # count and ask as one step, across workers
            if plan.deadline is not None and time.time() >= plan.deadline:
                logger.info("--timeout reached: no new trials")
                return
            if parent is not None and os.getppid() != parent:
                return  # the study's process is gone
            states = ("COMPLETE", "PRUNED", "RUNNING")
            taken = sum(trial.state.name in states for trial in study.get_trials(deepcopy=False))
            if taken >= plan.trials:
                return
            trial = study.ask()
        failures = 0 if run_trial(study, trial, base, search, plan) else failures + 1
    logger.warning(
        "%d trials in a row failed (see the error column of %s); fix the cause, then --resume",
        FAILURES_IN_A_ROW,
        folder.table_markdown,
    )


def run_trial(study: Any, trial: Any, base: Config, search: SearchSpace, plan: Plan) -> bool:
    """Train one trial into ``trials/<number>`` and tell the study how it ended; False if it failed."""
    folder = StudyDir(plan.study_dir)
    started = time.perf_counter()
    previous_s = trial.user_attrs.get("wall_s", 0.0)  # a resumed trial adds to its first part
    params: dict[str, Any] = {}
    try:
        params = search.suggest(trial)
        cfg = apply(base, params)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))
        trial.set_user_attr("run_dir", f"trials/{trial.number}")
        trial.set_user_attr("max_epochs", cfg.train.epochs)
        callbacks = [TrialPruning(trial)]
        with quiet_training(not plan.verbose):
            metrics = run_or_resume(cfg, folder.trial_dir(trial.number), callbacks, plan.threads)
    except Exception as error:  # any dead trial: recorded, and the study goes on
        message = _one_line(error)
        logger.debug("trial %d failed", trial.number, exc_info=True)
        trial.set_user_attr("error", message)
        trial.set_user_attr("wall_s", previous_s + time.perf_counter() - started)
        study.tell(trial, state=_state("FAIL"))
        logger.warning("trial %d failed: %s", trial.number, message)
        _write_progress(folder, study, base, search, plan.monitor)
        return False
    attrs = {
        "wall_s": previous_s + time.perf_counter() - started,
        "epochs": metrics["epochs_trained"],
        "train_time_s": metrics["train_time_s"],
        "monitor": metrics["monitor"],  # resolved: auto becomes val_accuracy or val_micro_f1
        "test_accuracy": (metrics["test"] or {}).get("accuracy", math.nan),  # None: data.test_size 0
        "test_macro_f1": (metrics["test"] or {}).get("macro_f1", math.nan),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    score = metrics["validation"][SCORE_OF_MONITOR[metrics["monitor"]]]
    trial.set_user_attr("score", score)
    pruned = PRUNED_AT in trial.user_attrs
    if pruned:
        study.tell(trial, state=_state("PRUNED"))
    else:
        study.tell(trial, score)
    shown = " ".join(f"{key}={tables.cell(value)}" for key, value in params.items())
    logger.info(
        "trial %d %s: %s %.4f, test accuracy %.4f, epochs %d, %.1f s | %s",
        trial.number,
        f"pruned after epoch {trial.user_attrs[PRUNED_AT]}" if pruned else "complete",
        plan.monitor,
        score,
        attrs["test_accuracy"],
        attrs["epochs"],
        attrs["wall_s"],
        shown,
    )
    _write_progress(folder, study, base, search, plan.monitor)
    return True


def summarize(folder: StudyDir, study: Any, base: Config, search: SearchSpace, monitor: str) -> TuneResult:
    """Write the table, best.yaml and the plots; return the table and what to say about them."""
    trials = study.get_trials(deepcopy=False)
    monitor = _resolved_monitor(trials, monitor)
    headers, rows = _write_progress(folder, study, base, search, monitor)
    notes = []
    best = _best(study)
    finished = sum(trial.state.name in ("COMPLETE", "PRUNED") for trial in trials)
    failed = sum(trial.state.name == "FAIL" for trial in trials)
    notes.append(f"{finished} finished trials ({failed} failed) in {folder.path}")
    if best is not None:
        notes.append(
            f"best: trial {best.number}, {monitor} {best.value:.4f}, test accuracy "
            f"{best.user_attrs['test_accuracy']:.4f}; "
            f"train it with: rnnkit train --config {folder.best_config}"
        )
    savings = report.pruning_savings(trials)
    if savings:
        notes.append(savings)
    report.plot_history(trials, monitor, study.direction.name == "MAXIMIZE", folder.history_plot)
    importances = report.importances(study)
    if importances:
        report.plot_importances(importances, folder.importances_plot)
        notes.append("importances: " + ", ".join(f"{key} {value:.2f}" for key, value in importances.items()))
    return TuneResult(tables.render(headers, rows), notes)


def _write_progress(
    folder: StudyDir, study: Any, base: Config, search: SearchSpace, monitor: str
) -> tuple[list[str], list[list[Any]]]:
    """The trials table and best.yaml as of now, so a running study can be watched."""
    trials = study.get_trials(deepcopy=False)
    monitor = _resolved_monitor(trials, monitor)
    headers, rows = report.trials_table(trials, [param.key for param in search.params], monitor)
    report.write_tables(folder, headers, rows)
    best = _best(study)
    if best is not None:
        finished = sum(trial.state.name in ("COMPLETE", "PRUNED") for trial in trials)
        report.write_best_config(folder, best, monitor, base, finished)
    return headers, rows


def _resolved_monitor(trials: Any, monitor: str) -> str:
    """``train.monitor`` as the finished trials resolved it (``auto`` follows the data's task)."""
    resolved = {trial.user_attrs["monitor"] for trial in trials if "monitor" in trial.user_attrs}
    return resolved.pop() if monitor == "auto" and len(resolved) == 1 else monitor


def _definition(
    folder: StudyDir,
    config: str | None,
    overrides: list[str] | tuple[str, ...],
    space: str | None,
    trials: int | None,
    resume: bool,
) -> tuple[Config, SearchSpace, dict[str, Any]]:
    """The study's base config, space and record: new, or checked against the stored ones."""
    from rnnkit.training.experiment import absolute_paths

    given = absolute_paths(load_config(config, overrides)) if config or overrides else None
    if not resume:
        if space is None:
            raise StudyError("a new study needs --space (a YAML search space, e.g. configs/tune-space.yaml)")
        if trials is None:
            raise StudyError("a new study needs --trials N (how many trials should finish)")
        base = given or absolute_paths(load_config())
        search = load_space(space, base)
        if folder.holds_study():
            stored = folder.read_record()
            difference = first_difference(base.to_dict(), stored["config"], NOT_COMPARED) or first_difference(
                search.spec, stored["space"]
            )
            if difference:
                raise StudyError(
                    f"{folder.path} holds a study of another config or space ({difference}); "
                    "choose another --study-dir"
                )
            raise StudyError(f"{folder.path} already holds this study; continue it with --resume")
        if folder.path.exists() and any(not path.name.startswith(".") for path in folder.path.iterdir()):
            raise StudyError(
                f"{folder.path} is not empty and holds no rnnkit study; choose another --study-dir"
            )
    else:
        if not folder.holds_study():
            raise StudyError(f"{folder.path} holds no study to resume; start one without --resume")
        stored = folder.read_record()
        base = config_from_dict(stored["config"])
        if given is not None:
            difference = first_difference(given.to_dict(), stored["config"], NOT_COMPARED)
            if difference:
                raise StudyError(
                    f"{folder.path} was made for another config ({difference}); resume without --config "
                    "and --set, or start a new --study-dir"
                )
            base = given
        search = parse_space(stored["space"], base, str(folder.record_file))
        if space is not None:
            difference = first_difference(load_space(space, base).spec, stored["space"])
            if difference:
                raise StudyError(
                    f"{folder.path} was made for another search space ({difference}); resume without "
                    "--space, or start a new --study-dir"
                )
        trials = stored["trials"] if trials is None else trials
    if trials < 1:
        raise StudyError(f"--trials must be at least 1, got {trials}")
    record = {
        "rnnkit_version": __version__,
        "monitor": base.train.monitor,
        "trials": trials,
        "space": search.spec,
        "config": base.to_dict(),
    }
    return base, search, record


def _work_in_processes(plan: Plan, orphans: list[int], jobs: int) -> None:
    context = multiprocessing.get_context("spawn")
    parent = os.getpid()
    workers = [
        context.Process(target=_worker_main, args=(plan, orphans[i::jobs], i, parent)) for i in range(jobs)
    ]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join()
    except KeyboardInterrupt:
        for process in workers:  # they got the same Ctrl-C; let them leave their trials resumable
            process.join()
        raise


def _worker_main(plan: Plan, orphans: list[int], worker: int, parent: int) -> None:
    """Entry point of a worker process: dies with the study's process, logs like the CLI."""
    _die_with_parent()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("rnnkit")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if plan.verbose else logging.INFO)
    sys.path.insert(0, os.getcwd())
    for package in plan.packages:  # a spawned process starts without the user's registered models
        importlib.import_module(package)
    with contextlib.suppress(KeyboardInterrupt):  # the trial stays resumable
        work(plan, orphans, worker, parent)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the study's process dies (even by SIGKILL), so a
    resumed study never races a leftover worker for the same trial."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _threads_per_trial(jobs: int) -> int | None:
    """Threads per trial under ``--jobs``: the cores shared out; None leaves a lone trial's config."""
    if jobs == 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if jobs > cores:
        logger.warning("--jobs %d on %d cores: trials will share cores and each run slower", jobs, cores)
    return max(1, cores // jobs)


def _storage(folder: StudyDir) -> Any:
    import optuna

    # Worker processes write to one SQLite file: wait for its lock rather than fail at once.
    return optuna.storages.RDBStorage(folder.storage_url, engine_kwargs={"connect_args": {"timeout": 120}})


def _pruner(optuna: Any, name: str) -> Any:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    raise RnnkitError(f"--pruner must be median or none, got {name!r}")


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _state(name: str) -> Any:
    import optuna

    return optuna.trial.TrialState[name]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, RnnkitError) else f"{type(error).__name__}: {text}"
