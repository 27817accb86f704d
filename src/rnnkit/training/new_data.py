"""``rnnkit evaluate --data``: a trained run scored on labelled data it has never seen.

The documents are read with the run's own tokenizer, vocabulary and label reading (its
``data.task`` and ``data.label_separator``) and their labels matched to the run's labels by name.
A label the run does not have cannot be scored. In a single-label run a document with such a label
is counted, its label named in one warning line, and left out of the scores. In a multi-label run
the unknown labels are taken out of each document's label set (named and counted the same way) and
every document is scored on the run's labels.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import numpy as np
import torch

from rnnkit.data import EncodedDataset, encode_texts, load_labelled
from rnnkit.data.corpus import Columns, TextDataset
from rnnkit.errors import DataError
from rnnkit.inference import predict_dataset
from rnnkit.runs import RunDir, open_run
from rnnkit.runtime import configure_runtime, resolve_device
from rnnkit.tasks import MULTILABEL
from rnnkit.training.metrics import per_class_report, summarize

logger = logging.getLogger(__name__)


def evaluate_data(
    run_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    text_column: str | None = None,
    label_column: str | None = None,
    *,
    quantize: bool = False,
) -> dict[str, Any]:
    """Metrics and per-class report of the run's best model on ``path`` (folder, CSV or JSONL);
    with ``quantize`` its int8 copy on the CPU.

    CSV and JSONL columns default to the run's ``data.text_column`` and ``data.label_column``.
    """
    train_cfg = RunDir(run_dir).load_config().train
    device = torch.device("cpu") if quantize else resolve_device(train_cfg.device)
    with configure_runtime(train_cfg):
        run = open_run(run_dir, device, quantize=quantize)
        data_cfg = run.config.data
        columns = Columns(
            text_column or data_cfg.text_column,
            label_column or data_cfg.label_column,
            data_cfg.label_separator,
        )
        documents = load_labelled(path, columns, run.task)
        if run.task == MULTILABEL:
            kept, labels, unseen = _known_label_sets(documents, run.label_names)
        else:
            kept, labels, unseen = _known_classes(documents, run.label_names)
        if unseen:
            logger.warning(
                "%s: %s",
                _unseen_what(run.task, sum(unseen.values()), len(documents)),
                ", ".join(f"{name} ({count})" for name, count in unseen.most_common()),
            )
        if not kept:
            raise DataError(
                f"no document of {path} has a label of this run ({', '.join(run.label_names)}); "
                "check --label-column or the data"
            )
        encoded = encode_texts([documents.texts[i] for i in kept], run.vocab, run.tokenizer, run.max_length)
        dataset = EncodedDataset(encoded.sequences, labels, run.max_length)
        amp = train_cfg.amp and not quantize  # int8 layers take float32 inputs
        predictions = predict_dataset(run.model, dataset, train_cfg.eval_batch_size, device, amp)
    predictions.thresholds = run.thresholds
    text, _ = per_class_report(predictions, run.label_names)
    return {
        "data": str(path),
        "task": run.task,
        "documents": len(documents),
        "scored": len(kept),
        "unseen_labels": dict(unseen.most_common()),
        "metrics": summarize(predictions, len(run.label_names)),
        "best_epoch": run.record["epoch"],
        "report": text,
    }


def unseen_summary(result: dict[str, Any]) -> str:
    """One line for the terminal: what labels the run never saw did to the scores."""
    if result["task"] == MULTILABEL:
        return (
            f"all {result['documents']} documents scored; {sum(result['unseen_labels'].values())} labels "
            "the model never saw were taken out of their label sets"
        )
    left_out = result["documents"] - result["scored"]
    return (
        f"{result['scored']} of {result['documents']} documents scored; "
        f"{left_out} with labels the model never saw"
    )


def _unseen_what(task: str, count: int, documents: int) -> str:
    if task == MULTILABEL:
        return (
            f"{count} labels of the {documents} documents are labels the model never saw and are taken "
            "out of the label sets"
        )
    return f"{count} of {documents} documents have labels the model never saw and are left out of the scores"


def _known_classes(documents: TextDataset, names: list[str]) -> tuple[list[int], np.ndarray, Counter[str]]:
    """The documents whose class the run has, their class ids in the run, the other classes counted."""
    given = [documents.label_names[label] for label in documents.labels]
    known = {name: index for index, name in enumerate(names)}
    kept = [i for i, name in enumerate(given) if name in known]
    labels = np.array([known[given[i]] for i in kept], dtype=np.int64)
    return kept, labels, Counter(name for name in given if name not in known)


def _known_label_sets(documents: TextDataset, names: list[str]) -> tuple[list[int], np.ndarray, Counter[str]]:
    """Every document, its label set over the run's labels, the labels the run lacks counted."""
    known = {name: index for index, name in enumerate(names)}
    matrix = np.zeros((len(documents), len(names)), dtype=np.float32)
    unseen: Counter[str] = Counter()
    for column, name in enumerate(documents.label_names):
        rows = np.flatnonzero(documents.labels[:, column])
        if name in known:
            matrix[rows, known[name]] = 1.0
        elif len(rows):
            unseen[name] = len(rows)
    return list(range(len(documents))), matrix, unseen
