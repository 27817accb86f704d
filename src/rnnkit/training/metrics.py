"""Classification metrics from labels and predicted probabilities, in one place.

Training, ``rnnkit evaluate`` and the tests all go through :func:`summarize`, so the numbers in
``metrics.json`` and those of a later evaluation are computed by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from rnnkit.inference import Predictions


def summarize(predictions: Predictions, num_classes: int) -> dict[str, float]:
    """Loss, accuracy and macro/weighted F1 (over all ``num_classes``, present or not)."""
    labels, predicted = predictions.labels, predictions.predicted
    if len(labels) == 0:
        return {
            "loss": float("nan"),
            "accuracy": float("nan"),
            "macro_f1": float("nan"),
            "weighted_f1": float("nan"),
        }
    classes = list(range(num_classes))
    f1 = {
        avg: f1_score(labels, predicted, labels=classes, average=avg, zero_division=0)
        for avg in ("macro", "weighted")
    }
    return {
        "loss": float(predictions.losses.mean()),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1["macro"]),
        "weighted_f1": float(f1["weighted"]),
    }


def per_class_report(predictions: Predictions, label_names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """scikit-learn's classification report as text (for people) and as a mapping (for JSON)."""
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
    """Counts: row = true class, column = predicted class."""
    return confusion_matrix(predictions.labels, predictions.predicted, labels=list(range(num_classes)))
