"""Per-label thresholds tuned on validation: each label's best F1, 0.5 when there is nothing to tune."""

from __future__ import annotations

import numpy as np

from rnnkit.training.thresholds import tune_thresholds


def test_a_rare_label_with_low_probabilities_gets_a_low_threshold_that_separates_it() -> None:
    probs = np.array([[0.30, 0.9], [0.28, 0.2], [0.10, 0.8], [0.05, 0.1]])
    labels = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    thresholds = tune_thresholds(probs, labels)
    assert 0.10 < thresholds[0] <= 0.28  # both positives in, both negatives out
    assert ((probs >= thresholds) == labels.astype(bool)).all()


def test_a_label_without_positive_validation_documents_keeps_one_half() -> None:
    probs = np.array([[0.9, 0.7], [0.2, 0.6]])
    labels = np.array([[1, 0], [0, 0]], dtype=np.float32)
    assert tune_thresholds(probs, labels)[1] == 0.5


def test_equally_good_thresholds_resolve_to_the_one_nearest_one_half() -> None:
    probs = np.array([[0.95], [0.02]])  # every threshold from 0.05 to 0.95 separates them
    labels = np.array([[1], [0]], dtype=np.float32)
    assert tune_thresholds(probs, labels).tolist() == [0.5]


def test_a_label_whose_best_f1_is_tiny_keeps_one_half_rather_than_letting_in_every_false_positive() -> None:
    probs = np.full((101, 1), 0.3)
    probs[0, 0] = 0.31  # its only positive sits among 100 negatives: catching it costs 100 false positives
    labels = np.zeros((101, 1), dtype=np.float32)
    labels[0, 0] = 1
    assert tune_thresholds(probs, labels).tolist() == [0.5]  # F1 2/102 < MIN_TUNED_F1
    probs[1:11, 0] = 0.9  # ten negatives above it instead: F1 2/12 is worth the cut
    probs[11:, 0] = 0.1
    assert tune_thresholds(probs, labels).tolist() == [0.3]
