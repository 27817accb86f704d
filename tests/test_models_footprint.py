"""The memory estimate of a model from its config: exact parameter counts for the built-in models."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from rnnkit.config import ModelConfig
from rnnkit.models import build_model
from rnnkit.models.footprint import GATES, parameter_count, training_footprint

POOLINGS = next(f for f in dataclasses.fields(ModelConfig) if f.name == "pooling").metadata["choices"]


@pytest.mark.parametrize(
    ("name", "bidirectional", "layers", "pooling", "head_hidden"),
    list(itertools.product(sorted(GATES), [False, True], [1, 2], POOLINGS, [0, 7])),
)
def test_the_parameter_count_is_that_of_the_built_model(name, bidirectional, layers, pooling, head_hidden):
    cfg = ModelConfig(
        name=name,
        hidden_size=5,
        num_layers=layers,
        bidirectional=bidirectional,
        pooling=pooling,
        head_hidden=head_hidden,
    )
    model = build_model(cfg, vocab_size=11, num_classes=3, embedding_dim=4)
    expected = sum(p.numel() for p in model.parameters())
    assert parameter_count(cfg, vocab_size=11, num_classes=3, embedding_dim=4) == expected


def test_training_counts_gradients_and_adam_moments_but_not_for_a_frozen_embedding():
    cfg = ModelConfig(name="gru", hidden_size=8)
    sizes = {"vocab_size": 1000, "num_classes": 2, "embedding_dim": 50, "batch_size": 1, "length": 1}
    trained = training_footprint(cfg, frozen_embedding=False, **sizes)
    frozen = training_footprint(cfg, frozen_embedding=True, **sizes)
    assert trained.parameters == frozen.parameters
    assert trained.bytes - frozen.bytes == 3 * 1000 * 50 * 4  # gradient and two moments, float32


def test_longer_batches_need_more_memory():
    cfg = ModelConfig(name="lstm")
    sizes = {"vocab_size": 100, "num_classes": 2, "embedding_dim": 50, "frozen_embedding": False}
    short = training_footprint(cfg, batch_size=64, length=10, **sizes)
    long = training_footprint(cfg, batch_size=64, length=1000, **sizes)
    assert long.bytes > short.bytes
