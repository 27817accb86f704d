"""``rnnkit evaluate --data``: a trained run scored on labelled data it has never seen.

The documents are read with the run's own tokenizer and vocabulary and their labels matched to the
run's labels by name. A document whose label the run does not have cannot be scored: such
documents are counted, their labels named in one warning line, and left out of the scores.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from rnnkit.data import EncodedDataset, encode_texts, load_labelled
from rnnkit.errors import DataError
from rnnkit.inference import predict_dataset
from rnnkit.runs import RunDir, open_run
from rnnkit.runtime import configure_runtime, resolve_device
from rnnkit.training.metrics import per_class_report, summarize

logger = logging.getLogger(__name__)


def evaluate_data(
    run_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Any]:
    """Metrics and per-class report of the run's best model on ``path`` (folder, CSV or JSONL).

    CSV and JSONL columns default to the run's ``data.text_column`` and ``data.label_column``.
    """
    train_cfg = RunDir(run_dir).load_config().train
    device = resolve_device(train_cfg.device)
    with configure_runtime(train_cfg):
        run = open_run(run_dir, device)
        documents = load_labelled(
            path, text_column or run.config.data.text_column, label_column or run.config.data.label_column
        )
        names = [documents.label_names[label] for label in documents.labels]
        known = {name: index for index, name in enumerate(run.label_names)}
        scored = [i for i, name in enumerate(names) if name in known]
        unseen = Counter(name for name in names if name not in known)
        if unseen:
            logger.warning(
                "%d of %d documents have labels the model never saw and are left out of the scores: %s",
                sum(unseen.values()),
                len(names),
                ", ".join(f"{name} ({count})" for name, count in unseen.most_common()),
            )
        if not scored:
            raise DataError(
                f"no document of {path} has a label of this run ({', '.join(run.label_names)}); "
                "check --label-column or the data"
            )
        encoded = encode_texts([documents.texts[i] for i in scored], run.vocab, run.tokenizer, run.max_length)
        dataset = EncodedDataset(encoded.sequences, [known[names[i]] for i in scored], run.max_length)
        predictions = predict_dataset(run.model, dataset, train_cfg.eval_batch_size, device, train_cfg.amp)
    text, _ = per_class_report(predictions, run.label_names)
    return {
        "data": str(path),
        "documents": len(names),
        "scored": len(scored),
        "unseen_labels": dict(unseen.most_common()),
        "metrics": summarize(predictions, len(run.label_names)),
        "best_epoch": run.record["epoch"],
        "report": text,
    }
