"""rnnkit as a scikit-learn estimator: ``RNNTextClassifier`` in pipelines, cross-validation and grid search.

    from sklearn.model_selection import GridSearchCV, cross_val_score
    from rnnkit.sklearn import RNNTextClassifier

    cross_val_score(RNNTextClassifier(epochs=3), texts, labels, cv=3)
    GridSearchCV(RNNTextClassifier(), {"hidden_size": [32, 64]}, cv=3).fit(texts, labels)

``X`` is a sequence of texts (strings), ``y`` one label per text, or a 0/1 label indicator matrix
for multi-label data (then ``predict`` returns one too, as scikit-learn's multi-label classifiers
do). Every fit trains an rnnkit run through :func:`rnnkit.fitting.fit` on all of ``X`` except the
``val_size`` part that early stopping and the best checkpoint watch (and multi-label thresholds are
tuned on); no test part is held out, since scikit-learn does that itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from rnnkit.config import Config
from rnnkit.errors import DataError, DataTypeError
from rnnkit.tasks import MULTILABEL, SINGLE, decide


class RNNTextClassifier(ClassifierMixin, BaseEstimator):
    """A recurrent text classifier (GRU by default) with scikit-learn's estimator interface.

    The parameters are the config keys people tune most; ``settings`` sets any other one by its
    name (``{"dropout": 0.2, "train__scheduler": "cosine"}``), and ``config`` starts from a YAML file
    or :class:`~rnnkit.config.Config` instead of the defaults. ``random_state`` is ``train.seed``.
    """

    def __init__(
        self,
        model: str = "gru",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "max",
        embeddings: str = "random",
        embedding_dim: int = 100,
        tokenizer: str = "regex",
        max_length: int = 200,
        min_freq: int = 1,
        epochs: int = 5,
        batch_size: int = 32,
        lr: float = 0.003,
        val_size: float = 0.1,
        patience: int = 2,
        random_state: int = 42,
        device: str = "cpu",
        config: str | os.PathLike[str] | Config | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.embeddings = embeddings
        self.embedding_dim = embedding_dim
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_freq = min_freq
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_size = val_size
        self.patience = patience
        self.random_state = random_state
        self.device = device
        self.config = config
        self.settings = settings

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True  # X is raw text, one string per sample
        tags.classifier_tags.multi_label = True
        tags.non_deterministic = self.device != "cpu"  # CUDA kernels are not bit-reproducible
        return tags

    def fit(self, X: Sequence[str], y: Any) -> RNNTextClassifier:
        """Train a run on ``X`` and ``y`` (labels or a label indicator matrix)."""
        from rnnkit.fitting import fit

        texts = _texts(X)
        labels, self.classes_, task = _encode_targets(y, len(texts))
        overrides = {
            "model__name": self.model,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "pooling": self.pooling,
            "source": self.embeddings,
            "embeddings__dim": self.embedding_dim,
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
            "min_freq": self.min_freq,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "val_size": self.val_size,
            "patience": self.patience,
            "seed": self.random_state,
            "train__device": self.device,
            "progress": False,
            "test_size": 0.0,
            "task": task,
            **(self.settings or {}),
        }
        self.predictor_ = fit(texts, labels, self.config, **overrides)
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """``(n, classes)``: softmax probabilities, or per-label probabilities (multi-label)."""
        check_is_fitted(self, "predictor_")
        return self.predictor_.predict_proba(_texts(X))

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """Labels as given to :meth:`fit` (the classes), or a 0/1 indicator matrix (multi-label)."""
        probs = self.predict_proba(X)
        if self.predictor_.multilabel:
            return decide(probs, MULTILABEL, self.predictor_.thresholds)
        return self.classes_[probs.argmax(axis=1)]


def _texts(X: Any) -> list[str]:
    if isinstance(X, (str, bytes)):
        raise DataTypeError("X must be a list of texts, not a single string; wrap it: [text]")
    if np.ndim(X) > 1:
        raise DataTypeError(f"X must be a list of texts (one string per sample), got a {np.ndim(X)}-D array")
    texts = list(X)
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataTypeError(
                f"texts must be strings; X[{position}] is {type(text).__name__} {text!r:.40}: "
                "convert it with str() or drop it"
            )
    return texts


def _encode_targets(y: Any, samples: int) -> tuple[list[Any], np.ndarray, str]:
    """``(rnnkit labels, classes_, task)``: class positions as names ("0", "1", ...) so that rnnkit's
    numeric label order is the order of ``classes_``; an indicator matrix becomes label lists."""
    y = np.asarray(y)
    if len(y) != samples:
        raise DataError(f"X has {samples} texts but y has {len(y)} labels; give one label per text")
    if samples < 2:
        raise DataError(f"got {samples} sample(s); training needs at least 2 texts")
    if y.dtype.kind == "f":
        assert_all_finite(y, input_name="y")  # scikit-learn's own ValueError and words
    if type_of_target(y) == "multilabel-indicator":
        rows = [[str(j) for j in np.flatnonzero(row)] for row in y]
        return rows, np.arange(y.shape[1]), MULTILABEL
    y = column_or_1d(y, warn=True)  # a (n, 1) column: warned about and flattened, as in scikit-learn
    check_classification_targets(y)  # continuous targets are a regression problem
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"y has one class ({classes[0]!r}); a classifier needs at least two")
    return [str(code) for code in codes.reshape(-1)], classes, SINGLE
