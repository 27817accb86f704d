"""Text classifiers: token embedder -> recurrent encoder -> pooling -> head, and a registry by name.

Use a class directly (``LSTMClassifier(vocab_size, num_classes, ...)``) in your own training loop,
or build one from a config's ``model:`` section with :func:`build_model`.
"""

from rnnkit.models.classifier import (
    GRUClassifier,
    LSTMClassifier,
    RecurrentClassifier,
    RNNClassifier,
    module_path,
)
from rnnkit.models.registry import available, build_model, check_model_name, register_model

__all__ = [
    "GRUClassifier",
    "LSTMClassifier",
    "RNNClassifier",
    "RecurrentClassifier",
    "available",
    "build_model",
    "check_model_name",
    "module_path",
    "register_model",
]
