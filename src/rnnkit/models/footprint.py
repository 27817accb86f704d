"""How much memory training a model takes, from its config alone, before anything is allocated.

A typo such as ``model.hidden_size=1000000`` or ``num_layers=100000`` would otherwise end in an
allocation traceback (or swap the machine to a halt) after minutes of data preparation. The
estimate counts the parameters of the built-in recurrent classifiers exactly (other registered
models: their embedding only), their gradients and Adam's two moments, and the activations a
training batch keeps for the backward pass. It is an estimate: within a factor of about two of
what PyTorch allocates, which is all a refusal needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.config import ModelConfig

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
"""Weight blocks per recurrent cell of the built-in models."""

_FLOAT_BYTES = 4
_COPIES_PER_TRAINED_WEIGHT = 4  # the weight, its gradient, Adam's first and second moments


@dataclass(frozen=True)
class Footprint:
    parameters: int
    bytes: int


def parameter_count(model: ModelConfig, *, vocab_size: int, num_classes: int, embedding_dim: int) -> int:
    """The parameters of ``model`` (exact for ``rnn``/``lstm``/``gru``; the embedding for others)."""
    embedding = vocab_size * embedding_dim
    gates = GATES.get(model.name)
    if gates is None:
        return embedding
    directions = 2 if model.bidirectional else 1
    hidden, count, width = model.hidden_size, 0, embedding_dim
    for _ in range(model.num_layers):
        count += directions * gates * hidden * (width + hidden + 2)
        width = directions * hidden
    if model.pooling == "attention":
        count += width * width + 2 * width
    if model.head_hidden:
        count += width * model.head_hidden + model.head_hidden
        width = model.head_hidden
    return embedding + count + width * num_classes + num_classes


def training_footprint(
    model: ModelConfig,
    *,
    vocab_size: int,
    num_classes: int,
    embedding_dim: int,
    frozen_embedding: bool,
    batch_size: int,
    length: int,
) -> Footprint:
    """Parameters and bytes to train ``model`` on batches of ``batch_size`` x ``length`` tokens."""
    parameters = parameter_count(
        model, vocab_size=vocab_size, num_classes=num_classes, embedding_dim=embedding_dim
    )
    frozen = vocab_size * embedding_dim if frozen_embedding else 0
    weights = (parameters - frozen) * _COPIES_PER_TRAINED_WEIGHT + frozen
    directions = 2 if model.bidirectional else 1
    per_token = embedding_dim + model.num_layers * directions * model.hidden_size * (
        GATES.get(model.name, 1) + 2
    )
    activations = batch_size * length * per_token
    return Footprint(parameters, (weights + activations) * _FLOAT_BYTES)
