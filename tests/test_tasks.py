"""Single- and multi-label rules: probabilities, losses, decisions, class weights, the monitor default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.tasks import (
    MULTILABEL,
    SINGLE,
    decide,
    exact_matches,
    example_losses,
    positive_weights,
    probabilities,
    resolve_monitor,
    task_of,
)

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])


def test_the_task_follows_the_shape_of_the_labels() -> None:
    assert task_of(np.array([0, 2])) == SINGLE
    assert task_of(np.array([[1.0, 0.0, 1.0]])) == MULTILABEL


def test_single_label_probabilities_sum_to_one_and_multilabel_ones_are_independent() -> None:
    torch.testing.assert_close(probabilities(LOGITS, SINGLE).sum(dim=1), torch.ones(2))
    torch.testing.assert_close(probabilities(LOGITS, MULTILABEL), torch.sigmoid(LOGITS))


def test_multilabel_loss_is_binary_cross_entropy_averaged_per_document_with_pos_weight() -> None:
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    weight = torch.tensor([2.0, 1.0, 3.0])
    expected = nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none")(LOGITS, labels).mean(dim=1)
    torch.testing.assert_close(example_losses(LOGITS, labels, MULTILABEL, weight), expected)
    single = example_losses(LOGITS, torch.tensor([0, 2]), SINGLE)
    torch.testing.assert_close(single, nn.CrossEntropyLoss(reduction="none")(LOGITS, torch.tensor([0, 2])))


def test_an_exact_match_is_the_right_class_or_the_whole_right_label_set() -> None:
    assert exact_matches(LOGITS, torch.tensor([0, 1]), SINGLE) == 1
    sets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # document 2 predicts label 3 wrongly
    assert exact_matches(LOGITS, sets, MULTILABEL) == 1


def test_decisions_are_the_argmax_or_every_label_at_its_threshold() -> None:
    probs = np.array([[0.6, 0.3, 0.45], [0.1, 0.2, 0.7]])
    assert decide(probs, SINGLE).tolist() == [0, 2]
    assert decide(probs, MULTILABEL).tolist() == [[1, 0, 0], [0, 0, 1]]
    assert decide(probs, MULTILABEL, np.array([0.7, 0.2, 0.4])).tolist() == [[0, 1, 1], [0, 1, 1]]


def test_balanced_positive_weights_are_negatives_over_positives() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    assert positive_weights(labels, torch.device("cpu")).tolist() == [1.0, 3.0, 1.0]


def test_the_monitor_defaults_to_accuracy_or_micro_f1_by_task() -> None:
    assert resolve_monitor("auto", SINGLE) == "val_accuracy"
    assert resolve_monitor("auto", MULTILABEL) == "val_micro_f1"
    assert resolve_monitor("val_loss", MULTILABEL) == "val_loss"
    with pytest.raises(ConfigError, match="val_micro_f1 is for multi-label data"):
        resolve_monitor("val_micro_f1", SINGLE)


def test_label_smoothing_pulls_multilabel_targets_towards_one_half() -> None:
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    smoothed = example_losses(LOGITS, labels, MULTILABEL, label_smoothing=0.2)
    targets = labels * 0.8 + 0.1
    expected = nn.functional.binary_cross_entropy_with_logits(LOGITS, targets, reduction="none").mean(dim=1)
    assert smoothed.tolist() == pytest.approx(expected.tolist())
    assert smoothed.tolist() != pytest.approx(example_losses(LOGITS, labels, MULTILABEL).tolist())
