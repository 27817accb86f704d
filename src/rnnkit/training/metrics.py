"""Classification metrics from labels and predicted probabilities, in one place.

Training, ``rnnkit evaluate`` and the tests all go through :func:`summarize`, so the numbers in
``metrics.json`` and those of a later evaluation are computed by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, hamming_loss

from rnnkit.inference import Predictions
from rnnkit.tasks import MULTILABEL

SINGLE_LABEL_METRICS = ("loss", "accuracy", "macro_f1", "weighted_f1")
MULTILABEL_METRICS = (*SINGLE_LABEL_METRICS, "micro_f1", "samples_f1", "hamming_loss")
"""Multi-label ``accuracy`` is subset accuracy: the document's whole label set predicted exactly."""


def summarize(predictions: Predictions, num_classes: int) -> dict[str, float]:
    """Loss, accuracy and macro/weighted F1 (over all ``num_classes``, present or not); for
    multi-label predictions also micro- and samples-F1 and the Hamming loss."""
    labels, predicted = predictions.labels, predictions.predicted
    multilabel = predictions.task == MULTILABEL
    names = MULTILABEL_METRICS if multilabel else SINGLE_LABEL_METRICS
    if len(labels) == 0:
        return dict.fromkeys(names, float("nan"))
    classes = list(range(num_classes))
    averages = ("macro", "weighted", "micro", "samples") if multilabel else ("macro", "weighted")
    f1 = {
        avg: float(f1_score(labels, predicted, labels=classes, average=avg, zero_division=0))
        for avg in averages
    }
    summary = {
        "loss": float(predictions.losses.mean()),
        "accuracy": float(accuracy_score(labels, predicted)),
        **{f"{avg}_f1": value for avg, value in f1.items()},
    }
    if multilabel:
        summary["hamming_loss"] = float(hamming_loss(labels, predicted))
    return summary


def per_class_report(predictions: Predictions, label_names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """scikit-learn's classification report as text (for people) and as a mapping (for JSON);
    per label, with micro/macro/weighted/samples averages, for multi-label predictions."""
    args = {
        "y_true": predictions.labels,
        "y_pred": predictions.predicted,
        "labels": list(range(len(label_names))),
        "target_names": list(label_names),
        "digits": 4,
        "zero_division": 0,
    }
    return classification_report(**args), classification_report(**args, output_dict=True)


def confusion(predictions: Predictions, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class (single-label predictions only)."""
    return confusion_matrix(predictions.labels, predictions.predicted, labels=list(range(num_classes)))
