"""Single-label or multi-label: how a model's logits become probabilities, losses and decisions.

* ``single``: exactly one class per document. Labels are class ids ``(n,)``; softmax probabilities,
  cross-entropy, and the most probable class is the prediction.
* ``multilabel``: any set of labels per document, the empty set included. Labels are a 0/1 matrix
  ``(n, labels)``; an independent sigmoid per label, binary cross-entropy (``BCEWithLogitsLoss``,
  class weights as its ``pos_weight``), and a label is predicted when its probability reaches its
  threshold (0.5 until thresholds are tuned on the validation split, see
  :mod:`rnnkit.training.thresholds`).

The model is the same for both (one logit per class); only these rules differ, so everything that
turns logits into numbers (training, evaluation, prediction, explanation) asks this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.errors import ConfigError

SINGLE, MULTILABEL = "single", "multilabel"
TASKS = (SINGLE, MULTILABEL)
DEFAULT_THRESHOLD = 0.5


def task_of(labels: np.ndarray | Tensor) -> str:
    """The task a label array belongs to: a matrix is multi-label, a vector single-label."""
    return MULTILABEL if labels.ndim == 2 else SINGLE


def probabilities(logits: Tensor, task: str) -> Tensor:
    return logits.sigmoid() if task == MULTILABEL else logits.softmax(dim=1)


def example_losses(
    logits: Tensor,
    labels: Tensor,
    task: str,
    pos_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """One loss per document: cross-entropy, or binary cross-entropy averaged over the labels.

    ``label_smoothing`` spreads that share of each target over the classes (single-label), or pulls
    each 0/1 label target that far towards 1/2 (multi-label: ``y(1 - s) + s/2``).
    """
    if task == MULTILABEL:
        targets = labels.to(logits.dtype)
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + label_smoothing / 2
        losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
        return losses.mean(dim=1)
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)


def exact_matches(logits: Tensor, labels: Tensor, task: str) -> Tensor:
    """How many documents of the batch get exactly their labels (their class, or their label set at
    the default threshold): the running training accuracy."""
    if task == MULTILABEL:
        return ((logits > 0) == labels.bool()).all(dim=1).sum()
    return (logits.argmax(dim=1) == labels).sum()


def decide(probs: np.ndarray, task: str, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Predicted class ids ``(n,)``, or the predicted 0/1 label matrix ``(n, labels)``."""
    if task == MULTILABEL:
        cut = DEFAULT_THRESHOLD if thresholds is None else thresholds
        return (probs >= cut).astype(np.int64)
    return probs.argmax(axis=1)


def positive_weights(labels: np.ndarray, device: torch.device) -> Tensor:
    """``pos_weight`` for balanced multi-label training: negatives / positives per label (as the
    ``BCEWithLogitsLoss`` documentation suggests); a label without positives keeps weight 1."""
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def resolve_monitor(monitor: str, task: str) -> str:
    """``train.monitor`` for ``task``: ``auto`` is validation accuracy for single-label runs and
    micro-F1 for multi-label ones (subset accuracy, every label right, moves too coarsely)."""
    if monitor == "auto":
        return "val_micro_f1" if task == MULTILABEL else "val_accuracy"
    if monitor == "val_micro_f1" and task != MULTILABEL:
        raise ConfigError(
            "train.monitor val_micro_f1 is for multi-label data (single-label micro-F1 is accuracy); "
            "use val_accuracy or auto"
        )
    return monitor
