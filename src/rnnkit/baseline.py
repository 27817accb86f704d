"""The honest reference: a TF-IDF linear classifier fitted on exactly the run's training split.

A recurrent model is only worth its training time if it beats what a linear model over word
counts gets in seconds. Every run fits one on the same training documents, picks its model and
regularisation on the same validation split, and reports it beside the recurrent model.

It reads the run's token ids (untruncated), so it sees the same tokens as the network and works
for any tokenizer; features are TF-IDF with sublinear term frequency over words in at least two
training documents and at most half of them (scikit-learn's ``TfidfVectorizer(sublinear_tf=True,
min_df=2, max_df=0.5)`` over the same tokens). The fitted model is a weight matrix over kept
token ids, saved as safetensors, so a run never unpickles anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import safetensors.numpy
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.naive_bayes import ComplementNB
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_bytes

logger = logging.getLogger(__name__)

MIN_DF = 2
MAX_DF = 0.5
CANDIDATES: tuple[tuple[str, float], ...] = (
    ("linear_svc", 0.1),
    ("linear_svc", 0.3),
    ("linear_svc", 1.0),
    ("complement_nb", 0.1),
    ("complement_nb", 0.3),
    ("complement_nb", 1.0),
)
"""(model, regularisation): LinearSVC's C and ComplementNB's alpha, chosen on validation."""


@dataclass
class LinearBaseline:
    """A fitted TF-IDF linear classifier over token ids: ``tfidf(x)[:, features] @ weight.T + bias``."""

    features: np.ndarray  # (F,) vocabulary ids used as features
    idf: np.ndarray  # (F,)
    weight: np.ndarray  # (C, F)
    bias: np.ndarray  # (C,)
    model: str  # e.g. "linear_svc(C=0.3)"

    def scores(self, sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
        """Decision scores ``(n, classes)``: the largest is the predicted class."""
        features = _tfidf(_counts(sequences, vocab_size)[:, self.features], self.idf)
        return np.asarray(features @ self.weight.T) + self.bias

    def predict(self, sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
        return self.scores(sequences, vocab_size).argmax(axis=1)

    def probabilities(
        self, sequences: Sequence[np.ndarray], vocab_size: int, temperature: float
    ) -> np.ndarray:
        """Class probabilities: softmax of the scores times ``temperature`` (:func:`fit_temperature`)."""
        return softmax(self.scores(sequences, vocab_size) * temperature)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Arrays as safetensors (nothing executable), the model name in its metadata."""
        tensors = {"features": self.features, "idf": self.idf, "weight": self.weight, "bias": self.bias}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata={"model": self.model}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearBaseline:
        try:
            tensors = safetensors.numpy.load_file(str(path))
            with safetensors.safe_open(str(path), "np") as handle:
                model = (handle.metadata() or {})["model"]
            return cls(tensors["features"], tensors["idf"], tensors["weight"], tensors["bias"], model)
        except Exception:  # any parse failure means the file is not a baseline we wrote
            raise CheckpointError(
                f"{path} is damaged or not an rnnkit baseline; delete it to fit it again"
            ) from None


def fit_baseline(
    train: tuple[Sequence[np.ndarray], np.ndarray],
    validation: tuple[Sequence[np.ndarray], np.ndarray],
    vocab_size: int,
    num_classes: int,
    *,
    monitor: str = "accuracy",
) -> LinearBaseline:
    """The candidate with the best validation ``monitor`` (accuracy or macro_f1), fitted on ``train``.

    Raises ``ValueError`` when nothing can be fitted (no feature survives the document-frequency
    limits, or a single class); callers report that and carry on without a baseline.
    """
    if len(np.unique(train[1])) < 2:
        raise ValueError("the training split has a single class")
    counts = _counts(train[0], vocab_size)
    features = _kept_features(counts)
    if len(features) == 0:
        raise ValueError("no token occurs in at least two and at most half of the training documents")
    idf = TfidfTransformer(sublinear_tf=True).fit(counts[:, features]).idf_
    x_train = _tfidf(counts[:, features], idf)
    x_val = _tfidf(_counts(validation[0], vocab_size)[:, features], idf)
    best: tuple[float, LinearBaseline] | None = None
    for name, strength in CANDIDATES:
        weight, bias = _fit_linear(name, strength, x_train, train[1], num_classes)
        predicted = (np.asarray(x_val @ weight.T) + bias).argmax(axis=1)
        score = _score(monitor, validation[1], predicted, num_classes)
        label = f"{name}({'C' if name == 'linear_svc' else 'alpha'}={strength:g})"
        if best is None or score > best[0]:
            best = (score, LinearBaseline(features, idf, weight, bias, label))
    assert best is not None
    return best[1]


def evaluate_baseline(
    baseline: LinearBaseline,
    splits: dict[str, tuple[Sequence[np.ndarray], np.ndarray]],
    vocab_size: int,
    num_classes: int,
) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of ``baseline`` on each named split."""
    results = {}
    for name, (sequences, labels) in splits.items():
        predicted = baseline.predict(sequences, vocab_size)
        results[name] = {
            "accuracy": _score("accuracy", labels, predicted, num_classes),
            "macro_f1": _score("macro_f1", labels, predicted, num_classes),
        }
    return results


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The factor on the decision scores whose softmax has the lowest log-loss on ``labels``.

    SVM margins and naive Bayes log-probabilities are not probabilities; averaged with a network's
    they need a scale, chosen on the validation split (a grid from 0.01 to 1,000).
    """
    grid = np.logspace(-2, 3, 101)
    rows = np.arange(len(labels))
    losses = [-np.log(np.clip(softmax(scores * t)[rows, labels], 1e-12, None)).mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax; a score of -inf (a class the baseline never saw) gets probability 0."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def baseline_monitor(monitor: str) -> str:
    """The baseline's selection metric for the run's ``train.monitor`` (a loss maps to accuracy)."""
    return "macro_f1" if monitor.endswith("macro_f1") else "accuracy"


def _counts(sequences: Sequence[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    """Document-term counts ``(n, vocab_size)``; padding and ``<unk>`` (ids 0, 1) never count."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else []
    rows = np.repeat(np.arange(len(sequences)), lengths)
    ids = np.asarray(ids, dtype=np.int64)
    real = ids > 1
    matrix = sp.csr_matrix(
        (np.ones(int(real.sum()), dtype=np.float64), (rows[real], ids[real])),
        shape=(len(sequences), vocab_size),
    )
    matrix.sum_duplicates()
    return matrix


def _kept_features(counts: sp.csr_matrix) -> np.ndarray:
    document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    return np.flatnonzero((document_frequency >= MIN_DF) & (document_frequency <= MAX_DF * counts.shape[0]))


def _tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear tf (1 + log count) times idf, rows scaled to unit length, as TfidfVectorizer does."""
    weighted = counts.astype(np.float64, copy=True)
    weighted.data = (1.0 + np.log(weighted.data)) * idf[weighted.indices]
    return normalize(weighted)


def _fit_linear(
    name: str, strength: float, x: sp.csr_matrix, y: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (C, F), bias (C,))`` over all ``num_classes``; a class absent from ``y`` never wins."""
    if name == "linear_svc":
        model = LinearSVC(C=strength)
        model.fit(x, y)
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one score for classes_[1]; make it symmetric
            coef, intercept = np.vstack([-coef, coef]), np.array([-intercept[0], intercept[0]])
    else:
        model = ComplementNB(alpha=strength)
        model.fit(x, y)
        coef, intercept = model.feature_log_prob_, np.zeros(len(model.classes_))
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -np.inf)
    weight[model.classes_] = coef
    bias[model.classes_] = intercept
    return weight, bias


def _score(metric: str, labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    if len(labels) == 0:
        return float("nan")
    if metric == "macro_f1":
        return float(
            f1_score(labels, predicted, labels=list(range(num_classes)), average="macro", zero_division=0)
        )
    return float(accuracy_score(labels, predicted))
