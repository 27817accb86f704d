"""``rnnkit ensemble``: finished runs combined into one classifier by averaging their probabilities.

Each member reads text with its own tokenizer, vocabulary and model, so runs that differ in seed,
cell, embeddings or length combine freely; they must share the class names and have been tested on
the same documents (the same data settings). Members trained with different seeds validated on
different parts of the training data, so an ensemble is scored on the test split, and on the
validation split only where the members share it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.baseline import LinearBaseline, fit_temperature
from rnnkit.errors import ConfigError
from rnnkit.inference import Predictions, predict_dataset
from rnnkit.runs import RunDir, TrainedRun, open_run
from rnnkit.runs.ensemble import EnsembleSpec, check_target, read_ensemble, write_ensemble
from rnnkit.runtime import configure_runtime, resolve_device
from rnnkit.tasks import MULTILABEL, SINGLE
from rnnkit.training.metrics import per_class_report, summarize

logger = logging.getLogger(__name__)

__all__ = ["create_ensemble", "evaluate_ensemble"]


def create_ensemble(
    runs: Sequence[str | os.PathLike[str]],
    run_dir: str | os.PathLike[str],
    *,
    with_baseline: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score the averaged members on their test (and shared validation) split and write the folder.

    ``with_baseline`` adds the first run's TF-IDF baseline as one more member, its scores turned
    into probabilities at the scale that fits that run's validation split best.
    """
    if len(runs) + with_baseline < 2:
        raise ConfigError(
            f"an ensemble needs at least two members, got {len(runs)} run(s); add runs or --with-baseline"
        )
    paths = [Path(run).absolute() for run in runs]
    if len(set(paths)) < len(paths):
        raise ConfigError("a run is named twice; an ensemble's members must be different runs")
    if Path(run_dir).absolute() in paths:
        raise ConfigError(f"--run-dir {run_dir} is one of the members; choose another folder")
    check_target(run_dir, overwrite)
    members = _open_members(paths)
    scored, temperature = _score_members(members, ("validation", "test"), with_baseline=with_baseline)
    metrics: dict[str, Any] = {
        "ensemble": {
            "members": [str(path) for path in paths],
            "baseline_temperature": temperature,
            "method": "mean of class probabilities",
        },
        "members": [_member_summary(member) for member in members],
    }
    for split, predictions in scored.items():
        metrics[split] = summarize(predictions, len(members[0].label_names))
    baseline = _members_baseline(members)
    if baseline:
        metrics["baseline"] = baseline
    report, _ = per_class_report(scored["test"], members[0].label_names)
    spec = EnsembleSpec(paths, members[0].label_names, temperature)
    write_ensemble(run_dir, spec, metrics, report, overwrite=overwrite)
    logger.info("ensemble written to %s", run_dir)
    return metrics


def evaluate_ensemble(run_dir: str | os.PathLike[str], split: str = "test") -> dict[str, Any]:
    """The ensemble's scores on ``split``, in the shape of :func:`rnnkit.training.experiment.evaluate`."""
    spec = read_ensemble(run_dir)
    members = _open_members(spec.members)
    predictions, _ = _score_members(
        members,
        (split,),
        with_baseline=spec.baseline_temperature is not None,
        temperature=spec.baseline_temperature,
    )
    if split not in predictions:
        raise ConfigError(
            f"the members of {run_dir} were validated on different documents (different seeds or data "
            f"settings), so the ensemble has no {split} score; use --split test"
        )
    text, _ = per_class_report(predictions[split], spec.label_names)
    result: dict[str, Any] = {
        "split": split,
        "task": SINGLE,
        "metrics": summarize(predictions[split], len(spec.label_names)),
        "best_epoch": None,
        "report": text,
    }
    baseline = _members_baseline(members)
    if split in baseline:
        result["baseline"] = {"model": baseline["model"], **baseline[split]}
    return result


def _open_members(paths: Sequence[Path]) -> list[TrainedRun]:
    members = [open_run(path, resolve_device(RunDir(path).load_config().train.device)) for path in paths]
    for member in members:
        if member.task == MULTILABEL:
            raise ConfigError(
                f"{member.path} is a multi-label run; rnnkit ensemble averages single-label runs only for now"
            )
    for member in members[1:]:
        if member.label_names != members[0].label_names:
            raise ConfigError(
                f"{member.path} classifies into other classes than {members[0].path}; "
                "an ensemble's members must share their labels.json"
            )
    return members


def _score_members(
    members: Sequence[TrainedRun],
    splits: Sequence[str],
    *,
    with_baseline: bool = False,
    temperature: float | None = None,
) -> tuple[dict[str, Predictions], float | None]:
    """Averaged probabilities per split, for the splits whose documents all members share.

    ``with_baseline`` adds the first member's TF-IDF baseline at ``temperature``, fitted on that
    member's validation split when not given; the temperature used is returned beside the scores.
    """
    probs: dict[str, list[np.ndarray]] = {split: [] for split in splits}
    labels: dict[str, list[np.ndarray]] = {split: [] for split in splits}
    for index, member in enumerate(members):
        train_cfg = member.config.train
        baseline = _baseline(member) if with_baseline and index == 0 else None
        with configure_runtime(train_cfg):
            data = RunDir(member.path).prepare_data(member.config)
            if baseline is not None and temperature is None:
                scores = baseline.scores(data.token_ids["validation"], len(member.vocab))
                temperature = fit_temperature(scores, data.validation.labels)
                logger.info(
                    "TF-IDF baseline of %s joins the ensemble (scores x %.3g)", member.path, temperature
                )
            for split in splits:
                dataset = getattr(data, split)
                scored = predict_dataset(
                    member.model, dataset, train_cfg.eval_batch_size, member.device, train_cfg.amp
                )
                probs[split].append(scored.probs)
                labels[split].append(scored.labels)
                if baseline is not None:
                    ids = data.token_ids[split]
                    probs[split].append(baseline.probabilities(ids, len(member.vocab), temperature))
    result = {}
    for split in splits:
        first = labels[split][0]
        if not all(np.array_equal(first, other) for other in labels[split][1:]):
            if split == "test":
                raise ConfigError(
                    "the runs were tested on different documents; an ensemble's members need the same "
                    "data settings (data.dataset, data.path or data.archive, data.remove, data.test_size; "
                    "and train.seed where the test part is held out of one file)"
                )
            logger.info("no ensemble %s score: the members were validated on different documents", split)
            continue
        mean = np.mean(probs[split], axis=0)
        losses = -np.log(np.clip(mean[np.arange(len(first)), first], 1e-12, None))
        result[split] = Predictions(labels=first, probs=mean, losses=losses)
    return result, temperature


def _baseline(member: TrainedRun) -> LinearBaseline:
    file = RunDir(member.path).baseline_file
    if not file.is_file():
        raise ConfigError(
            f"{member.path} has no TF-IDF baseline to add (it was trained with train.baseline=false)"
        )
    return LinearBaseline.load(file)


def _member_summary(member: TrainedRun) -> dict[str, Any]:
    metrics = _saved_metrics(member)
    return {"run": str(member.path), "test": metrics.get("test"), "validation": metrics.get("validation")}


def _members_baseline(members: Sequence[TrainedRun]) -> dict[str, Any]:
    """The first member's TF-IDF baseline: the test documents are shared, so it scores them all."""
    for member in members:
        baseline = _saved_metrics(member).get("baseline")
        if baseline:
            return {key: baseline[key] for key in ("model", "test") if key in baseline}
    return {}


def _saved_metrics(member: TrainedRun) -> dict[str, Any]:
    file = RunDir(member.path).metrics_file
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
