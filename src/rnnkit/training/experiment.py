"""Whole runs: ``train`` (new or resumed) and ``evaluate``, from config to a complete run folder.

These are the functions behind ``rnnkit train`` and ``rnnkit evaluate``; the CLI only parses
arguments. A new run writes its setup (config, vocabulary, labels) before the first step, so a run
killed at any moment can be continued with :func:`resume`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit import __version__, distributed
from rnnkit.baseline import (
    LinearBaseline,
    baseline_monitor,
    evaluate_baseline,
    fit_baseline,
    out_of_fold_probabilities,
)
from rnnkit.config import Config
from rnnkit.data import PreparedData, prepare_data
from rnnkit.data.cache import cache_root
from rnnkit.data.pipeline import SPLITS, Documents
from rnnkit.data.tokenizers import names_a_file
from rnnkit.errors import ConfigError, DataError
from rnnkit.inference import Predictions, predict_dataset
from rnnkit.io import atomic_write_json, atomic_write_text
from rnnkit.models import build_model, check_model_name
from rnnkit.models.footprint import training_footprint
from rnnkit.runs import RunDir, open_run
from rnnkit.runs.checkpoint import Checkpoint
from rnnkit.runtime import available_memory, configure_runtime, resolve_device
from rnnkit.tasks import MULTILABEL, resolve_monitor
from rnnkit.training.adversarial import check_adversarial
from rnnkit.training.callbacks import BestCheckpoint, Callback, EarlyStopping, ProgressBar
from rnnkit.training.loggers import build_loggers
from rnnkit.training.metrics import confusion, per_class_report, summarize
from rnnkit.training.plots import plot_confusion, plot_history
from rnnkit.training.thresholds import tune_thresholds
from rnnkit.training.trainer import Trainer
from rnnkit.training.warm_start import warm_start

logger = logging.getLogger(__name__)

RESUME_OVERRIDES = (
    "train.epochs",
    "train.patience",
    "train.progress",
    "train.num_threads",
    "train.device",
    "train.loggers",
)
"""Settings that may change when a run is resumed; anything else would make it a different run."""

_NAMED_SOURCES = ("random", "train", "glove-6b-50d")


def train(
    cfg: Config,
    run_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    documents: Documents | None = None,
) -> dict[str, Any]:
    """Train a new run into ``run_dir`` and return its ``metrics.json`` content.

    ``callbacks`` run after rnnkit's own (early stopping, best checkpoint, loggers, progress bar).
    With ``overwrite`` an old run in ``run_dir`` stays intact until the new one has loaded its data
    and built its model (see :meth:`RunDir.install_setup`).
    ``documents`` are in-memory texts and labels in place of ``data.dataset`` (see
    :func:`rnnkit.data.prepare_data`); such a run cannot be resumed or evaluated from its folder.
    """
    cfg = absolute_paths(cfg)
    check_model_name(cfg.model.name)  # a typo fails before minutes of data preparation
    _, device = distributed.setup(
        cfg.train.device
    )  # under torchrun: join the group before asking who is main
    own_width = any(source in ("random", "train") for source in cfg.embeddings.sources)  # else the vectors'
    check_memory(
        cfg, device, vocab_size=cfg.data.max_vocab or 2, embedding_dim=cfg.embeddings.dim if own_width else 1
    )
    run = RunDir(distributed.broadcast_object(run_dir))  # a default name holds rank 0's clock
    if cfg.train.init_from:  # a wrong folder fails before minutes of data preparation
        RunDir(cfg.train.init_from).require()
        if Path(cfg.train.init_from).resolve() == run.path.resolve():
            raise ConfigError("train.init_from names the run folder being written; start from another run")
    with contextlib.ExitStack() as held:
        if distributed.is_main_process():
            held.enter_context(run.new_run(overwrite=overwrite))
        held.enter_context(configure_runtime(cfg.train))
        return _fit(cfg, run, resuming=False, user_callbacks=callbacks, documents=documents)


def resume(
    run_dir: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Continue an interrupted run from its newest intact checkpoint (or from the start if none)."""
    for override in overrides:
        if override.partition("=")[0].strip() not in RESUME_OVERRIDES:
            raise ConfigError(
                f"--set {override} cannot change a run being resumed; only {', '.join(RESUME_OVERRIDES)} can"
            )
    run = RunDir(run_dir)
    with contextlib.ExitStack() as held:
        if distributed.is_main_process():
            held.enter_context(run.claim_existing())
        run.verify_files()
        cfg = run.load_config(overrides)
        held.enter_context(configure_runtime(cfg.train))
        return _fit(cfg, run, resuming=True, user_callbacks=callbacks)


def evaluate(
    run_dir: str | os.PathLike[str], split: str = "test", *, quantize: bool = False
) -> dict[str, Any]:
    """Score the run's best model on ``split``; the same numbers as ``metrics.json`` for that split
    (with ``quantize``: its int8 copy on the CPU, see :mod:`rnnkit.models.quantize`).

    A run that saved a TF-IDF baseline also gets the baseline's score on the split (``baseline``).
    """
    folder = RunDir(run_dir)
    train_cfg = folder.load_config().train
    device = torch.device("cpu") if quantize else resolve_device(train_cfg.device)
    with configure_runtime(train_cfg):
        run = open_run(run_dir, device, quantize=quantize)  # before the data: a bad checkpoint fails fast
        data = folder.prepare_data(run.config)
        dataset = getattr(data, split)
        amp = train_cfg.amp and not quantize  # int8 layers take float32 inputs
        predictions = predict_dataset(run.model, dataset, train_cfg.eval_batch_size, device, amp)
    if len(dataset) == 0:
        raise DataError(f"the run's {split} split is empty (data.test_size was 0); evaluate another split")
    predictions.thresholds = run.thresholds
    text, _ = per_class_report(predictions, run.label_names)
    result = {
        "split": split,
        "task": run.task,
        "metrics": summarize(predictions, len(run.label_names)),
        "best_epoch": run.record["epoch"],
        "report": text,
    }
    if folder.baseline_file.exists():
        baseline = LinearBaseline.load(folder.baseline_file)
        scores = evaluate_baseline(
            baseline, {split: (data.token_ids[split], dataset.labels)}, len(run.vocab), len(run.label_names)
        )
        result["baseline"] = {"model": baseline.model, **scores[split]}
    return result


def as_used(cfg: Config, embedding_dim: int) -> Config:
    """``cfg`` as the run used it, for its config.yaml: the cache folder it read and wrote
    (``$RNNKIT_CACHE`` or ``data.cache_dir``, absolute) and, when only pretrained vectors set the
    embedding's width, that width as ``embeddings.dim`` instead of a setting nothing read. Compare a
    config with a run's saved one through this (with the run's ``embeddings.dim``)."""
    data = dataclasses.replace(cfg.data, cache_dir=str(cache_root(cfg.data.cache_dir).absolute()))
    embeddings = cfg.embeddings
    if not any(source in ("random", "train") for source in embeddings.sources):
        embeddings = dataclasses.replace(embeddings, dim=embedding_dim)
    return dataclasses.replace(cfg, data=data, embeddings=embeddings)


def check_memory(
    cfg: Config,
    device: torch.device,
    *,
    vocab_size: int,
    embedding_dim: int,
    length: int = 1,
    num_classes: int = 2,
) -> None:
    """Refuse, in one line, a model whose training cannot fit in the memory ``device`` has left.

    Called before anything is written: first from the config alone (parameters only), then with the
    data's real vocabulary and document lengths (parameters and activations).
    """
    footprint = training_footprint(
        cfg.model,
        vocab_size=vocab_size,
        num_classes=num_classes,
        embedding_dim=embedding_dim,
        frozen_embedding=cfg.embeddings.freeze,
        batch_size=max(cfg.train.batch_size, cfg.train.eval_batch_size // 4),  # eval keeps no gradients
        length=min(length, cfg.data.max_length),
    )
    available = available_memory(device)
    if available is not None and footprint.bytes > available:
        model = cfg.model
        raise ConfigError(
            f"training this model needs about {_gigabytes(footprint.bytes)} of memory "
            f"({footprint.parameters:,} parameters: model.hidden_size={model.hidden_size}, "
            f"model.num_layers={model.num_layers}, embedding {vocab_size} x {embedding_dim}; batches of "
            f"{cfg.train.batch_size}) but {device.type} has {_gigabytes(available)} available; make the "
            "model, the vocabulary (data.max_vocab) or train.batch_size smaller"
        )


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:,.1f} GB"


def absolute_paths(cfg: Config) -> Config:
    """Resolve relative data and vector paths against the current directory, once, at the start.

    The saved config then works from any directory, which ``--resume`` and ``evaluate`` rely on.
    """

    def absolute(value: str | None) -> str | None:
        return None if value is None else os.path.abspath(os.path.expanduser(value))

    tokenizer = cfg.data.tokenizer
    if names_a_file(tokenizer):
        tokenizer = absolute(tokenizer) or tokenizer
    data = dataclasses.replace(
        cfg.data,
        tokenizer=tokenizer,
        archive=absolute(cfg.data.archive),
        path=absolute(cfg.data.path),
        data_home=absolute(cfg.data.data_home),
    )
    sources = [
        source if source in _NAMED_SOURCES or source.startswith("gensim:") else absolute(source) or source
        for source in cfg.embeddings.sources
    ]
    source = sources[0] if isinstance(cfg.embeddings.source, str) else sources
    embeddings = dataclasses.replace(cfg.embeddings, source=source)
    train = dataclasses.replace(cfg.train, init_from=absolute(cfg.train.init_from))
    return dataclasses.replace(cfg, data=data, embeddings=embeddings, train=train)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fit(
    cfg: Config,
    run: RunDir,
    *,
    resuming: bool,
    user_callbacks: Sequence[Callback],
    documents: Documents | None = None,
) -> dict[str, Any]:
    _, device = distributed.setup(cfg.train.device)  # under torchrun each rank has its own GPU
    checkpoint = None
    if resuming:
        with distributed.main_process_first():  # rank 0 sets a damaged checkpoint aside, then all load
            checkpoint = run.checkpoints.load_latest()
        finished = _finished_metrics(run, checkpoint, cfg)
        if finished is not None:
            return finished
        data = run.prepare_data(cfg)
    else:
        with distributed.main_process_first():  # rank 0 fills the cache, the others read it
            data = prepare_data(cfg, documents)
    if len(data.validation) == 0:
        raise DataError(
            "the validation split is empty; set data.val_size > 0 "
            "(it drives early stopping and the best checkpoint)"
        )
    num_classes = len(data.label_names)
    task = data.task
    # Written out resolved, so config.yaml says what early stopping and the best checkpoint followed.
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, monitor=resolve_monitor(cfg.train.monitor, task))
    )
    teacher, distilled = _teacher(cfg, data)  # before the run takes its place: it may refuse the data
    seed_everything(cfg.train.seed)
    embedding_dim = cfg.embeddings.dim if data.embeddings is None else int(data.embeddings.shape[1])
    longest = int(max(data.train.lengths.max(initial=1), data.validation.lengths.max(initial=1)))
    check_memory(
        cfg,
        device,
        vocab_size=len(data.vocab),
        embedding_dim=embedding_dim,
        length=longest,
        num_classes=num_classes,
    )
    model = build_model(
        cfg.model,
        vocab_size=len(data.vocab),
        num_classes=num_classes,
        embeddings=data.embeddings,
        freeze_embeddings=cfg.embeddings.freeze,
        embedding_dim=embedding_dim,
    )
    check_adversarial(cfg.train, model)  # before the run takes its place
    if cfg.train.init_from and not resuming:
        warm_start(model, cfg.train.init_from, data.vocab, data.label_names)
    baseline = None
    if distributed.is_main_process() and resuming:
        baseline = _baseline(cfg, run, data)
    elif distributed.is_main_process():  # config, data and model are ready: the run takes its place
        used = as_used(cfg, embedding_dim)
        baseline = run.install_setup(
            used, data.vocab, data.label_names, lambda staged: _baseline(cfg, staged, data)
        )
    if distributed.get_world_size() > 1:  # own dropout masks per rank; DDP gives all rank 0's weights
        torch.manual_seed(cfg.train.seed + distributed.get_rank())
    monitor = cfg.train.monitor  # resolved above
    callbacks = [
        EarlyStopping(monitor, cfg.train.patience),
        BestCheckpoint(monitor),
        *build_loggers(cfg, run.history_file, run.tensorboard_dir, data.label_names),
        *([ProgressBar()] if cfg.train.progress else []),
        *user_callbacks,
    ]
    info = {
        "vocab_size": len(data.vocab),
        "num_classes": num_classes,
        "embedding_dim": embedding_dim,
        "task": task,
    }
    trainer = Trainer(
        cfg.train,
        model,
        data.train,
        data.validation,
        num_classes,
        device,
        run.checkpoints,
        callbacks,
        info,
        teacher=teacher,
    )
    num_parameters = sum(p.numel() for p in model.parameters())
    if checkpoint is not None:
        trainer.load_state(checkpoint)
        logger.info("resuming %s at epoch %d, batch %d", run.path, trainer.epoch + 1, trainer.batch_in_epoch)
    elif resuming:
        logger.info("no checkpoint in %s yet: starting its training from the beginning", run.path)
    logger.info("training %s (%d parameters) on %s into %s", cfg.model.name, num_parameters, device, run.path)
    trainer.fit()

    best = trainer.load_best()
    test, validation = trainer.predict(data.test), trainer.predict(data.validation)
    if task == MULTILABEL:
        thresholds = tune_thresholds(validation.probs, validation.labels)
        test.thresholds = validation.thresholds = thresholds
        if distributed.is_main_process():
            run.write_thresholds(data.label_names, thresholds)
    metrics = {
        "task": task,
        "test": summarize(test, num_classes) if len(test.labels) else None,
        "validation": summarize(validation, num_classes),
        "best_epoch": best["epoch"],
        **({"averaged_epochs": best["averaged_epochs"]} if "averaged_epochs" in best else {}),
        "epochs_trained": len(trainer.history),
        "stopped_early": trainer.should_stop,
        "monitor": monitor,
        "steps": trainer.global_step,
        "train_time_s": round(sum(row["epoch_time_s"] for row in trainer.history), 3),
        "num_parameters": num_parameters,
        "device": str(device),
        "rnnkit_version": __version__,
        "data": data.stats,
    }
    if baseline is not None:
        metrics["baseline"] = baseline
    if distilled is not None:
        metrics["distill"] = distilled
    for callback in callbacks:
        callback.on_test_end(trainer, metrics, test)
    if distributed.is_main_process():
        _write_reports(run, test, data.label_names, trainer.history, metrics)
    # Every rank returns once the run folder is complete. Waiting also lets Gloo's worker threads
    # drop the last gather's tensors while Python can still release them: a rank that exits right
    # after that gather can abort during interpreter shutdown (seen in 5 of 160 two-rank runs).
    distributed.barrier()
    chosen = (
        f"weights averaged over the last {metrics['averaged_epochs']} epochs"
        if "averaged_epochs" in metrics
        else f"best epoch {metrics['best_epoch']}"
    )
    logger.info("%s (%s); results in %s", headline(metrics), chosen, run.path)
    if baseline is not None and metrics["test"] is not None and "test" in baseline:
        logger.info("%s", versus_baseline(metrics, cfg.model.name))
    return metrics


def headline(metrics: dict[str, Any], split: str = "test") -> str:
    """The scores a person reads first: accuracy and macro-F1, or for multi-label runs micro-,
    macro-F1 and subset accuracy."""
    scores = metrics[split]
    if scores is None:
        return f"no {split} split (data.test_size is 0)"
    return f"{split} {scores_text(scores, metrics.get('task'))}"


def scores_text(scores: dict[str, float], task: str | None) -> str:
    """``accuracy A  macro-F1 F``, or ``micro-F1 M  macro-F1 F  subset accuracy A`` for multi-label."""
    if task == MULTILABEL:
        return (
            f"micro-F1 {scores['micro_f1']:.4f}  macro-F1 {scores['macro_f1']:.4f}  "
            f"subset accuracy {scores['accuracy']:.4f}"
        )
    return f"accuracy {scores['accuracy']:.4f}  macro-F1 {scores['macro_f1']:.4f}"


def versus_baseline(metrics: dict[str, Any], model_name: str, split: str = "test") -> str:
    """The baseline's scores on ``split`` and how far the network is above or below it, in points of
    the headline score (accuracy, or micro-F1 for multi-label runs)."""
    baseline, task = metrics["baseline"], metrics.get("task")
    key = "micro_f1" if task == MULTILABEL else "accuracy"
    gap = 100 * (metrics[split][key] - baseline[split][key])
    return (
        f"TF-IDF baseline ({baseline['model']}) on the same split: {split} "
        f"{scores_text(baseline[split], task)}; {model_name} is {abs(gap):.1f} points "
        f"{'above' if gap >= 0 else 'below'} it"
    )


def _teacher(cfg: Config, data: PreparedData) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    """The probabilities ``train.distill`` teaches (each training document's, from TF-IDF baselines
    fitted on the other folds) and their summary for ``metrics.json["distill"]``; ``(None, None)``
    when distillation is off. Every rank computes the same ones (they are deterministic)."""
    if not cfg.train.distill:
        return None, None
    if data.task == MULTILABEL:
        raise ConfigError("train.distill is for single-label data; set train.distill=0 for multi-label runs")
    started = time.perf_counter()
    labels = data.train.labels
    try:
        probabilities = out_of_fold_probabilities(
            (data.token_ids["train"], labels),
            (data.token_ids["validation"], data.validation.labels),
            len(data.vocab),
            len(data.label_names),
            monitor=baseline_monitor(cfg.train.monitor),
            seed=cfg.train.seed,
        )
    except ValueError as error:
        raise DataError(
            f"train.distill cannot fit its TF-IDF teacher: {error}; set train.distill=0"
        ) from None
    summary = {
        "weight": cfg.train.distill,
        "teacher_train_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "time_s": round(time.perf_counter() - started, 3),
    }
    logger.info(
        "distilling TF-IDF baselines fitted out of fold (%.1f s): they get %.4f of the training split "
        "right; %.2f of the loss follows their probabilities",
        summary["time_s"],
        summary["teacher_train_accuracy"],
        cfg.train.distill,
    )
    return torch.tensor(probabilities, dtype=torch.float32), summary


def _baseline(cfg: Config, run: RunDir, data: PreparedData) -> dict[str, Any] | None:
    """The TF-IDF linear reference on the run's own splits, as ``metrics.json["baseline"]``.

    Fitted before the network so its validation score is in the log from the start (the number to
    beat); a resumed run reloads the one it saved. ``None`` when ``train.baseline`` is off; a
    baseline that cannot be fitted is one log line and ``{"skipped": reason}``, never a failure.
    """
    if not cfg.train.baseline:
        return None
    started = time.perf_counter()
    vocab_size, num_classes = len(data.vocab), len(data.label_names)
    splits = {name: (data.token_ids[name], getattr(data, name).labels) for name in SPLITS}
    if run.baseline_file.exists():
        model = LinearBaseline.load(run.baseline_file)
    else:
        monitor = baseline_monitor(cfg.train.monitor, data.task)
        try:
            model = fit_baseline(
                splits["train"], splits["validation"], vocab_size, num_classes, monitor=monitor
            )
        except ValueError as error:
            logger.warning("TF-IDF baseline skipped: %s", error)
            return {"skipped": str(error)}
        if data.task == MULTILABEL:  # thresholds tuned on validation, as the network's are
            sequences, labels = splits["validation"]
            model.thresholds = tune_thresholds(model.label_probabilities(sequences, vocab_size), labels)
        model.save(run.baseline_file)
    del splits["train"]
    if len(data.test) == 0:  # data.test_size 0
        del splits["test"]
    summary = {
        "model": model.model,
        "features": len(model.features),
        **evaluate_baseline(model, splits, vocab_size, num_classes),
        "time_s": round(time.perf_counter() - started, 3),
    }
    logger.info(
        "TF-IDF baseline (%s, %.1f s): validation %s: the score to beat",
        summary["model"],
        summary["time_s"],
        scores_text(summary["validation"], data.task),
    )
    return summary


def _finished_metrics(run: RunDir, checkpoint: Checkpoint | None, cfg: Config) -> dict[str, Any] | None:
    """``metrics.json`` of a run that has nothing left to do (its epochs done, or stopped early, and
    scored), saying so; ``None`` when resuming has work to do."""
    try:
        metrics = json.loads(run.metrics_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # never scored (or unreadable): resuming writes it
        return None
    if checkpoint is None:
        return None
    epoch, epochs = checkpoint.meta["epoch"], cfg.train.epochs
    if checkpoint.meta["batch_in_epoch"] or (epoch < epochs and not checkpoint.meta["should_stop"]):
        return None
    how = (
        f"stopped early after {epoch} of {epochs} epochs" if epoch < epochs else f"{epoch} of {epochs} epochs"
    )
    logger.info(
        "%s is finished (%s); nothing to do: rnnkit evaluate --run-dir %s scores it again, and "
        "--set train.epochs=N continues a run that did not stop early",
        run.path,
        how,
        run.path,
    )
    return metrics


def _write_reports(
    run: RunDir,
    test: Predictions,
    label_names: list[str],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> None:
    if len(test.labels):  # none when data.test_size is 0
        text, table = per_class_report(test, label_names)
        baseline = metrics.get("baseline", {})
        if "test" in baseline:
            text += (
                f"\nTF-IDF baseline on the same split ({baseline['model']}): "
                f"{scores_text(baseline['test'], metrics.get('task'))}\n"
            )
        atomic_write_text(run.report_text_file, text)
        atomic_write_json(run.report_json_file, table)
    atomic_write_json(run.metrics_file, metrics)  # its presence means the run is complete
    # The figures come last and may fail (a huge label set, a broken font cache...) without losing
    # the trained model or its scores; the run says so and stays complete.
    figures = {run.curves_file: lambda: plot_history(history, run.curves_file)}
    if len(test.labels) and test.task != MULTILABEL:  # a label set has no single predicted class
        figures[run.confusion_file] = lambda: plot_confusion(
            confusion(test, len(label_names)), label_names, run.confusion_file
        )
    for path, draw in figures.items():
        try:
            draw()
        except Exception as error:  # MemoryError included: nothing of the run depends on a figure
            logger.warning(
                "could not draw %s (%s: %s); the scores are in %s",
                path.name,
                type(error).__name__,
                error,
                run.metrics_file.name,
            )


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """For messages after an interruption: the newest checkpoint file of the run, if any."""
    return RunDir(run_dir).checkpoints.latest_path()
